"""Tests for load_deepmri_npz: the published D5-C5 network against an independent NumPy/SciPy forward pass.

The reference below is written from the original's description (Schlemper et al.'s
Deep-MRI-Reconstruction): the *uncentred* orthonormal FFT with an *uncentred* mask, the
image as (real, imag) channels, ``scipy.signal`` correlation per channel pair, ReLU, residual on
the block input, exact DC with the measured k-space.  It shares no code with mrijax.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.signal import convolve2d, correlate2d

from mrijax import dc, fourier
from mrijax.models import Cascade, load_deepmri_npz, reconstruction_map


# ----------------------------------------------------------------------------- the reference

def reference_forward(layers, n_convs, x_true, mask_uncentred, flip_filters):
    """Slow float64 forward pass of a Deep-MRI-Reconstruction cascade, in the original's layout.

    Args:
      layers: list of (W (out, in, k, k), b (out,)) NumPy arrays, cascade after cascade.
      n_convs: convolutions per cascade.
      x_true: complex (H, W) ground truth; k-space is simulated from it.
      mask_uncentred: boolean (H, W), DC at [0, 0].
      flip_filters: True for true convolution (Lasagne CPU), False for cross-correlation (cuDNN).
    """
    op = convolve2d if flip_filters else correlate2d
    k0 = np.where(mask_uncentred, np.fft.fft2(x_true, norm="ortho"), 0)
    x = np.fft.ifft2(k0, norm="ortho")
    for c in range(len(layers) // n_convs):
        block_input = [x.real, x.imag]
        h = block_input
        for l in range(n_convs):
            w, b = (np.asarray(a, np.float64) for a in layers[c * n_convs + l])
            out = []
            for o in range(w.shape[0]):
                acc = np.full(x.shape, b[o])
                for i in range(w.shape[1]):
                    acc += op(h[i], w[o, i], mode="same", boundary="fill", fillvalue=0)
                out.append(np.maximum(acc, 0) if l < n_convs - 1 else acc)
            h = out
        x = (h[0] + block_input[0]) + 1j * (h[1] + block_input[1])
        k = np.fft.fft2(x, norm="ortho")
        x = np.fft.ifft2(np.where(mask_uncentred, k0, k), norm="ortho")
    return x


def _published_layers(path):
    data = np.load(path, allow_pickle=False)
    return [(data[f"arr_{2 * i}"], data[f"arr_{2 * i + 1}"]) for i in range(len(data.files) // 2)]


def _synthetic_layers(rng, n_cascades=2, n_convs=3, features=4, ksize=3):
    """A small random network in the file's (out, in, k, k) layout."""
    layers = []
    for _ in range(n_cascades):
        for l in range(n_convs):
            c_in = 2 if l == 0 else features
            c_out = 2 if l == n_convs - 1 else features
            w = rng.standard_normal((c_out, c_in, ksize, ksize)) / np.sqrt(c_in * ksize * ksize)
            layers.append((w.astype(np.float32), (0.1 * rng.standard_normal(c_out)).astype(np.float32)))
    return layers


def _save_npz(path, layers):
    arrays = {}
    for i, (w, b) in enumerate(layers):
        arrays[f"arr_{2 * i}"], arrays[f"arr_{2 * i + 1}"] = w, b
    np.savez(path, **arrays)
    return path


def _test_image(rng, n):
    """A smooth-ish complex test image with magnitude in [0, 1] (the network's input range)."""
    yy, xx = np.mgrid[:n, :n] / n
    magnitude = 0.2 + 0.6 * ((xx - 0.45) ** 2 + (yy - 0.55) ** 2 < 0.09) + 0.2 * rng.random((n, n))
    phase = np.exp(1j * 0.5 * np.sin(2 * np.pi * (xx + 0.5 * yy)))
    return magnitude / magnitude.max() * phase


