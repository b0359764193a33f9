"""Tests of mrijax.dc: data consistency in k-space (Schlemper et al. 2017, eq. 5/6)."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from mrijax import dc, fourier, operators


def _complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _random_mask(rng, shape, rate=0.4):
    mask = rng.random(shape) < rate
    mask[..., shape[-2] // 2, shape[-1] // 2] = True
    return mask


def _unit_maps(rng, coils, h, w):
    """Random coil maps normalised so that sum_c |S_c|^2 = 1 at every pixel."""
    maps = _complex(rng, (coils, h, w))
    return maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))


def _np_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _np_ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _problem(seed, shape=(10, 12)):
    """A network image x, measured k-space k0 = A x_true and the mask."""
    rng = np.random.default_rng(seed)
    x_true, x = _complex(rng, shape), _complex(rng, shape)
    mask = _random_mask(rng, shape[-2:])
    k0 = np.where(mask, _np_fft2c(x_true), 0)
    return rng, x_true, x, k0, mask


# --------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("shape", [(10, 12), (9, 7), (2, 8, 8)])
def test_exact_dc_replaces_sampled_and_keeps_unsampled_frequencies(x64, shape):
    _, _, x, k0, mask = _problem(0, shape)
    k_dc = np.asarray(fourier.fft2c(dc.data_consistency(x, k0, mask)))
    k_x = _np_fft2c(x)
    np.testing.assert_allclose(k_dc[..., mask], k0[..., mask], atol=1e-13)
    np.testing.assert_allclose(k_dc[..., ~mask], k_x[..., ~mask], atol=1e-13)


def test_exact_dc_float32():
    _, _, x, k0, mask = _problem(1)
    out = dc.data_consistency(x.astype(np.complex64), k0.astype(np.complex64), mask)
    assert out.dtype == jnp.complex64
    k_dc = np.asarray(fourier.fft2c(out))
    np.testing.assert_allclose(k_dc[mask], k0[mask], atol=1e-5)
    np.testing.assert_allclose(k_dc[~mask], _np_fft2c(x)[~mask], atol=1e-5)


def test_exact_dc_is_a_projection_with_the_truth_as_fixed_point(x64):
    _, x_true, x, k0, mask = _problem(2)
    once = dc.data_consistency(x, k0, mask)
    np.testing.assert_allclose(np.asarray(dc.data_consistency(once, k0, mask)), np.asarray(once), atol=1e-13)
    np.testing.assert_allclose(np.asarray(dc.data_consistency(x_true, k0, mask)), x_true, atol=1e-13)
    # Explicitly: dc(x) = x + A*(k0 - A x), the closest image consistent with k0.
    expected = x + np.asarray(fourier.adjoint(k0 - np.asarray(fourier.forward(x, mask)), mask))
    np.testing.assert_allclose(np.asarray(once), expected, atol=1e-13)


@pytest.mark.parametrize("noise_level", [0.0, 0.3, 2.0, 1e6])
def test_noise_level_formula(x64, noise_level):
    _, _, x, k0, mask = _problem(3)
    k = _np_fft2c(x)
    k_dc = np.asarray(fourier.fft2c(dc.data_consistency(x, k0, mask, noise_level=noise_level)))
    expected_on = (k + noise_level * k0) / (1 + noise_level)
    np.testing.assert_allclose(k_dc[mask], expected_on[mask], atol=1e-12)
    np.testing.assert_allclose(k_dc[~mask], k[~mask], atol=1e-12)
    if noise_level == 0.0:  # lam = 0 trusts the network entirely
        np.testing.assert_allclose(np.asarray(dc.data_consistency(x, k0, mask, noise_level=0.0)), x, atol=1e-13)


def test_noise_level_per_image_array(x64):
    rng, _, _, k0, mask = _problem(4, (3, 8, 8))
    x = _complex(rng, (3, 8, 8))
    lam = np.array([0.5, 1.0, 4.0])[:, None, None]
    out = np.asarray(dc.data_consistency(x, k0, mask, noise_level=lam))
    for i in range(3):
        np.testing.assert_allclose(out[i], np.asarray(dc.data_consistency(x[i], k0[i], mask, float(lam[i, 0, 0]))),
                                   atol=1e-13)


def test_kspace_version_matches_formula(x64):
    rng = np.random.default_rng(5)
    k, k0 = _complex(rng, (6, 6)), _complex(rng, (6, 6))
    mask = _random_mask(rng, (6, 6))
    np.testing.assert_array_equal(np.asarray(dc.data_consistency_kspace(k, k0, mask)), np.where(mask, k0, k))
    np.testing.assert_allclose(np.asarray(dc.data_consistency_kspace(k, k0, mask, 3.0)),
                               np.where(mask, (k + 3 * k0) / 4, k), atol=1e-14)


# --------------------------------------------------------------------------- uncentred layout

@pytest.mark.parametrize("shape", [(8, 8), (10, 6), (9, 7), (7, 10)])
@pytest.mark.parametrize("noise_level", [None, 0.7])
def test_uncentred_dc_gives_the_identical_image(x64, shape, noise_level):
    rng = np.random.default_rng(6)
    x_true, x = _complex(rng, shape), _complex(rng, shape)
    mask = _random_mask(rng, shape)
    # Deep-MRI-Reconstruction / Invfool layout: uncentred FFT and mask (DC at [0, 0]).
    mask_u = np.asarray(fourier.to_uncentred_mask(mask))
    k0_u = np.where(mask_u, np.fft.fft2(x_true, norm="ortho"), 0)
    k_u = np.fft.fft2(x, norm="ortho")
    on = k0_u if noise_level is None else (k_u + noise_level * k0_u) / (1 + noise_level)
    x_dc_u = np.fft.ifft2(np.where(mask_u, on, k_u), norm="ortho")
    # The same measurements in the centred layout.
    k0_c = np.asarray(fourier.from_uncentred_kspace(k0_u))
    np.testing.assert_allclose(k0_c, np.asarray(fourier.forward(x_true, mask)), atol=1e-13)
    x_dc_c = np.asarray(dc.data_consistency(x, k0_c, mask, noise_level))
    np.testing.assert_allclose(x_dc_c, x_dc_u, atol=1e-13)


# --------------------------------------------------------------------------- multi-coil

def _sense_dc_numpy(x, k0, mask, maps, lam=None):
    """sum_c conj(S_c) F*( M k0_c (or the weighted average) + (1 - M) F(S_c x) )."""
    k = _np_fft2c(maps * x)
    on = k0 if lam is None else (k + lam * k0) / (1 + lam)
    return np.sum(np.conj(maps) * _np_ifft2c(np.where(mask, on, k)), axis=0)


@pytest.mark.parametrize("noise_level", [None, 0.5])
def test_multi_coil_dc_matches_explicit_formula(x64, noise_level):
    rng = np.random.default_rng(7)
    maps = _unit_maps(rng, 4, 8, 10)
    x_true, x = _complex(rng, (8, 10)), _complex(rng, (8, 10))
    mask = _random_mask(rng, (8, 10))
    k0 = np.asarray(fourier.forward(x_true, mask, maps))
    out = np.asarray(dc.data_consistency(x, k0, mask, noise_level, coil_maps=maps))
    np.testing.assert_allclose(out, _sense_dc_numpy(x, k0, mask, maps, noise_level), atol=1e-13)


def test_multi_coil_dc_fixed_point_and_non_expansive(x64):
    rng = np.random.default_rng(8)
    maps = _unit_maps(rng, 4, 8, 8)
    x_true, x, z = _complex(rng, (8, 8)), _complex(rng, (8, 8)), _complex(rng, (8, 8))
    mask = _random_mask(rng, (8, 8))
    k0 = fourier.forward(x_true, mask, maps)
    f = lambda v: np.asarray(dc.data_consistency(v, k0, mask, coil_maps=maps))
    # With normalised maps the coil combination inverts the coil expansion, so the
    # truth is a fixed point ...
    np.testing.assert_allclose(f(x_true), x_true, atol=1e-13)
    # ... and the map is non-expansive: dc(x) - dc(z) = E* (1 - M) E (x - z), ||E|| = 1.
    assert np.linalg.norm(f(x) - f(z)) <= np.linalg.norm(x - z) * (1 + 1e-12)


def test_single_unit_modulus_coil_dc_is_a_projection(x64):
    rng = np.random.default_rng(9)
    maps = np.exp(1j * rng.uniform(0, 2 * np.pi, (1, 8, 8)))  # |S| = 1: E is unitary
    x_true, x = _complex(rng, (8, 8)), _complex(rng, (8, 8))
    mask = _random_mask(rng, (8, 8))
    k0 = fourier.forward(x_true, mask, maps)
    once = dc.data_consistency(x, k0, mask, coil_maps=maps)
    np.testing.assert_allclose(np.asarray(dc.data_consistency(once, k0, mask, coil_maps=maps)),
                               np.asarray(once), atol=1e-13)
    np.testing.assert_allclose(np.asarray(fourier.forward(once, mask, maps)), np.asarray(k0), atol=1e-13)


def test_multi_coil_dc_leaves_a_consistent_image_unchanged_but_is_not_a_projection(x64):
    # With sum_c |S_c|^2 = 1: E*E = I, so an image whose data agree with k0 is a fixed point;
    # applying the layer to an inconsistent image twice differs from once (E E* != I for C > 1).
    rng = np.random.default_rng(10)
    maps = _unit_maps(rng, 4, 8, 8)
    x_true, x = _complex(rng, (8, 8)), _complex(rng, (8, 8))
    mask = _random_mask(rng, (8, 8))
    k0 = fourier.forward(x_true, mask, maps)
    np.testing.assert_allclose(np.asarray(dc.data_consistency(x_true, k0, mask, coil_maps=maps)),
                               np.asarray(x_true), atol=1e-12)
    once = dc.data_consistency(x, k0, mask, coil_maps=maps)
    twice = dc.data_consistency(once, k0, mask, coil_maps=maps)
    assert np.linalg.norm(np.asarray(twice - once)) > 1e-3 * np.linalg.norm(np.asarray(once))


# --------------------------------------------------------------------------- dtypes

def test_dtypes():
    mask = np.ones((4, 4), bool)
    k0 = np.zeros((4, 4), np.complex64)
    assert dc.data_consistency(np.ones((4, 4), np.float32), k0, mask).dtype == jnp.complex64
    assert dc.data_consistency(np.ones((4, 4), np.float32), k0, mask, 0.5).dtype == jnp.complex64
    assert dc.data_consistency_kspace(k0, k0, mask).dtype == jnp.complex64


def test_dtypes_under_x64(x64):
    mask = np.ones((4, 4), bool)
    assert dc.data_consistency(np.ones((4, 4)), np.zeros((4, 4), complex), mask).dtype == jnp.complex128
    assert dc.data_consistency(np.ones((4, 4)), np.zeros((4, 4), complex), mask, 0.5).dtype == jnp.complex128
    # A real image equals the same image stored as complex.
    rng = np.random.default_rng(11)
    xr, k0 = rng.standard_normal((6, 6)), _complex(rng, (6, 6))
    m = _random_mask(rng, (6, 6))
    np.testing.assert_array_equal(np.asarray(dc.data_consistency(xr, k0, m)),
                                  np.asarray(dc.data_consistency(xr.astype(complex), k0, m)))


# --------------------------------------------------------------------------- batching

def test_batch_with_one_mask_and_with_per_image_masks():
    rng = np.random.default_rng(12)
    x = _complex(rng, (3, 8, 8), np.complex64)
    k0 = _complex(rng, (3, 8, 8), np.complex64)
    one = _random_mask(rng, (8, 8))
    per = _random_mask(rng, (3, 8, 8))
    out_one = np.asarray(dc.data_consistency(x, k0, one))
    out_per = np.asarray(dc.data_consistency(x, k0, per, noise_level=0.5))
    for i in range(3):
        np.testing.assert_allclose(out_one[i], np.asarray(dc.data_consistency(x[i], k0[i], one)), atol=1e-6)
        np.testing.assert_allclose(out_per[i], np.asarray(dc.data_consistency(x[i], k0[i], per[i], 0.5)), atol=1e-6)
    # vmap over images agrees with the batched call.
    vmapped = jax.vmap(lambda a, b, m: dc.data_consistency(a, b, m))(x, k0, per)
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(dc.data_consistency(x, k0, per)), atol=1e-6)


# --------------------------------------------------------------------------- gradients

def _fd(f, x, v, h=1e-6):
    return (f(x + h * v) - f(x - h * v)) / (2 * h)


def test_jit_vmap_grad_through_dc_matches_finite_differences(x64):
    rng = np.random.default_rng(13)
    mask = _random_mask(rng, (8, 8))
    maps = _unit_maps(rng, 3, 8, 8)
    k0 = np.where(mask, _np_fft2c(_complex(rng, (8, 8))), 0)
    k0_coils = np.asarray(fourier.forward(_complex(rng, (8, 8)), mask, maps))
    target = _complex(rng, (8, 8))

    def loss(x):  # real image -> real number through exact, weighted and multi-coil DC
        a = dc.data_consistency(x, k0, mask)
        b = dc.data_consistency(a * x, k0, mask, noise_level=0.8)
        c = dc.data_consistency(x, k0_coils, mask, 0.3, coil_maps=maps)
        return jnp.sum(jnp.abs(b - target) ** 2) + jnp.sum(jnp.abs(c) ** 2 * x)

    loss_jit = jax.jit(loss)
    xs = rng.standard_normal((3, 8, 8))
    grads = np.asarray(jax.jit(jax.vmap(jax.grad(loss)))(xs))
    for i in range(3):
        v = rng.standard_normal((8, 8))
        fd = _fd(lambda t: float(loss_jit(t)), xs[i], v)
        assert abs(np.sum(grads[i] * v) - fd) <= 1e-7 * max(1.0, abs(fd))


def test_grad_wrt_learnable_noise_level_matches_finite_differences(x64):
    _, _, x, k0, mask = _problem(14)
    target = np.random.default_rng(15).standard_normal(x.shape)

    def loss(lam):
        return jnp.sum(jnp.abs(dc.data_consistency(x, k0, mask, noise_level=lam) - target) ** 2)

    loss_jit, grad_jit = jax.jit(loss), jax.jit(jax.grad(loss))
    for lam in (0.0, 0.4, 3.0):
        g = float(grad_jit(lam))
        fd = _fd(lambda t: float(loss_jit(t)), lam, 1.0)
        assert abs(g - fd) <= 1e-7 * max(1.0, abs(fd))
        assert g != 0.0  # the loss really depends on lam


# --------------------------------------------------------------------------- errors

def test_mask_with_wrong_shape_raises_value_error_naming_mask():
    x = jnp.ones((8, 8))
    k0 = jnp.zeros((8, 8), jnp.complex64)
    for bad in (np.ones((8, 7), bool), np.ones((8,), bool)):
        with pytest.raises(ValueError, match="mask"):
            dc.data_consistency(x, k0, bad)
        with pytest.raises(ValueError, match="mask"):
            dc.data_consistency(x, k0, bad, noise_level=1.0)
    with pytest.raises(ValueError, match="x must have at least 2 axes"):
        dc.data_consistency(jnp.ones(8), k0, np.ones((8, 8), bool))


def test_bad_kspace_and_noise_level_are_refused_naming_the_problem():
    x = np.ones((8, 6))
    mask = np.ones((8, 6), bool)
    k0 = np.ones((8, 6), np.complex64)
    # A 1-D k-space of length W would broadcast over the rows: refused.
    with pytest.raises(ValueError, match="k0 must have at least 2 axes"):
        dc.data_consistency(x, k0[0], mask)
    # A k-space of another image size names both shapes.
    with pytest.raises(ValueError, match=r"k0 has shape \(8, 5\) but the image of shape \(8, 6\)"):
        dc.data_consistency(x, k0[:, :5], mask)
    with pytest.raises(ValueError, match="does not broadcast"):
        dc.data_consistency(np.ones((3, 8, 6)), np.ones((2, 8, 6), np.complex64), mask)
    # lam = -1 divides by zero; negative weights are refused, lam = 0 keeps the network's values.
    with pytest.raises(ValueError, match="noise_level"):
        dc.data_consistency(x, k0, mask, noise_level=-1.0)
    with pytest.raises(ValueError, match="noise_level"):
        dc.data_consistency(x, k0, mask, noise_level=float("nan"))
    np.testing.assert_allclose(dc.data_consistency(x, 0 * k0, mask, noise_level=0.0), x, atol=1e-6)
    with pytest.raises(ValueError, match="k0 has shape"):
        dc.data_consistency_kspace(k0, k0[:, :5], mask)
    with pytest.raises(ValueError, match="k0 must have at least 3 axes"):
        dc.data_consistency(x, k0, mask, coil_maps=np.ones((2, 8, 6)))     # one-coil k-space with 2 coils


def test_an_operator_stands_for_its_mask_and_coil_maps():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6)) + 1j * rng.standard_normal((8, 6))
    mask = rng.random((8, 6)) < 0.5
    maps = rng.standard_normal((2, 8, 6)) + 1j * rng.standard_normal((2, 8, 6))
    k0 = fourier.forward(x, mask, maps)
    np.testing.assert_array_equal(dc.data_consistency(0 * x, k0, operators.sense(mask, maps)),
                                  dc.data_consistency(0 * x, k0, mask, coil_maps=maps))
    k1 = fourier.forward(x, mask)
    np.testing.assert_array_equal(dc.data_consistency(0 * x, k1, operators.cartesian(mask)),
                                  dc.data_consistency(0 * x, k1, mask))
