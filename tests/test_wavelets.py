"""Tests of mrijax.wavelets: filters, orthogonality, layout, batching, errors, PyWavelets agreement."""

import math
import warnings

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from mrijax import wavelets

CHECKED = ("haar", "db2", "db4")


def _random(shape, seed=0, complex_=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if complex_:
        x = x + 1j * rng.standard_normal(shape)
    return x


# ----------------------------------------------------------------------------- filters


@pytest.mark.parametrize("name", wavelets.WAVELETS)
def test_filters_are_an_orthonormal_daubechies_pair(name):
    dec_lo, dec_hi = wavelets.filters(name)
    order = 1 if name == "haar" else int(name[2:])
    assert dec_lo.size == dec_hi.size == 2 * order
    np.testing.assert_allclose(dec_lo.sum(), math.sqrt(2), atol=1e-13)
    np.testing.assert_allclose(dec_hi.sum(), 0, atol=1e-13)
    # Orthonormal at every even shift, and the high-pass orthogonal to the low-pass.
    for shift in range(0, 2 * order, 2):
        lo_lo = np.dot(dec_lo[shift:], dec_lo[:dec_lo.size - shift])
        hi_hi = np.dot(dec_hi[shift:], dec_hi[:dec_hi.size - shift])
        np.testing.assert_allclose(lo_lo, 1.0 if shift == 0 else 0.0, atol=1e-12)
        np.testing.assert_allclose(hi_hi, 1.0 if shift == 0 else 0.0, atol=1e-12)
        np.testing.assert_allclose(np.dot(dec_lo[shift:], dec_hi[:dec_hi.size - shift]), 0, atol=1e-12)
        np.testing.assert_allclose(np.dot(dec_hi[shift:], dec_lo[:dec_lo.size - shift]), 0, atol=1e-12)
    # dbN has N vanishing moments: the high-pass kills polynomials of degree < N.
    k = np.arange(dec_hi.size, dtype=float)
    for power in range(order):
        assert abs(np.sum(k ** power * dec_hi)) < 1e-9 * max(1.0, np.sum(np.abs(k ** power * dec_hi)))


def test_filters_closed_forms():
    s2 = math.sqrt(2)
    np.testing.assert_allclose(wavelets.filters("haar")[0], [1 / s2, 1 / s2], atol=1e-15)
    np.testing.assert_array_equal(wavelets.filters("haar")[0], wavelets.filters("db1")[0])
    s3 = math.sqrt(3)
    db2 = np.array([1 + s3, 3 + s3, 3 - s3, 1 - s3]) / (4 * s2)  # Daubechies' closed form, largest first
    np.testing.assert_allclose(wavelets.filters("db2")[0], db2[::-1], atol=1e-15)
    # Published db4 scaling filter (Daubechies 1992, Table 6.1, normalised to sum sqrt(2)).
    db4 = [0.2303778133088964, 0.7148465705529154, 0.6308807679298587, -0.0279837694168599,
           -0.1870348117190931, 0.0308413818355607, 0.0328830116668852, -0.0105974017850690]
    np.testing.assert_allclose(wavelets.filters("db4")[0], db4[::-1], atol=1e-13)


def test_filters_are_read_only():
    with pytest.raises(ValueError):
        wavelets.filters("db2")[0][0] = 1.0


# ----------------------------------------------------------------------------- known answers


def _reference_level_1d(x, dec_lo, dec_hi, axis):
    """Direct evaluation of a[i] = sum_k g[k] x[(2i + L/2 - k) mod N] (and d with h)."""
    x = np.moveaxis(x, axis, -1)
    n, taps = x.shape[-1], dec_lo.size
    lo = np.zeros(x.shape[:-1] + (n // 2,), x.dtype)
    hi = np.zeros_like(lo)
    for i in range(n // 2):
        for k in range(taps):
            sample = x[..., (2 * i + taps // 2 - k) % n]
            lo[..., i] += dec_lo[k] * sample
            hi[..., i] += dec_hi[k] * sample
    return np.moveaxis(lo, -1, axis), np.moveaxis(hi, -1, axis)


@pytest.mark.parametrize("name", CHECKED)
def test_one_level_matches_direct_formula(x64, name):
    x = _random((2, 8, 12), seed=1)
    dec_lo, dec_hi = wavelets.filters(name)
    lo_h, hi_h = _reference_level_1d(x, dec_lo, dec_hi, axis=-2)
    c_a, c_v = _reference_level_1d(lo_h, dec_lo, dec_hi, axis=-1)
    c_h, c_d = _reference_level_1d(hi_h, dec_lo, dec_hi, axis=-1)
    got_a, (got_h, got_v, got_d) = wavelets.dwt2(jnp.asarray(x), name)
    for got, want in ((got_a, c_a), (got_h, c_h), (got_v, c_v), (got_d, c_d)):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)


def test_haar_of_a_constant_is_all_approximation(x64):
    x = jnp.full((8, 8), 3.0)
    c = np.asarray(wavelets.forward(x, "haar", 3))
    # Each level multiplies the mean by 2 (= sqrt(2) per axis); the details vanish.
    expected = np.zeros((8, 8))
    expected[0, 0] = 3.0 * 8
    np.testing.assert_allclose(c, expected, atol=1e-12)


@pytest.mark.parametrize("name", ["db2", "db4"])
def test_vanishing_moments_give_zero_details_for_low_degree_polynomials(x64, name):
    # The periodised transform of a linear ramp has nonzero details only where the
    # filter wraps around the border.
    n = 32
    ramp = np.add.outer(np.arange(n), 2.0 * np.arange(n))
    _, (c_h, c_v, c_d) = wavelets.dwt2(jnp.asarray(ramp), name)
    taps = wavelets.filters(name)[0].size
    interior = slice(taps // 2, n // 2 - taps // 2)
    for band in (c_h, c_v, c_d):
        np.testing.assert_allclose(np.asarray(band)[interior, interior], 0, atol=1e-10)


# ----------------------------------------------------------------------------- orthogonality


@pytest.mark.parametrize("name", CHECKED)
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_perfect_reconstruction_and_parseval(x64, name, levels):
    x = jnp.asarray(_random((3, 16, 32), seed=levels))
    c = wavelets.forward(x, name, levels)
    assert c.shape == x.shape and c.dtype == x.dtype
    np.testing.assert_allclose(np.asarray(wavelets.inverse(c, name, levels)), np.asarray(x), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(c), axis=(-2, -1)),
                               np.linalg.norm(np.asarray(x), axis=(-2, -1)), rtol=1e-12)


def test_wavedec2_waverec2_round_trip(x64):
    x = jnp.asarray(_random((2, 16, 24), seed=11))
    coeffs = wavelets.wavedec2(x, "db3", 3)
    assert len(coeffs) == 4 and coeffs[0].shape == (2, 2, 3) and coeffs[-1][0].shape == (2, 8, 12)
    np.testing.assert_allclose(np.asarray(wavelets.waverec2(coeffs, "db3")), np.asarray(x), atol=1e-12)
    energy = sum(float(jnp.sum(jnp.abs(c) ** 2)) for c in [coeffs[0]] + [b for d in coeffs[1:] for b in d])
    np.testing.assert_allclose(energy, float(jnp.sum(jnp.abs(x) ** 2)), rtol=1e-12)


@pytest.mark.parametrize("name", ["haar", "db4"])
def test_forward_and_inverse_are_adjoint(x64, name):
    x = jnp.asarray(_random((16, 16), seed=3))
    c = jnp.asarray(_random((16, 16), seed=4))
    lhs = np.vdot(np.asarray(wavelets.forward(x, name, 2)), np.asarray(c))
    rhs = np.vdot(np.asarray(x), np.asarray(wavelets.inverse(c, name, 2)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_float32_orthogonality():
    x = jnp.asarray(_random((2, 32, 32), seed=5)).astype(jnp.complex64)
    c = wavelets.forward(x, "db4", 3)
    assert c.dtype == jnp.complex64
    back = wavelets.inverse(c, "db4", 3)
    assert float(jnp.max(jnp.abs(back - x))) < 1e-5
    xr = x.real
    assert wavelets.forward(xr, "db4", 3).dtype == jnp.float32


def test_max_level_of_tiny_sizes_still_orthogonal(x64):
    # Periodisation stays orthogonal even when the filter is longer than the signal.
    x = jnp.asarray(_random((8, 8), seed=6))
    c = wavelets.forward(x, "db4", 3)  # the last level acts on 2x2 blocks with 8 taps
    np.testing.assert_allclose(np.asarray(wavelets.inverse(c, "db4", 3)), np.asarray(x), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(c)), np.linalg.norm(np.asarray(x)), rtol=1e-12)


# ----------------------------------------------------------------------------- layout and batching


def test_forward_packs_wavedec2_in_mallat_layout(x64):
    x = jnp.asarray(_random((16, 32), seed=7))
    c = np.asarray(wavelets.forward(x, "db2", 2))
    c_a, (h2, v2, d2), (h1, v1, d1) = [np.asarray(a) if not isinstance(a, tuple) else tuple(map(np.asarray, a))
                                       for a in wavelets.wavedec2(x, "db2", 2)]
    np.testing.assert_array_equal(c[:4, :8], c_a)
    np.testing.assert_array_equal(c[:4, 8:16], v2)
    np.testing.assert_array_equal(c[4:8, :8], h2)
    np.testing.assert_array_equal(c[4:8, 8:16], d2)
    np.testing.assert_array_equal(c[:8, 16:], v1)
    np.testing.assert_array_equal(c[8:, :16], h1)
    np.testing.assert_array_equal(c[8:, 16:], d1)
    mask = wavelets.approximation_mask((16, 32), 2)
    assert mask.sum() == 4 * 8 and mask[:4, :8].all()


def test_band_orientation():
    # Horizontal stripes (varying along H) live in cH, vertical stripes in cV.
    rows = np.tile(np.array([1.0, -1.0] * 4)[:, None], (1, 8))
    _, (c_h, c_v, c_d) = wavelets.dwt2(jnp.asarray(rows), "haar")
    assert float(jnp.sum(c_h ** 2)) > 1 and float(jnp.sum(c_v ** 2)) < 1e-10
    _, (c_h, c_v, c_d) = wavelets.dwt2(jnp.asarray(rows.T), "haar")
    assert float(jnp.sum(c_v ** 2)) > 1 and float(jnp.sum(c_h ** 2)) < 1e-10


def test_batched_equals_one_by_one_and_real_imaginary_split(x64):
    x = jnp.asarray(_random((2, 3, 16, 16), seed=8))
    batched = np.asarray(wavelets.forward(x, "db4", 2))
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(batched[i, j], np.asarray(wavelets.forward(x[i, j], "db4", 2)), atol=1e-13)
    split = wavelets.forward(x.real, "db4", 2) + 1j * wavelets.forward(x.imag, "db4", 2)
    np.testing.assert_allclose(batched, np.asarray(split), atol=1e-13)


def test_jit_vmap_and_grad(x64):
    x = jnp.asarray(_random((16, 16), seed=9, complex_=False))
    jitted = jax.jit(lambda v: wavelets.forward(v, "db2", 2))(x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(wavelets.forward(x, "db2", 2)), atol=1e-13)
    vmapped = jax.vmap(lambda v: wavelets.forward(v, "db2", 2))(jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(np.asarray(vmapped[1]), 2 * np.asarray(jitted), atol=1e-12)
    # Parseval: grad ||W x||^2 = 2 x.
    g = jax.grad(lambda v: jnp.sum(wavelets.forward(v, "db4", 2) ** 2))(x)
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(x), atol=1e-12)


def test_integer_input_is_promoted():
    c = wavelets.forward(jnp.ones((8, 8), jnp.int32), "haar", 1)
    assert jnp.issubdtype(c.dtype, jnp.floating)


# ----------------------------------------------------------------------------- errors


def test_errors_are_clear():
    x = jnp.zeros((12, 16))
    with pytest.raises(ValueError, match=r"divisible by 2\*\*3 = 8"):
        wavelets.forward(x, "db4", 3)
    with pytest.raises(ValueError, match="levels must be >= 1"):
        wavelets.forward(x, "db4", 0)
    with pytest.raises(TypeError, match="levels"):
        wavelets.forward(x, "db4", 1.5)
    with pytest.raises(ValueError, match="not supported"):
        wavelets.forward(x, "db40", 1)
    with pytest.raises(ValueError, match="not supported"):
        wavelets.forward(x, "sym4", 1)
    with pytest.raises(TypeError, match="wavelet"):
        wavelets.forward(x, 4, 1)
    with pytest.raises(ValueError, match="at least 2 axes"):
        wavelets.forward(jnp.zeros(8), "haar", 1)
    with pytest.raises(ValueError, match="one shape"):
        wavelets.idwt2((jnp.zeros((4, 4)), (jnp.zeros((4, 4)), jnp.zeros((4, 4)), jnp.zeros((2, 4)))), "haar")
    assert wavelets.max_level((12, 16)) == 2
    assert wavelets.max_level((64, 64)) == 6


# ----------------------------------------------------------------------------- PyWavelets (optional)


@pytest.mark.parametrize("name", CHECKED)
@pytest.mark.parametrize("levels", [3])
def test_matches_pywavelets(x64, name, levels):
    pywt = pytest.importorskip("pywt", reason="PyWavelets is an optional cross-check, not a dependency")
    np.testing.assert_allclose(wavelets.filters(name)[0], pywt.Wavelet(name).dec_lo, atol=1e-14)
    np.testing.assert_allclose(wavelets.filters(name)[1], pywt.Wavelet(name).dec_hi, atol=1e-14)
    x = _random((16, 24), seed=10 + levels, complex_=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "level too high" for short filters on small images
        ref_list = pywt.wavedec2(x, name, mode="periodization", level=levels)
        ref_packed, _ = pywt.coeffs_to_array(ref_list)
    np.testing.assert_allclose(np.asarray(wavelets.forward(jnp.asarray(x), name, levels)), ref_packed, atol=1e-12)
    ours = wavelets.wavedec2(jnp.asarray(x), name, levels)
    np.testing.assert_allclose(np.asarray(ours[0]), ref_list[0], atol=1e-12)
    for mine, theirs in zip(ours[1:], ref_list[1:]):
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(np.asarray(a), b, atol=1e-12)
