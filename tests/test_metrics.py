"""Tests of mrijax.metrics against skimage and closed forms."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrijax import metrics


def _pair(seed, shape, noise=0.05):
    """A reference with a flat region (where SSIM is most sensitive to rounding) and a noisy copy."""
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    ref[..., : shape[-2] // 2, :] = 0.7
    x = ref + noise * rng.standard_normal(shape)
    return x, ref


def _skimage_ssim(x, ref, data_range=None):
    """fastMRI's call, per image, in float64."""
    x = np.asarray(x, np.float64).reshape((-1,) + x.shape[-2:])
    ref = np.asarray(ref, np.float64).reshape((-1,) + ref.shape[-2:])
    ranges = [r.max() for r in ref] if data_range is None else np.broadcast_to(data_range, len(ref))
    return np.array([structural_similarity(r, xi, data_range=d) for xi, r, d in zip(x, ref, ranges)])


# --------------------------------------------------------------------------- SSIM

@pytest.mark.parametrize("shape", [(7, 7), (32, 40), (64, 64), (9, 13)])
def test_ssim_matches_skimage_float32(shape):
    x, ref = _pair(0, shape)
    got = metrics.ssim(x.astype(np.float32), ref.astype(np.float32))
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), _skimage_ssim(x, ref)[0], atol=1e-4)


def test_ssim_matches_skimage_float64_tightly(x64):
    x, ref = _pair(1, (3, 33, 40))
    got = np.asarray(metrics.ssim(x, ref))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, _skimage_ssim(x, ref), atol=1e-12)


def test_ssim_batched_over_several_axes_equals_per_image():
    x, ref = _pair(2, (2, 3, 16, 20))
    got = np.asarray(metrics.ssim(x.astype(np.float32), ref.astype(np.float32)))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.ravel(), _skimage_ssim(x, ref), atol=1e-4)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(got[i, j], float(metrics.ssim(x[i, j], ref[i, j])), atol=1e-6)


def test_ssim_explicit_data_range_scalar_and_per_image():
    x, ref = _pair(3, (3, 16, 16))
    np.testing.assert_allclose(np.asarray(metrics.ssim(x, ref, data_range=2.0)),
                               _skimage_ssim(x, ref, 2.0), atol=1e-4)
    ranges = np.array([0.5, 1.0, 3.0])
    np.testing.assert_allclose(np.asarray(metrics.ssim(x, ref, data_range=ranges)),
                               _skimage_ssim(x, ref, ranges), atol=1e-4)
    # A volume-wide range, as fastMRI's evaluate.ssim uses.
    np.testing.assert_allclose(np.asarray(metrics.ssim(x, ref, data_range=ref.max())),
                               _skimage_ssim(x, ref, ref.max()), atol=1e-4)


def test_ssim_is_scale_invariant_with_the_default_range():
    # The default range follows the reference, so units do not matter (fastMRI data are ~1e-5).
    x, ref = _pair(4, (24, 24))
    a = float(metrics.ssim(x, ref))
    b = float(metrics.ssim(x * 3e-5, ref * 3e-5))
    assert abs(a - b) < 1e-5


def test_ssim_complex_inputs_use_magnitude():
    x, ref = _pair(5, (16, 16))
    rng = np.random.default_rng(6)
    phase_x = np.exp(1j * rng.uniform(0, 2 * np.pi, x.shape))
    phase_r = np.exp(1j * rng.uniform(0, 2 * np.pi, x.shape))
    xa, refa = np.abs(x), np.abs(ref)
    np.testing.assert_allclose(float(metrics.ssim(xa * phase_x, refa * phase_r)),
                               _skimage_ssim(xa, refa)[0], atol=1e-4)


def test_ssim_identical_images_is_one_and_worse_for_more_noise():
    x, ref = _pair(7, (20, 20))
    assert abs(float(metrics.ssim(ref, ref)) - 1.0) < 1e-6
    noisier, _ = _pair(7, (20, 20), noise=0.2)
    assert float(metrics.ssim(noisier, ref)) < float(metrics.ssim(x, ref)) < 1.0


def test_ssim_jit_vmap_and_grad():
    x, ref = _pair(8, (4, 16, 16))
    x, ref = x.astype(np.float32), ref.astype(np.float32)
    direct = np.asarray(metrics.ssim(x, ref))
    np.testing.assert_allclose(np.asarray(jax.jit(metrics.ssim)(x, ref)), direct, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(metrics.ssim)(x, ref)), direct, atol=1e-6)
    g = jax.jit(jax.grad(lambda a: jnp.sum(metrics.ssim(a, ref))))(x)
    assert np.all(np.isfinite(np.asarray(g)))