def _uncentred_line_mask(rng, n, acceleration=3):
    mask_c = np.zeros((n, n), bool)
    mask_c[:, rng.random(n) < 1.0 / acceleration] = True
    mask_c[:, n // 2 - 2:n // 2 + 2] = True
    return np.fft.ifftshift(mask_c)


def _to_f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _run_ours(model, params, x_true, mask_uncentred):
    mask_c = np.asarray(fourier.from_uncentred_mask(mask_uncentred))
    f = reconstruction_map(model, _to_f64(params), mask_c)
    return np.asarray(f(fourier.fft2c(jnp.asarray(x_true))))


# ----------------------------------------------------------------------------- the published weights

def test_published_file_layout(d5c5_path):
    model, params = load_deepmri_npz(d5c5_path)
    assert isinstance(model, Cascade)
    assert (model.n_cascades, model.n_convs, model.features, model.kernel_size) == (5, 5, 64, 3)
    assert model.noise_level is None
    data = np.load(d5c5_path, allow_pickle=False)
    p = params["params"]
    for c in range(5):
        for l in range(5):
            w, b = data[f"arr_{10 * c + 2 * l}"], data[f"arr_{10 * c + 2 * l + 1}"]
            np.testing.assert_array_equal(p[f"block_{c}"][f"conv_{l}"]["kernel"], w.transpose(2, 3, 1, 0))
            np.testing.assert_array_equal(p[f"block_{c}"][f"conv_{l}"]["bias"], b)
    _, flipped = load_deepmri_npz(d5c5_path, flip_filters=True)
    np.testing.assert_array_equal(flipped["params"]["block_2"]["conv_3"]["kernel"],
                                  p["block_2"]["conv_3"]["kernel"][::-1, ::-1])
    # The loaded params have exactly the structure the model initialises.
    x = jnp.zeros((8, 8), jnp.complex64)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, x, np.ones((8, 8), bool))
    assert (jax.tree_util.tree_map(lambda a: a.shape, shapes)
            == jax.tree_util.tree_map(lambda a: a.shape, params))


