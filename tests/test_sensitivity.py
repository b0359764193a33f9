"""Coil sensitivity estimation from the calibration region, and the SENSE operator with it."""

import functools

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from mrijax import fourier
from mrijax.data import sensitivity


# Jitted once per shape: eager dispatch of the many small ops is slow on a busy CPU.
_forward, _adjoint, _normal = (jax.jit(f) for f in (fourier.forward, fourier.adjoint, fourier.normal))


def _fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def smooth_coil_maps(n=48, coils=6):
    """Known smooth maps: Gaussian bumps around the image with a slow phase ramp, sum |S|^2 = 1."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    maps = []
    for c in range(coils):
        a = 2 * np.pi * c / coils
        cy, cx = 1.2 * np.sin(a), 1.2 * np.cos(a)
        amp = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 1.5)
        phase = 0.8 * (np.cos(a) * yy - np.sin(a) * xx) + 0.3 * c
        maps.append(amp * np.exp(1j * phase))
    maps = np.stack(maps)
    return maps / np.sqrt((np.abs(maps) ** 2).sum(0))


def smooth_object(n=48):
    """A positive, smooth-edged disc with a brighter blob: most of its energy is at low frequency."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    r = np.sqrt(yy ** 2 + xx ** 2)
    disc = 1 / (1 + np.exp((r - 0.7) / 0.05))
    return disc * (1 + 0.5 * np.exp(-((yy - 0.2) ** 2 + (xx + 0.1) ** 2) / 0.05))


def test_maps_are_normalised_where_there_is_signal(x64):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((5, 32, 32)) + 1j * rng.standard_normal((5, 32, 32))
    maps = np.asarray(sensitivity.estimate_coil_maps(k, calib_size=12))
    assert maps.shape == (5, 32, 32) and maps.dtype == np.complex128
    energy = (np.abs(maps) ** 2).sum(0)
    low_res = np.asarray(fourier.ifft2c(k * sensitivity.calibration_window((32, 32), 12)))
    rss = np.sqrt((np.abs(low_res) ** 2).sum(0))
    support = rss > 1e-3 * rss.max()
    assert support.mean() > 0.9
    np.testing.assert_allclose(energy[support], 1.0, atol=1e-6)
    assert np.all(energy <= 1 + 1e-12)


def test_estimate_recovers_known_smooth_maps(x64):
    true = smooth_coil_maps()
    x = smooth_object()
    k = _fft2c(true * x)
    est = np.asarray(sensitivity.estimate_coil_maps(k, calib_size=24))
    support = x > 0.5 * x.max()
    for c in range(true.shape[0]):
        a, b = est[c][support], true[c][support]
        corr = np.abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b))
        assert corr > 0.99, (c, corr)
    # The object is real and positive, so even the phase is recovered.
    rel = np.linalg.norm((est - true)[:, support]) / np.linalg.norm(true[:, support])
    assert rel < 0.1, rel
    # A too-small calibration region (4 lines) is visibly worse: the test can fail.
    coarse = np.asarray(sensitivity.estimate_coil_maps(k, calib_size=2))
    assert np.linalg.norm((coarse - true)[:, support]) / np.linalg.norm(true[:, support]) > 2 * rel