def test_ssim_gradient_matches_finite_differences(x64):
    x, ref = _pair(9, (12, 12))
    loss = jax.jit(lambda a: metrics.ssim(a, ref))
    g = np.asarray(jax.grad(loss)(x))
    v = np.random.default_rng(10).standard_normal(x.shape)
    h = 1e-6
    fd = (float(loss(x + h * v)) - float(loss(x - h * v))) / (2 * h)
    assert abs(np.sum(g * v) - fd) <= 1e-7 * max(1.0, abs(fd))


def test_ssim_errors():
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(jnp.ones((16, 16)), jnp.ones((16, 15)))
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim(jnp.ones((6, 16)), jnp.ones((6, 16)))
    with pytest.raises(ValueError, match="win_size"):
        metrics.ssim(jnp.ones((16, 16)), jnp.ones((16, 16)), win_size=4)
    with pytest.raises(ValueError, match="data_range"):
        metrics.ssim(jnp.ones((2, 16, 16)), jnp.ones((2, 16, 16)), data_range=np.ones(3))


# --------------------------------------------------------------------------- PSNR

def test_psnr_closed_form_and_skimage():
    ref = np.zeros((8, 8), np.float32)
    ref[2:6, 2:6] = 2.0
    x = ref + 0.1
    # mse = 0.01, peak 2: 10 log10(4 / 0.01)
    np.testing.assert_allclose(float(metrics.psnr(x, ref)), 10 * np.log10(400.0), rtol=1e-5)
    np.testing.assert_allclose(float(metrics.psnr(x, ref)),
                               peak_signal_noise_ratio(ref, x, data_range=ref.max()), rtol=1e-5)
    # Invfool's variant takes the peak from x (2.1).
    np.testing.assert_allclose(float(metrics.psnr_peak_from_recon(x, ref)), 10 * np.log10(2.1 ** 2 / 0.01),
                               rtol=1e-5)


def test_psnr_batched_complex_and_identical(x64):
    x, ref = _pair(11, (2, 3, 10, 10))
    rng = np.random.default_rng(12)
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, x.shape))
    got = np.asarray(metrics.psnr(np.abs(x) * phase, np.abs(ref)))
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            a, r = np.abs(x[i, j]), np.abs(ref[i, j])
            np.testing.assert_allclose(got[i, j], 10 * np.log10(r.max() ** 2 / np.mean((a - r) ** 2)), rtol=1e-12)
            np.testing.assert_allclose(
                float(metrics.psnr_peak_from_recon(x[i, j], ref[i, j])),
                10 * np.log10(np.abs(x[i, j]).max() ** 2 / np.mean((x[i, j] - ref[i, j]) ** 2)), rtol=1e-12)
    same = np.asarray(metrics.psnr(ref, ref))
    assert same.shape == (2, 3) and np.all(np.isposinf(same))
    assert np.all(np.isposinf(np.asarray(metrics.psnr_peak_from_recon(ref, ref))))


def test_psnr_grad_is_finite_even_where_one_image_is_exact():
    x, ref = _pair(13, (2, 8, 8))
    x = x.astype(np.float32)
    x[1] = ref[1]
    g = jax.jit(jax.grad(lambda a: jnp.sum(jnp.where(jnp.arange(2) == 0, metrics.psnr(a, ref), 0.0))))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.any(np.asarray(g[0]) != 0)


def test_psnr_and_nmse_shape_errors():
    for f in (metrics.psnr, metrics.psnr_peak_from_recon, metrics.nmse):
        with pytest.raises(ValueError, match="same shape"):
            f(jnp.ones((2, 8, 8)), jnp.ones((8, 8)))
        with pytest.raises(ValueError, match="at least 2 axes"):
            f(jnp.ones(8), jnp.ones(8))


# --------------------------------------------------------------------------- NMSE

def test_nmse_closed_form(x64):
    x, ref = _pair(14, (3, 9, 11))
    got = np.asarray(metrics.nmse(x, ref))
    expected = [np.linalg.norm(a - r) ** 2 / np.linalg.norm(r) ** 2 for a, r in zip(x, ref)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(metrics.nmse(ref, ref)), 0.0)
    # Complex inputs are compared by magnitude: a global phase changes nothing.
    xa = np.abs(x)
    expected_abs = [np.linalg.norm(a - r) ** 2 / np.linalg.norm(r) ** 2 for a, r in zip(xa, ref)]
    np.testing.assert_allclose(np.asarray(metrics.nmse(xa * np.exp(0.3j), ref)), expected_abs, rtol=1e-12)
    # Known value: x = 0 gives 1.
    np.testing.assert_allclose(np.asarray(metrics.nmse(np.zeros_like(ref), ref)), 1.0)


def test_integer_inputs_are_promoted():
    ref = np.arange(64, dtype=np.int32).reshape(8, 8)
    x = ref + 1
    assert metrics.psnr(x, ref).dtype == jnp.float32
    np.testing.assert_allclose(float(metrics.psnr(x, ref)), 10 * np.log10(63.0 ** 2), rtol=1e-5)