@pytest.mark.parametrize("flip_filters", [False, True])
def test_published_network_matches_independent_reference(x64, d5c5_path, flip_filters):
    rng = np.random.default_rng(0)
    n = 32
    x_true = _test_image(rng, n)
    mask_u = _uncentred_line_mask(rng, n)
    model, params = load_deepmri_npz(d5c5_path, flip_filters=flip_filters)
    ours = _run_ours(model, params, x_true, mask_u)
    ref = reference_forward(_published_layers(d5c5_path), 5, x_true, mask_u, flip_filters)
    assert np.abs(ref - np.fft.ifft2(np.where(mask_u, np.fft.fft2(x_true, norm="ortho"), 0), norm="ortho")).max() > 1e-2
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_published_network_beats_zero_filled_on_shepp_logan(d5c5_path):
    n = 128
    try:
        from mrijax.data.phantoms import shepp_logan
        x_true = np.asarray(shepp_logan(n), np.float32)
    except ImportError:  # pragma: no cover - the phantom module is another engineer's
        yy, xx = (np.mgrid[:n, :n] - n / 2) / (n / 2)
        x_true = (0.2 * ((xx / 0.69) ** 2 + (yy / 0.92) ** 2 <= 1)
                  + 0.8 * ((xx / 0.2) ** 2 + ((yy + 0.2) / 0.3) ** 2 <= 1)).astype(np.float32)
    try:
        from mrijax.masks import gaussian_lines
        mask = gaussian_lines((n, n), 3, sample_n=10, seed=0)
    except ImportError:  # pragma: no cover
        mask = np.zeros((n, n), bool)
        mask[:, np.random.default_rng(0).random(n) < 0.25] = True
        mask[:, n // 2 - 5:n // 2 + 5] = True
    x_true = x_true / np.abs(x_true).max()   # magnitude in [0, 1], as the network was trained
    k = fourier.fft2c(jnp.asarray(x_true))
    zero_filled = np.asarray(fourier.adjoint(k, mask))

    def psnr(x):
        return 10 * np.log10(1.0 / np.mean((np.abs(x) - x_true) ** 2))

    for flip_filters in (False, True):
        model, params = load_deepmri_npz(d5c5_path, flip_filters=flip_filters)
        recon = np.asarray(jax.jit(reconstruction_map(model, params, mask))(k))
        gain = psnr(recon) - psnr(zero_filled)
        assert gain >= 5.0, f"flip_filters={flip_filters}: only {gain:.2f} dB over zero-filled"  # measured 5.9


# ----------------------------------------------------------------------------- synthetic files (no download)

@pytest.mark.parametrize("flip_filters", [False, True])
def test_synthetic_file_matches_reference(x64, tmp_path, flip_filters):
    rng = np.random.default_rng(1)
    layers = _synthetic_layers(rng, n_cascades=2, n_convs=3, features=4, ksize=3)
    path = _save_npz(tmp_path / "net.npz", layers)
    model, params = load_deepmri_npz(path, flip_filters=flip_filters, noise_level=None)
    assert (model.n_cascades, model.n_convs, model.features, model.kernel_size) == (2, 3, 4, 3)
    x_true = _test_image(rng, 16)
    mask_u = _uncentred_line_mask(rng, 16)
    ours = _run_ours(model, params, x_true, mask_u)
    np.testing.assert_allclose(ours, reference_forward(layers, 3, x_true, mask_u, flip_filters),
                               rtol=1e-11, atol=1e-11)
    # The other convention is a different function (so the test can tell them apart).
    other = reference_forward(layers, 3, x_true, mask_u, not flip_filters)
    assert np.abs(ours - other).max() > 1e-3


def test_flipped_filters_equal_rotated_network_with_mirrored_mask(x64, tmp_path):
    """f_flip(x; M) = R f(R x; M') with R the 180-degree rotation and M' the mirrored mask.

    This is why reconstruction quality cannot tell the two conventions apart.
    """
    rng = np.random.default_rng(2)
    path = _save_npz(tmp_path / "net.npz", _synthetic_layers(rng, n_cascades=2, n_convs=3, features=4))
    model, params = load_deepmri_npz(path)
    _, params_flip = load_deepmri_npz(path, flip_filters=True)
    params, params_flip = _to_f64(params), _to_f64(params_flip)
    n = 16
    x = _test_image(rng, n)
    mask = np.asarray(fourier.from_uncentred_mask(_uncentred_line_mask(rng, n)))
    # Rotating the image by 180 degrees reverses k-space about the DC at n//2 (index n - i mod n).
    mask_mirrored = np.roll(mask[::-1, ::-1], 1, axis=(0, 1))
    rotate = lambda a: a[..., ::-1, ::-1]
    f_flip = reconstruction_map(model, params_flip, mask)
    f_rot = reconstruction_map(model, params, mask_mirrored)
    lhs = f_flip(fourier.fft2c(jnp.asarray(x)))
    rhs = rotate(f_rot(fourier.fft2c(jnp.asarray(rotate(x)))))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-11, atol=1e-11)
    assert np.abs(np.asarray(lhs) - np.asarray(f_rot(fourier.fft2c(jnp.asarray(x))))).max() > 1e-3


