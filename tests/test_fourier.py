"""Tests of mrijax.fourier: the centred orthonormal DFT and the sampling operator A = P_Omega F."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from mrijax import fourier

# Relative tolerances for inner products and round trips.
TOL32 = 1e-5
TOL64 = 1e-12


def _complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _random_mask(rng, shape, rate=0.4):
    mask = rng.random(shape) < rate
    mask[..., shape[-2] // 2, shape[-1] // 2] = True  # keep DC sampled, as every mask does
    return mask


def _unit_maps(rng, coils, h, w, dtype=np.complex128):
    """Random coil maps normalised so that sum_c |S_c|^2 = 1 at every pixel."""
    maps = _complex(rng, (coils, h, w))
    return (maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))).astype(dtype)


def _vdot(a, b):
    """<a, b> = sum conj(a) b in float64/complex128, whatever the inputs' precision."""
    return np.vdot(np.asarray(a, np.complex128).ravel(), np.asarray(b, np.complex128).ravel())


def _numpy_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


# --------------------------------------------------------------------------- fft2c / ifft2c

@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (2, 3, 6, 5)])
def test_fft2c_matches_numpy_definition_float32(shape):
    rng = np.random.default_rng(0)
    x = _complex(rng, shape, np.complex64)
    expected = _numpy_fft2c(x.astype(np.complex128))
    got = np.asarray(fourier.fft2c(x))
    assert got.dtype == np.complex64
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL32 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (2, 6, 5)])
def test_fft2c_matches_numpy_definition_float64(x64, shape):
    rng = np.random.default_rng(1)
    x = _complex(rng, shape)
    got = np.asarray(fourier.fft2c(x))
    assert got.dtype == np.complex128
    np.testing.assert_allclose(got, _numpy_fft2c(x), rtol=0, atol=TOL64 * np.abs(x).sum() ** 0.5)