def test_sense_adjoint_with_estimated_maps(x64):
    rng = np.random.default_rng(1)
    n, coils = 32, 4
    k_ref = _fft2c(smooth_coil_maps(n, coils) * smooth_object(n))
    maps = sensitivity.estimate_coil_maps(k_ref, calib_size=16)
    mask = np.zeros((n, n), bool)
    mask[:, rng.random(n) < 0.4] = True
    mask[:, n // 2 - 4:n // 2 + 4] = True
    x = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    y = rng.standard_normal((coils, n, n)) + 1j * rng.standard_normal((coils, n, n))
    lhs = jnp.vdot(_forward(x, mask, maps), y)  # <A x, y>
    rhs = jnp.vdot(x, _adjoint(y, mask, maps))  # <x, A* y>
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    # With sum |S|^2 = 1 and the full mask, A* A is the identity where the maps are normalised.
    full = np.ones((n, n), bool)
    back = np.asarray(_normal(x, full, maps))
    energy = np.asarray((jnp.abs(maps) ** 2).sum(0))
    np.testing.assert_allclose(back, energy * x, atol=1e-10)


def test_sense_adjoint_float32():
    rng = np.random.default_rng(2)
    k = (rng.standard_normal((3, 16, 16)) + 1j * rng.standard_normal((3, 16, 16))).astype(np.complex64)
    maps = sensitivity.estimate_coil_maps(k, calib_size=8)
    assert maps.dtype == jnp.complex64
    mask = np.zeros((16, 16), bool)
    mask[:, ::2] = True
    x = (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))).astype(np.complex64)
    y = (rng.standard_normal((3, 16, 16)) + 1j * rng.standard_normal((3, 16, 16))).astype(np.complex64)
    lhs = jnp.vdot(_forward(x, mask, maps), y)
    rhs = jnp.vdot(x, _adjoint(y, mask, maps))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


def test_only_the_calibration_region_matters(x64):
    rng = np.random.default_rng(3)
    k = rng.standard_normal((3, 32, 32)) + 1j * rng.standard_normal((3, 32, 32))
    changed = k.copy()
    block = np.zeros((32, 32), bool)
    block[16 - 5:16 - 5 + 10, 16 - 5:16 - 5 + 10] = True
    changed[:, ~block] = 0  # undersampled everywhere outside the 10x10 centre
    a = sensitivity.estimate_coil_maps(k, calib_size=10)
    b = sensitivity.estimate_coil_maps(changed, calib_size=10)
    np.testing.assert_allclose(a, b, atol=1e-12)
    # ... whereas a change inside it does matter.
    changed[:, 16, 16] += 5.0
    assert np.abs(np.asarray(sensitivity.estimate_coil_maps(changed, calib_size=10)) - a).max() > 1e-3


def test_calibration_size_from_mask():
    mask = np.zeros((32, 40), bool)
    start = (40 - 8 + 1) // 2  # fastMRI's centre block of 8 columns, around DC at W // 2
    mask[:, start:start + 8] = True
    mask[:, [1, 5, 33]] = True
    assert sensitivity.calibration_size_from_mask(mask) == 8
    odd = np.zeros((32, 32), bool)
    odd[:, 13:20] = True  # 7 columns centred on 16
    assert sensitivity.calibration_size_from_mask(odd) == 7
    point = np.zeros((16, 16), bool)
    point[6:11, 6:11] = True  # the 5x5 square centred on (8, 8)
    assert sensitivity.calibration_size_from_mask(point) == 5
    assert sensitivity.calibration_size_from_mask(np.ones((8, 12), bool)) == 8
    with pytest.raises(ValueError, match="DC"):
        sensitivity.calibration_size_from_mask(np.zeros((8, 8), bool))


def test_calibration_size_of_library_line_masks():
    from mrijax import masks

    for width, fraction in ((32, 0.25), (33, 0.25), (33, 0.2), (40, 0.1)):
        mask = masks.random_lines((48, width), acceleration=4, center_fraction=fraction, seed=0)
        n_acs = round(width * fraction)
        assert sensitivity.calibration_size_from_mask(mask) >= n_acs
        # The window sits on the fully sampled block, wherever parity puts it.
        window = sensitivity.calibration_window((48, width), n_acs)
        assert np.all(mask[window > 0])


def test_mask_sets_calib_size(x64):
    rng = np.random.default_rng(4)
    k = rng.standard_normal((2, 32, 32)) + 1j * rng.standard_normal((2, 32, 32))
    mask = np.zeros((32, 32), bool)
    mask[:, 12:20] = True
    np.testing.assert_array_equal(sensitivity.estimate_coil_maps(k, mask=mask),
                                  sensitivity.estimate_coil_maps(k, calib_size=8))
    # Default without mask: 24, clipped to small images.
    np.testing.assert_array_equal(sensitivity.estimate_coil_maps(k),
                                  sensitivity.estimate_coil_maps(k, calib_size=24))
    small = k[:, :16, :16]
    np.testing.assert_array_equal(sensitivity.estimate_coil_maps(small),
                                  sensitivity.estimate_coil_maps(small, calib_size=16))