@pytest.mark.parametrize("shape", [(16, 16), (15, 17)])
def test_centred_and_uncentred_dc_agree(x64, shape):
    """DC in the original's uncentred layout equals ours once mask and k-space are converted."""
    rng = np.random.default_rng(3)
    x_true = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    x_net = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    mask_u = rng.random(shape) < 0.4
    k0_u = np.where(mask_u, np.fft.fft2(x_true, norm="ortho"), 0)
    dc_uncentred = np.fft.ifft2(np.where(mask_u, k0_u, np.fft.fft2(x_net, norm="ortho")), norm="ortho")
    mask_c = fourier.from_uncentred_mask(mask_u)
    k0_c = fourier.from_uncentred_kspace(jnp.asarray(k0_u))
    np.testing.assert_allclose(k0_c, fourier.forward(jnp.asarray(x_true), mask_c), atol=1e-12)
    np.testing.assert_allclose(dc.data_consistency(jnp.asarray(x_net), k0_c, mask_c), dc_uncentred,
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- bad files

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_deepmri_npz(tmp_path / "absent.npz")


def test_missing_key_is_named(tmp_path):
    layers = _synthetic_layers(np.random.default_rng(0))
    arrays = {f"arr_{i}": a for i, a in enumerate(x for pair in layers for x in pair)}
    del arrays["arr_4"]
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(ValueError, match="missing key.*arr_4"):
        load_deepmri_npz(tmp_path / "f.npz")


def test_unexpected_key_is_named(tmp_path):
    layers = _synthetic_layers(np.random.default_rng(0))
    arrays = {f"arr_{i}": a for i, a in enumerate(x for pair in layers for x in pair)}
    arrays["weights"] = np.zeros(3)
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(ValueError, match="unexpected key 'weights'"):
        load_deepmri_npz(tmp_path / "f.npz")


def test_inconsistent_shapes_are_named(tmp_path):
    rng = np.random.default_rng(0)
    layers = _synthetic_layers(rng)
    bad_bias = list(layers)
    bad_bias[1] = (layers[1][0], np.zeros(5, np.float32))
    _save_npz(tmp_path / "bias.npz", bad_bias)
    with pytest.raises(ValueError, match="arr_3 must be the bias of arr_2"):
        load_deepmri_npz(tmp_path / "bias.npz")
    bad_chain = list(layers)
    bad_chain[1] = (np.zeros((4, 5, 3, 3), np.float32), np.zeros(4, np.float32))
    _save_npz(tmp_path / "chain.npz", bad_chain)
    with pytest.raises(ValueError, match="arr_2 has 5 input channels; expected 4"):
        load_deepmri_npz(tmp_path / "chain.npz")
    _save_npz(tmp_path / "open.npz", layers[:-1])   # the last cascade lacks its 2-output conv
    with pytest.raises(ValueError, match="does not end in a 2-output convolution"):
        load_deepmri_npz(tmp_path / "open.npz")
    np.savez(tmp_path / "odd.npz", arr_0=layers[0][0])
    with pytest.raises(ValueError, match="even number"):
        load_deepmri_npz(tmp_path / "odd.npz")
    _save_npz(tmp_path / "kernel.npz", [(np.zeros((2, 2, 2, 2), np.float32), np.zeros(2, np.float32))])
    with pytest.raises(ValueError, match="arr_0 must be a convolution weight"):
        load_deepmri_npz(tmp_path / "kernel.npz")


def test_pickled_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "p.npz", arr_0=np.array([{"a": 1}], dtype=object), arr_1=np.zeros(2))
    with pytest.raises(ValueError, match="pickle"):
        load_deepmri_npz(tmp_path / "p.npz")


def test_not_an_npz(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_deepmri_npz(tmp_path / "junk.npz")


def test_a_truncated_or_damaged_npz_is_named_as_corrupt(tmp_path):
    good = _save_npz(tmp_path / "d5_c5.npz", _synthetic_layers(np.random.default_rng(0))).read_bytes()
    assert load_deepmri_npz(tmp_path / "d5_c5.npz")[0].n_cascades == 2
    damaged = bytearray(good)
    damaged[200:260] = b"\0" * 60                                 # inside arr_0's data: a bad CRC
    for name, data in (("cut.npz", good[:len(good) // 2]), ("crc.npz", bytes(damaged)),
                       ("short.npz", good[:len(good) - 10])):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match="corrupt or truncated") as err:
            load_deepmri_npz(path)
        assert str(path) in str(err.value), name