def test_fft2c_puts_dc_at_centre_for_even_and_odd_sizes():
    for h, w in [(8, 8), (7, 9), (6, 5)]:
        k = np.array(fourier.fft2c(np.ones((h, w), np.float32)))
        # A constant image has all its energy at DC, which sits at (H//2, W//2): sqrt(HW).
        assert abs(k[h // 2, w // 2] - np.sqrt(h * w)) < 1e-4
        k[h // 2, w // 2] = 0
        assert np.abs(k).max() < 1e-5


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (3, 6, 5)])
def test_ifft2c_inverts_fft2c_and_parseval(x64, shape):
    rng = np.random.default_rng(2)
    x = _complex(rng, shape)
    k = fourier.fft2c(x)
    np.testing.assert_allclose(np.asarray(fourier.ifft2c(k)), x, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(fourier.fft2c(fourier.ifft2c(x))), x, rtol=0, atol=1e-13)
    # Parseval, per image.
    energy_x = np.sum(np.abs(x) ** 2, axis=(-2, -1))
    energy_k = np.sum(np.abs(np.asarray(k)) ** 2, axis=(-2, -1))
    np.testing.assert_allclose(energy_k, energy_x, rtol=TOL64)


def test_round_trip_and_parseval_float32():
    rng = np.random.default_rng(3)
    x = _complex(rng, (16, 16), np.complex64)
    k = fourier.fft2c(x)
    np.testing.assert_allclose(np.asarray(fourier.ifft2c(k)), x, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.sum(np.abs(np.asarray(k)) ** 2), np.sum(np.abs(x) ** 2), rtol=TOL32)


# --------------------------------------------------------------------------- dtypes

def test_dtypes_default_and_real_promotion():
    x = np.ones((4, 4), np.float32)
    mask = np.ones((4, 4), bool)
    for out in (fourier.fft2c(x), fourier.ifft2c(x), fourier.forward(x, mask), fourier.adjoint(x, mask),
                fourier.null_space_projection(x, mask)):
        assert out.dtype == jnp.complex64
    # float64 NumPy input without x64 is canonicalised to complex64 too.
    assert fourier.fft2c(np.ones((4, 4))).dtype == jnp.complex64
    assert fourier.fft2c(np.ones((4, 4), np.int32)).dtype == jnp.complex64


def test_dtypes_under_x64(x64):
    mask = np.ones((4, 4), bool)
    x = np.ones((4, 4))
    for out in (fourier.fft2c(x), fourier.forward(x, mask), fourier.adjoint(x, mask)):
        assert out.dtype == jnp.complex128
    # Single precision stays single precision.
    assert fourier.fft2c(np.ones((4, 4), np.float32)).dtype == jnp.complex64
    # A real image gives the same k-space as the same image stored as complex.
    xr = np.random.default_rng(4).standard_normal((6, 6))
    np.testing.assert_array_equal(np.asarray(fourier.fft2c(xr)), np.asarray(fourier.fft2c(xr.astype(complex))))


# --------------------------------------------------------------------------- adjointness

def _adjoint_relative_error(x, y, mask, coil_maps=None):
    lhs = _vdot(fourier.forward(x, mask, coil_maps), y)     # <A x, y>
    rhs = _vdot(x, fourier.adjoint(y, mask, coil_maps))     # <x, A* y>
    return abs(lhs - rhs) / abs(lhs)


@pytest.mark.parametrize("shape", [(16, 16), (15, 12), (2, 8, 8)])
def test_adjoint_dot_product_single_coil_float32(shape):
    rng = np.random.default_rng(5)
    x = _complex(rng, shape, np.complex64)
    y = _complex(rng, shape, np.complex64)
    mask = _random_mask(rng, shape[-2:])
    assert _adjoint_relative_error(x, y, mask) <= TOL32


@pytest.mark.parametrize("shape", [(16, 16), (15, 12), (2, 8, 8)])
def test_adjoint_dot_product_single_coil_float64(x64, shape):
    rng = np.random.default_rng(6)
    x, y = _complex(rng, shape), _complex(rng, shape)
    mask = _random_mask(rng, shape[-2:])
    assert _adjoint_relative_error(x, y, mask) <= TOL64


def test_adjoint_dot_product_multi_coil_float32():
    rng = np.random.default_rng(7)
    coils, h, w = 4, 12, 10
    x = _complex(rng, (h, w), np.complex64)
    y = _complex(rng, (coils, h, w), np.complex64)
    maps = _complex(rng, (coils, h, w), np.complex64)  # the adjoint holds for any maps
    mask = _random_mask(rng, (h, w))
    assert _adjoint_relative_error(x, y, mask, maps) <= TOL32


def test_adjoint_dot_product_multi_coil_float64_batched(x64):
    rng = np.random.default_rng(8)
    batch, coils, h, w = 2, 3, 9, 8
    x = _complex(rng, (batch, h, w))
    y = _complex(rng, (batch, coils, h, w))
    maps = _complex(rng, (batch, coils, h, w))
    mask = _random_mask(rng, (batch, h, w))  # a mask per image
    assert _adjoint_relative_error(x, y, mask, maps) <= TOL64


def test_multi_coil_forward_is_per_coil_single_coil_forward(x64):
    rng = np.random.default_rng(9)
    x = _complex(rng, (8, 8))
    maps = _complex(rng, (3, 8, 8))
    mask = _random_mask(rng, (8, 8))
    k = np.asarray(fourier.forward(x, mask, maps))
    for c in range(3):
        np.testing.assert_allclose(k[c], np.asarray(fourier.forward(maps[c] * x, mask)), atol=1e-13)
    np.testing.assert_allclose(k[:, ~mask], 0)


# --------------------------------------------------------------------------- projections

def test_range_and_null_space_projections(x64):
    rng = np.random.default_rng(10)
    x, z = _complex(rng, (2, 10, 12)), _complex(rng, (2, 10, 12))
    mask = _random_mask(rng, (10, 12))
    p_null = lambda v: fourier.null_space_projection(v, mask)
    p_range = lambda v: fourier.range_projection(v, mask)
    n, r = p_null(x), p_range(x)
    np.testing.assert_allclose(np.asarray(p_null(n)), np.asarray(n), atol=1e-13)      # idempotent
    np.testing.assert_allclose(np.asarray(p_range(r)), np.asarray(r), atol=1e-13)
    np.testing.assert_allclose(np.asarray(fourier.forward(n, mask)), 0, atol=1e-13)   # A P_N = 0
    np.testing.assert_allclose(np.asarray(r + n), x, atol=1e-13)                      # P_R + P_N = I
    np.testing.assert_allclose(np.asarray(fourier.forward(r, mask)),                  # A P_R = A
                               np.asarray(fourier.forward(x, mask)), atol=1e-13)
    # Orthogonal projections are self-adjoint, and the two parts are orthogonal.
    assert abs(_vdot(p_null(x), z) - _vdot(x, p_null(z))) < 1e-12 * abs(_vdot(x, z)) + 1e-12
    assert abs(_vdot(n, r)) < 1e-12 * np.linalg.norm(x) ** 2
    # The null-space part of a fully sampled operator is zero, of an empty one is everything.
    np.testing.assert_allclose(np.asarray(fourier.null_space_projection(x, np.ones((10, 12), bool))), 0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(fourier.null_space_projection(x, np.zeros((10, 12), bool))), x, atol=1e-13)


def test_null_space_projection_float32():
    rng = np.random.default_rng(11)
    x = _complex(rng, (16, 16), np.complex64)
    mask = _random_mask(rng, (16, 16))
    n = fourier.null_space_projection(x, mask)
    assert n.dtype == jnp.complex64
    scale = np.linalg.norm(x)
    assert np.linalg.norm(np.asarray(fourier.null_space_projection(n, mask) - n)) <= TOL32 * scale
    assert np.linalg.norm(np.asarray(fourier.forward(n, mask))) <= TOL32 * scale


# --------------------------------------------------------------------------- gather / scatter

def test_gather_scatter_adjoint_pair_and_inverse(x64):
    rng = np.random.default_rng(12)
    mask = _random_mask(rng, (9, 10))
    m = int(mask.sum())
    k = _complex(rng, (3, 9, 10))
    y = _complex(rng, (3, m))
    g = fourier.gather(k, mask)
    assert g.shape == (3, m)
    s = fourier.scatter(y, mask)
    assert s.shape == (3, 9, 10)
    # <gather k, y> == <k, scatter y>
    assert abs(_vdot(g, y) - _vdot(k, s)) <= TOL64 * abs(_vdot(g, y))
    np.testing.assert_array_equal(np.asarray(fourier.scatter(g, mask)), np.where(mask, k, 0))
    np.testing.assert_array_equal(np.asarray(fourier.gather(s, mask)), y)
    # Row-major order over the centred grid.
    np.testing.assert_array_equal(np.asarray(g[0]), k[0][mask])


def test_gather_scatter_under_jit_and_vmap_with_closed_over_mask():
    rng = np.random.default_rng(13)
    mask = _random_mask(rng, (8, 8))
    k = _complex(rng, (4, 8, 8), np.complex64)
    round_trip = jax.jit(jax.vmap(lambda kk: fourier.scatter(fourier.gather(kk, mask), mask)))
    np.testing.assert_array_equal(np.asarray(round_trip(k)), np.where(mask, k, 0))


def test_gather_scatter_errors():
    mask = np.ones((4, 4), bool)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(fourier.gather)(jnp.ones((4, 4)), jnp.asarray(mask))
    with pytest.raises(ValueError, match="2-D mask"):
        fourier.gather(jnp.ones((2, 4, 4)), np.ones((2, 4, 4), bool))
    with pytest.raises(ValueError, match="samples 16"):
        fourier.scatter(jnp.ones(15), mask)


# --------------------------------------------------------------------------- uncentred layout

@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (2, 6, 5)])
def test_uncentred_helpers_round_trip_and_match_numpy(x64, shape):
    rng = np.random.default_rng(14)
    x = _complex(rng, shape)
    mask = _random_mask(rng, shape)
    mu = np.asarray(fourier.to_uncentred_mask(mask))
    np.testing.assert_array_equal(np.asarray(fourier.from_uncentred_mask(mu)), mask)
    # DC of the centred mask moves to [0, 0].
    assert np.array_equal(mu[..., 0, 0], mask[..., shape[-2] // 2, shape[-1] // 2])
    k = fourier.fft2c(x)
    ku = np.asarray(fourier.to_uncentred_kspace(k))
    np.testing.assert_allclose(ku, np.fft.fft2(x, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(np.asarray(fourier.from_uncentred_kspace(ku)), np.asarray(k), atol=1e-12)
    # Same magnitudes on corresponding frequencies: only a unit-modulus phase differs.
    np.testing.assert_allclose(np.abs(np.fft.fftshift(ku, axes=(-2, -1))), np.abs(np.asarray(k)), atol=1e-12)


# --------------------------------------------------------------------------- batching

def test_single_mask_broadcasts_over_batch_and_per_image_masks():
    rng = np.random.default_rng(15)
    x = _complex(rng, (3, 2, 8, 8), np.complex64)
    one_mask = _random_mask(rng, (8, 8))
    per_image = _random_mask(rng, (3, 2, 8, 8))
    batched = np.asarray(fourier.forward(x, one_mask))
    per = np.asarray(fourier.forward(x, per_image))
    adj = np.asarray(fourier.adjoint(x, per_image))
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(batched[i, j], np.asarray(fourier.forward(x[i, j], one_mask)))
            np.testing.assert_array_equal(per[i, j], np.asarray(fourier.forward(x[i, j], per_image[i, j])))
            np.testing.assert_array_equal(adj[i, j], np.asarray(fourier.adjoint(x[i, j], per_image[i, j])))
    # A mask per batch row broadcasts over the remaining axis.
    row_masks = per_image[:, :1]
    np.testing.assert_array_equal(np.asarray(fourier.forward(x, row_masks))[:, 1],
                                  np.asarray(fourier.forward(x[:, 1], row_masks[:, 0])))


# --------------------------------------------------------------------------- gradients

def _directional_fd(f, x, v, h=1e-6):
    return (f(x + h * v) - f(x - h * v)) / (2 * h)


def test_jit_vmap_grad_through_forward_and_adjoint_matches_finite_differences(x64):
    rng = np.random.default_rng(16)
    mask = _random_mask(rng, (8, 8))
    maps = _unit_maps(rng, 3, 8, 8)
    target = _complex(rng, (3, 8, 8))

    def loss(x):  # real image -> real number, through A, A* and the SENSE operator
        k = fourier.forward(x, mask)
        z = fourier.adjoint(k * (1 + 0.5j), mask)
        r = fourier.forward(x, mask, maps) - target
        return jnp.sum(jnp.abs(z) ** 2 * x) + jnp.sum(jnp.abs(r) ** 2)

    loss_jit = jax.jit(loss)
    xs = rng.standard_normal((4, 8, 8))
    grads = np.asarray(jax.jit(jax.vmap(jax.grad(loss)))(xs))
    assert grads.dtype == np.float64
    for i in range(4):
        v = rng.standard_normal((8, 8))
        fd = _directional_fd(lambda t: float(loss_jit(t)), xs[i], v)
        assert abs(np.sum(grads[i] * v) - fd) <= 1e-7 * max(1.0, abs(fd))


def test_grad_complex_input_matches_finite_differences(x64):
    rng = np.random.default_rng(17)
    mask = _random_mask(rng, (6, 7))
    k0 = _complex(rng, (6, 7))
    loss = lambda x: jnp.sum(jnp.abs(fourier.forward(x, mask) - k0) ** 2)
    x = _complex(rng, (6, 7))
    g = np.asarray(jax.grad(loss)(x))
    # For a real loss of a complex input, JAX returns conj(dL/dz) * 2 so that the
    # directional derivative along v is Re(sum(g * v)).
    for _ in range(2):
        v = _complex(rng, (6, 7))
        fd = _directional_fd(lambda t: float(loss(t)), x, v)
        assert abs(np.real(np.sum(g * v)) - fd) <= 1e-7 * max(1.0, abs(fd))
    # Closed form: grad = 2 conj(A*(A x - k0)).
    np.testing.assert_allclose(g, 2 * np.conj(np.asarray(fourier.adjoint(fourier.forward(x, mask) - k0, mask))),
                               atol=1e-12)


# --------------------------------------------------------------------------- errors

def test_mask_with_wrong_shape_raises_value_error_naming_mask():
    x = jnp.ones((8, 8))
    for bad in (np.ones((8, 7), bool), np.ones((8,), bool), np.ones((7, 8), bool)):
        with pytest.raises(ValueError, match="mask"):
            fourier.forward(x, bad)
        with pytest.raises(ValueError, match="mask"):
            fourier.adjoint(x, bad)
        with pytest.raises(ValueError, match="mask"):
            fourier.null_space_projection(x, bad)
    with pytest.raises(TypeError, match="mask"):
        fourier.forward(x, np.ones((8, 8), complex))


def test_bad_image_and_coil_map_shapes_raise():
    with pytest.raises(ValueError, match="x must have at least 2 axes"):
        fourier.fft2c(jnp.ones(8))
    with pytest.raises(ValueError, match="coil_maps"):
        fourier.forward(jnp.ones((8, 8)), np.ones((8, 8), bool), coil_maps=jnp.ones((3, 8, 7)))
    with pytest.raises(TypeError, match="x must be an array"):
        fourier.fft2c([[1.0, 2.0], [3.0, 4.0]])


def test_mask_with_incompatible_batch_axes_raises_value_error_naming_mask():
    with pytest.raises(ValueError, match="mask"):
        fourier.forward(jnp.ones((2, 8, 8)), np.ones((3, 8, 8), bool))