def test_batched_equals_one_by_one_and_jit():
    rng = np.random.default_rng(5)
    k = (rng.standard_normal((3, 4, 16, 16)) + 1j * rng.standard_normal((3, 4, 16, 16))).astype(np.complex64)
    batched = sensitivity.estimate_coil_maps(k, calib_size=8)
    for i in range(3):
        np.testing.assert_allclose(batched[i], sensitivity.estimate_coil_maps(k[i], calib_size=8),
                                   rtol=1e-5, atol=1e-6)
    jitted = jax.jit(functools.partial(sensitivity.estimate_coil_maps, calib_size=8))(k)
    np.testing.assert_allclose(jitted, batched, rtol=1e-5, atol=1e-6)
    vmapped = jax.vmap(functools.partial(sensitivity.estimate_coil_maps, calib_size=8))(k)
    np.testing.assert_allclose(vmapped, batched, rtol=1e-5, atol=1e-6)


def test_window_shape():
    w = sensitivity.calibration_window((16, 20), (6, 7))
    assert w.shape == (16, 20)
    assert w[8, 10] == 1.0 and w.max() == 1.0  # DC at (H//2, W//2) has weight 1
    rows, cols = np.flatnonzero(w.any(1)), np.flatnonzero(w.any(0))
    np.testing.assert_array_equal(rows, np.arange(8 - 3, 8 - 3 + 6))
    np.testing.assert_array_equal(cols, np.arange(10 - 3, 10 - 3 + 7))
    # Symmetric about DC where both sides exist, positive on the block.
    np.testing.assert_allclose(w[8, 10 - 3:10], w[8, 10 + 3:10:-1])
    assert np.all(w[rows][:, cols] > 0)
    box = sensitivity.calibration_window((16, 20), 4, window=None)
    assert box.sum() == 16 and set(np.unique(box)) == {0.0, 1.0}


def test_zero_kspace_and_threshold():
    maps = sensitivity.estimate_coil_maps(np.zeros((2, 8, 8), np.complex64), calib_size=4)
    assert np.all(np.asarray(maps) == 0)
    true = smooth_coil_maps(32, 3)
    x = smooth_object(32)
    k = _fft2c(true * x)
    cut = np.asarray(sensitivity.estimate_coil_maps(k, calib_size=12, support_threshold=0.2))
    energy = (np.abs(cut) ** 2).sum(0)
    assert energy[0, 0] == 0 and energy[16, 16] == pytest.approx(1.0, abs=1e-5)


def test_grad_is_finite():
    rng = np.random.default_rng(6)
    k = (rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8))).astype(np.complex64)
    g = jax.grad(lambda kk: jnp.sum(jnp.abs(sensitivity.estimate_coil_maps(kk, calib_size=4))
                                    [..., 2:6, 2:6].real))(jnp.asarray(k))
    assert np.all(np.isfinite(np.asarray(g)))


def test_rss():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 5)) + 1j * rng.standard_normal((2, 3, 5, 5))
    np.testing.assert_allclose(sensitivity.rss(x), np.sqrt((np.abs(x) ** 2).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(sensitivity.rss(x, axis=0), np.sqrt((np.abs(x) ** 2).sum(0)), rtol=1e-6)


def test_errors():
    k = np.zeros((2, 8, 8), np.complex64)
    with pytest.raises(ValueError, match="calib_size"):
        sensitivity.estimate_coil_maps(k, calib_size=9)
    with pytest.raises(ValueError, match="window"):
        sensitivity.estimate_coil_maps(k, calib_size=4, window="gauss")
    with pytest.raises(ValueError, match="at least 3 axes"):
        sensitivity.estimate_coil_maps(k[0], calib_size=4)
    with pytest.raises(ValueError, match="eps"):
        sensitivity.estimate_coil_maps(k, calib_size=4, eps=0.0)
    with pytest.raises(ValueError, match="support_threshold"):
        sensitivity.estimate_coil_maps(k, calib_size=4, support_threshold=1.0)
