"""Tests for mrijax.models.Cascade and reconstruction_map on cascades."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from mrijax import dc, fourier
from mrijax.models import Cascade, count_params, reconstruction_map
from mrijax.models.cascade import _conv_same, _conv_same_im2col, _conv_same_shift_sum

H = W = 16


def _line_mask(h=H, w=W, every=3):
    mask = np.zeros((h, w), bool)
    mask[:, ::every] = True
    mask[:, w // 2 - 1:w // 2 + 2] = True
    return mask


def _complex(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _problem(rng, lead=(2,), h=H, w=W):
    x = _complex(rng, lead + (h, w))
    mask = _line_mask(h, w)
    k0 = np.asarray(fourier.forward(jnp.asarray(x), mask))
    x_zf = np.asarray(fourier.adjoint(jnp.asarray(k0), mask))
    return x_zf, k0, mask


def _small(**kw):
    config = dict(n_cascades=2, n_convs=3, features=8, kernel_size=3)
    config.update(kw)
    return Cascade(**config)


def _random_params(model, x_zf, k0, mask, seed=0, scale=0.3):
    """Random params of the model's structure, biases non-zero (init's zeros would hide bias bugs).

    Drawn with NumPy from the shapes of ``jax.eval_shape(model.init, ...)``: JAX's random
    samplers compile slowly on CPU, once per shape, which would dominate this file's time.
    """
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), x_zf, k0, mask)
    rng = np.random.default_rng(seed)

    def draw(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        return jnp.asarray(rng.standard_normal(s.shape) * min(scale, np.sqrt(2.0 / fan_in)), s.dtype)

    return jax.tree_util.tree_map(draw, shapes)


def _to_f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


# ----------------------------------------------------------------------------- parameters

def test_d5c5_parameter_count_and_names():
    rng = np.random.default_rng(0)
    x_zf, k0, mask = _problem(rng, lead=(), h=16, w=16)
    model = Cascade()
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x_zf, k0, mask)
    # Hand count, per cascade: 2->64, three 64->64, 64->2 convolutions of 3x3 with biases.
    per_block = (3 * 3 * 2 * 64 + 64) + 3 * (3 * 3 * 64 * 64 + 64) + (3 * 3 * 64 * 2 + 2)
    assert per_block == 113154
    assert count_params(shapes) == 5 * per_block == 565770
    p = shapes["params"]
    assert sorted(p) == [f"block_{c}" for c in range(5)]
    assert sorted(p["block_3"]) == [f"conv_{l}" for l in range(5)]
    assert p["block_0"]["conv_0"]["kernel"].shape == (3, 3, 2, 64)       # HWIO
    assert p["block_4"]["conv_2"]["kernel"].shape == (3, 3, 64, 64)
    assert p["block_2"]["conv_4"]["kernel"].shape == (3, 3, 64, 2)
    assert p["block_2"]["conv_4"]["bias"].shape == (2,)


def test_small_parameter_count_and_learned_noise_level():
    rng = np.random.default_rng(0)
    x_zf, k0, mask = _problem(rng)
    model = Cascade(n_cascades=2, n_convs=3, features=8, kernel_size=5)
    # conv_0: 5*5*2*8 + 8, conv_1: 5*5*8*8 + 8, conv_2: 5*5*8*2 + 2.
    assert count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0), x_zf, k0, mask)) == 2 * (408 + 1608 + 402)
    learned = Cascade(n_cascades=2, n_convs=3, features=8, kernel_size=5, noise_level=0.5,
                      learn_noise_level=True)
    shapes = jax.eval_shape(learned.init, jax.random.PRNGKey(0), x_zf, k0, mask)
    assert count_params(shapes) == 2 * (408 + 1608 + 402) + 2
    assert shapes["params"]["log_noise_level"].shape == (2,)
    # A real init (one conv per block keeps JAX's slow-compiling samplers to one shape).
    learned = Cascade(n_cascades=2, n_convs=1, noise_level=0.5, learn_noise_level=True)
    params = learned.init(jax.random.PRNGKey(0), x_zf, k0, mask)
    np.testing.assert_allclose(params["params"]["log_noise_level"], np.log(0.5) * np.ones(2), rtol=1e-6)
    assert float(jnp.abs(params["params"]["block_0"]["conv_0"]["kernel"]).max()) > 0
    np.testing.assert_array_equal(params["params"]["block_1"]["conv_0"]["bias"], 0)
    # At initialisation the learned lambda equals the fixed one: same outputs.
    fixed = Cascade(n_cascades=2, n_convs=1, noise_level=0.5)
    fixed_params = {"params": {k: v for k, v in params["params"].items() if k != "log_noise_level"}}
    np.testing.assert_allclose(learned.apply(params, x_zf, k0, mask), fixed.apply(fixed_params, x_zf, k0, mask),
                               rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- known answers

def _zero_last_conv(params):
    p = jax.tree_util.tree_map(lambda a: a, params)  # copy
    for name, block in p["params"].items():
        if name.startswith("block_"):
            last = max(block, key=lambda s: int(s.split("_")[1]))
            block[last] = jax.tree_util.tree_map(jnp.zeros_like, block[last])
    return p


@pytest.mark.parametrize("noise_level", [None, 0.7])
def test_zero_cnn_is_repeated_data_consistency(x64, noise_level):
    rng = np.random.default_rng(1)
    _, k0, mask = _problem(rng)
    x = _complex(rng, (2, H, W))  # an arbitrary image, NOT the zero-filled one
    model = _small(n_cascades=3, noise_level=noise_level)
    params = _zero_last_conv(_to_f64(_random_params(model, x, k0, mask)))
    out = model.apply(params, x, k0, mask)
    expected = jnp.asarray(x)
    for _ in range(3):
        expected = dc.data_consistency(expected, k0, mask, noise_level)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    if noise_level is None:
        # Exact DC is a projection: n_cascades applications equal one.
        np.testing.assert_allclose(out, dc.data_consistency(x, k0, mask), rtol=1e-12, atol=1e-12)
        # And the output keeps the measurements exactly.
        np.testing.assert_allclose(fourier.forward(out, mask), k0, atol=1e-12)


def test_residual_adds_block_input_and_dc_uses_original_k0(x64):
    """Against a hand-written loop: residual on each block's input, DC with the ORIGINAL k0 every time."""
    rng = np.random.default_rng(2)
    x_zf, k0, mask = _problem(rng)
    model = _small(n_cascades=3, small_conv_impl="conv")
    params = _to_f64(_random_params(model, x_zf, k0, mask))
    x = jnp.asarray(x_zf)
    for c in range(3):
        h = jnp.stack([x.real, x.imag], -1)
        inp = h
        convs = params["params"][f"block_{c}"]
        for l in range(3):
            h = _conv_same(h, convs[f"conv_{l}"]["kernel"]) + convs[f"conv_{l}"]["bias"]
            if l < 2:
                h = jnp.maximum(h, 0)
        h = h + inp
        x = dc.data_consistency(h[..., 0] + 1j * h[..., 1], k0, mask)
    np.testing.assert_allclose(model.apply(params, x_zf, k0, mask), x, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- conv implementations

@pytest.mark.parametrize("ksize", [1, 3, 5])
@pytest.mark.parametrize("c_in,c_out", [(2, 7), (7, 2), (2, 2)])
def test_matmul_convolutions_equal_lax_conv(x64, ksize, c_in, c_out):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 9, 11, c_in)))
    kernel = jnp.asarray(rng.standard_normal((ksize, ksize, c_in, c_out)))
    ref = _conv_same(x, kernel)
    # The reference itself is checked against a direct sum once (cross-correlation, zero padding).
    p = ksize // 2
    xp = np.pad(np.asarray(x), ((0, 0), (p, p), (p, p), (0, 0)))
    direct = sum(np.einsum("nhwc,co->nhwo", xp[:, dy:dy + 9, dx:dx + 11], np.asarray(kernel)[dy, dx])
                 for dy in range(ksize) for dx in range(ksize))
    np.testing.assert_allclose(ref, direct, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_conv_same_im2col(x, kernel), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_conv_same_shift_sum(x, kernel), ref, rtol=1e-12, atol=1e-12)


def test_small_conv_impls_agree_values_and_gradients(x64):
    rng = np.random.default_rng(4)
    x_zf, k0, mask = _problem(rng)
    conv_model = _small(small_conv_impl="conv")
    matmul_model = _small(small_conv_impl="matmul")
    params = _to_f64(_random_params(conv_model, x_zf, k0, mask))
    # Identical parameter pytrees.
    p_matmul = jax.eval_shape(matmul_model.init, jax.random.PRNGKey(0), x_zf, k0, mask)
    assert jax.tree_util.tree_structure(p_matmul) == jax.tree_util.tree_structure(params)
    assert jax.tree_util.tree_map(lambda a: a.shape, p_matmul) == jax.tree_util.tree_map(lambda a: a.shape, params)

    np.testing.assert_allclose(matmul_model.apply(params, x_zf, k0, mask),
                               conv_model.apply(params, x_zf, k0, mask), rtol=1e-11, atol=1e-11)

    def loss(model):
        return lambda p, x: jnp.sum(jnp.abs(model.apply(p, x, k0, mask) - 0.3) ** 2)

    gp_c, gx_c = jax.grad(loss(conv_model), argnums=(0, 1))(params, jnp.asarray(x_zf))
    gp_m, gx_m = jax.grad(loss(matmul_model), argnums=(0, 1))(params, jnp.asarray(x_zf))
    np.testing.assert_allclose(gx_m, gx_c, rtol=1e-10, atol=1e-10)
    for a, b in zip(jax.tree_util.tree_leaves(gp_m), jax.tree_util.tree_leaves(gp_c)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(gp_c)) > 0


def test_auto_impl_matches_explicit_ones():
    rng = np.random.default_rng(5)
    x_zf, k0, mask = _problem(rng)
    model = _small()
    assert model.small_conv_impl == "auto"
    params = _random_params(model, x_zf, k0, mask)
    out = model.apply(params, x_zf, k0, mask)
    np.testing.assert_allclose(out, _small(small_conv_impl="conv").apply(params, x_zf, k0, mask), atol=1e-4)


@pytest.mark.parametrize("noise", [dict(), dict(noise_level=0.5, learn_noise_level=True)])
def test_remat_same_values_and_gradients(x64, noise):
    rng = np.random.default_rng(6)
    x_zf, k0, mask = _problem(rng)
    model, model_remat = _small(**noise), _small(remat=True, **noise)
    params = _to_f64(_random_params(model, x_zf, k0, mask))
    assert (jax.tree_util.tree_structure(jax.eval_shape(model_remat.init, jax.random.PRNGKey(0), x_zf, k0, mask))
            == jax.tree_util.tree_structure(params))
    np.testing.assert_allclose(model_remat.apply(params, x_zf, k0, mask), model.apply(params, x_zf, k0, mask),
                               rtol=1e-13, atol=1e-13)
    loss = lambda m: (lambda p, x: jnp.sum(jnp.abs(m.apply(p, x, k0, mask)) ** 2))
    g1 = jax.grad(loss(model), argnums=(0, 1))(params, jnp.asarray(x_zf))
    g2 = jax.jit(jax.grad(loss(model_remat), argnums=(0, 1)))(params, jnp.asarray(x_zf))
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_remat_reduces_gradient_memory():
    """XLA's buffer assignment for an input gradient: remat must keep far fewer activations.

    (Per-block jax.checkpoint in unrolled code saves nothing on XLA:CPU; this guards against
    going back to it.)
    """
    n, batch, cascades = 32, 2, 4
    mask = _line_mask(n, n)
    x = jax.ShapeDtypeStruct((batch, n, n), jnp.complex64)
    model = Cascade(n_cascades=cascades, n_convs=3, features=16)
    params = _random_params(model, x, x, mask)

    def temp_bytes(remat):
        f = reconstruction_map(Cascade(n_cascades=cascades, n_convs=3, features=16, remat=remat), params, mask)
        grad = jax.jit(jax.grad(lambda k: jnp.sum(jnp.abs(f(k)) ** 2)))
        return grad.lower(x).compile().memory_analysis().temp_size_in_bytes

    activation = batch * n * n * 16 * 4   # one float32 hidden activation
    plain, remat = temp_bytes(False), temp_bytes(True)
    assert plain >= cascades * activation          # all cascades' activations are kept
    assert remat < plain / 2, (plain, remat)


# ----------------------------------------------------------------------------- batching / transforms

def test_batched_equals_one_by_one_and_any_leading_axes(x64):
    rng = np.random.default_rng(7)
    x_zf, k0, mask = _problem(rng, lead=(2, 3))
    model = _small()
    params = _to_f64(_random_params(model, x_zf, k0, mask))
    batched = model.apply(params, x_zf, k0, mask)
    assert batched.shape == (2, 3, H, W) and batched.dtype == jnp.complex128
    for i in range(2):
        for j in range(3):
            single = model.apply(params, x_zf[i, j], k0[i, j], mask)   # no leading axes at all
            assert single.shape == (H, W)
            np.testing.assert_allclose(batched[i, j], single, rtol=1e-12, atol=1e-12)
    # vmap over the batch axis gives the same.
    vmapped = jax.vmap(lambda x, k: model.apply(params, x, k, mask))(x_zf[0], k0[0])
    np.testing.assert_allclose(vmapped, batched[0], rtol=1e-12, atol=1e-12)


def test_per_image_masks_broadcast(x64):
    rng = np.random.default_rng(8)
    x = _complex(rng, (2, H, W))
    masks = np.stack([_line_mask(every=3), _line_mask(every=4)])
    k0 = fourier.forward(jnp.asarray(x), masks)
    x_zf = fourier.adjoint(k0, masks)
    model = _small()
    params = _to_f64(_random_params(model, x_zf, k0, masks))
    out = model.apply(params, x_zf, k0, masks)
    for i in range(2):
        np.testing.assert_allclose(out[i], model.apply(params, x_zf[i], k0[i], masks[i]), rtol=1e-12, atol=1e-12)


def test_jit_equals_eager_and_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(9)
    x_zf, k0, mask = _problem(rng, lead=(1,))
    model = _small()
    params = _to_f64(_random_params(model, x_zf, k0, mask))
    np.testing.assert_allclose(jax.jit(model.apply)(params, x_zf, k0, mask), model.apply(params, x_zf, k0, mask),
                               rtol=1e-12, atol=1e-12)
    target = jnp.asarray(_complex(rng, x_zf.shape))

    def loss(p, x, k):
        return jnp.sum(jnp.abs(model.apply(p, x, k, mask) - target) ** 2)

    gp, gx, gk = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, jnp.asarray(x_zf), jnp.asarray(k0))
    eps = 1e-6
    # Directional derivatives.  For real L of complex z, jax.grad returns dL/dRe z - i dL/dIm z,
    # so d/dt L(z + t v) = Re(sum(grad * v)) (no conjugate).
    v = jnp.asarray(_complex(rng, x_zf.shape))
    fd = (loss(params, x_zf + eps * v, k0) - loss(params, x_zf - eps * v, k0)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(jnp.real(gx * v)), fd, rtol=1e-6)
    vk = fourier.apply_mask(_complex(rng, k0.shape), mask)
    fd = (loss(params, x_zf, k0 + eps * vk) - loss(params, x_zf, k0 - eps * vk)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(jnp.real(gk * vk)), fd, rtol=1e-6)
    # Parameters: one random direction in the whole pytree.
    leaves, tree = jax.tree_util.tree_flatten(params)
    dirs = jax.tree_util.tree_unflatten(tree, [jnp.asarray(rng.standard_normal(a.shape)) for a in leaves])
    shift = lambda s: jax.tree_util.tree_map(lambda a, d: a + s * d, params, dirs)
    fd = (loss(shift(eps), x_zf, k0) - loss(shift(-eps), x_zf, k0)) / (2 * eps)
    analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(dirs)))
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


def test_float32_inputs_give_complex64():
    rng = np.random.default_rng(10)
    x_zf, k0, mask = _problem(rng)
    x_zf, k0 = x_zf.astype(np.complex64), k0.astype(np.complex64)
    model = _small()
    params = _random_params(model, x_zf, k0, mask)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(params))
    out = model.apply(params, x_zf, k0, mask)
    assert out.dtype == jnp.complex64 and out.shape == x_zf.shape
    assert np.all(np.isfinite(np.asarray(out)))


# ----------------------------------------------------------------------------- reconstruction_map

def test_reconstruction_map_cascade(x64):
    rng = np.random.default_rng(11)
    x = _complex(rng, (2, H, W))
    mask = _line_mask()
    k_full = fourier.fft2c(jnp.asarray(x))
    model = _small()
    params = _to_f64(_random_params(model, x, k_full, mask))
    f = reconstruction_map(model, params, mask)
    k0 = fourier.forward(jnp.asarray(x), mask)
    expected = model.apply(params, fourier.adjoint(k0, mask), k0, mask)
    np.testing.assert_allclose(f(k_full), expected, rtol=1e-12, atol=1e-12)
    # Values off the mask are not measurements: they are ignored.
    junk = jnp.where(jnp.asarray(mask), 0, jnp.asarray(_complex(rng, (2, H, W))))
    np.testing.assert_allclose(f(k_full + junk), expected, rtol=1e-12, atol=1e-12)
    # Pure: works under jit and grad.
    g = jax.jit(jax.grad(lambda k: jnp.sum(jnp.abs(f(k)) ** 2)))(k0)
    assert g.shape == k0.shape and float(jnp.abs(g).max()) > 0
    np.testing.assert_allclose(jnp.where(jnp.asarray(mask), 0, g), 0, atol=1e-12)


def test_reconstruction_map_cascade_multicoil_zero_cnn_is_repeated_sense_dc(x64):
    rng = np.random.default_rng(12)
    x = _complex(rng, (H, W))
    maps = _complex(rng, (3, H, W))
    maps = maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))   # sum_c |S_c|^2 = 1
    mask = _line_mask()
    model = _small()
    params = _zero_last_conv(_to_f64(_random_params(model, x, fourier.fft2c(jnp.asarray(x)), mask)))
    f = reconstruction_map(model, params, mask, coil_maps=maps)
    k = fourier.forward(jnp.asarray(x), mask, maps)
    out = f(k)
    assert out.shape == (H, W)
    # The zero CNN leaves only the SENSE DC, applied once per cascade (it is not idempotent
    # with coil maps: S* P S is not a projection unless S S* = I).
    expected = fourier.adjoint(k, mask, maps)
    for _ in range(model.n_cascades):
        expected = dc.data_consistency(expected, k, mask, coil_maps=maps)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=4), "kernel_size must be odd"),
    (dict(n_convs=0), "n_convs"),
    (dict(features=2.5), "features"),
    (dict(small_conv_impl="fft"), "small_conv_impl"),
    (dict(conv_impl="fft"), "conv_impl"),
    (dict(noise_level=-1.0), "noise_level"),
    (dict(learn_noise_level=True), "learn_noise_level"),
])
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Cascade(**kwargs)


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(13)
    x_zf, k0, mask = _problem(rng)
    model = _small()
    params = _random_params(model, x_zf, k0, mask)
    with pytest.raises(ValueError, match="k0 must have x_zf's shape"):
        model.apply(params, x_zf, k0[0], mask)
    with pytest.raises(ValueError, match="mask"):
        model.apply(params, x_zf, k0, mask[:, :-1])
    with pytest.raises(ValueError, match="x_zf"):
        model.apply(params, x_zf[0, 0], k0[0, 0], mask)
    with pytest.raises(TypeError, match="not a registered model"):
        reconstruction_map(object(), params, mask)


# ----------------------------------------------------------------------------- Winograd convolutions

from mrijax.models.cascade import conv_same_winograd, winograd_matrices  # noqa: E402


@pytest.mark.parametrize("tile,ksize", [(2, 3), (4, 3), (3, 3), (2, 5), (4, 5), (3, 1)])
def test_winograd_matrices_compute_the_1d_correlation(tile, ksize):
    a_t, g, b_t = winograd_matrices(tile, ksize)
    n = tile + ksize - 1
    assert a_t.shape == (tile, n) and g.shape == (n, ksize) and b_t.shape == (n, n)
    rng = np.random.default_rng(20)
    for _ in range(3):
        d, k = rng.standard_normal(n), rng.standard_normal(ksize)
        direct = np.array([sum(k[j] * d[i + j] for j in range(ksize)) for i in range(tile)])
        np.testing.assert_allclose(a_t @ ((g @ k) * (b_t @ d)), direct, rtol=1e-12, atol=1e-12)
    # F(2, 3) with the points 0, 1, -1 (and infinity): the classic integer transforms.
    if (tile, ksize) == (2, 3):
        np.testing.assert_array_equal(a_t, [[1, 1, 1, 0], [0, 1, -1, 1]])
        np.testing.assert_array_equal(g, [[1, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 1]])


@pytest.mark.parametrize("h,w,ksize,tile", [
    (9, 11, 3, 2), (8, 8, 3, 2), (6, 9, 3, 4), (1, 2, 3, 2), (7, 8, 5, 2), (5, 4, 1, 3)])
def test_winograd_conv_equals_lax_conv_values_and_gradients(x64, h, w, ksize, tile):
    """Odd and even sides (partial tiles at the edge), images smaller than a tile, k = 1, 3, 5."""
    rng = np.random.default_rng(21)
    x = jnp.asarray(rng.standard_normal((2, h, w, 3)))
    kernel = jnp.asarray(rng.standard_normal((ksize, ksize, 3, 4)))
    cotangent = jnp.asarray(rng.standard_normal((2, h, w, 4)))

    @jax.jit
    def values_and_gradients(a, b, ct):
        ref, ref_vjp = jax.vjp(_conv_same, a, b)
        out, out_vjp = jax.vjp(lambda a_, b_: conv_same_winograd(a_, b_, tile), a, b)
        return (out, *out_vjp(ct)), (ref, *ref_vjp(ct))

    (out, gx, gk), (ref, gx_ref, gk_ref) = values_and_gradients(x, kernel, cotangent)
    assert out.shape == (2, h, w, 4) and out.dtype == jnp.float64
    np.testing.assert_allclose(out, ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-11, atol=1e-11)     # input gradient
    np.testing.assert_allclose(gk, gk_ref, rtol=1e-11, atol=1e-11)     # kernel gradient


def test_winograd_conv_under_vmap_and_second_order(x64):
    rng = np.random.default_rng(22)
    x = jnp.asarray(rng.standard_normal((3, 2, 6, 5, 4)))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 4)))
    f = jax.jit(jax.vmap(lambda a: conv_same_winograd(a, kernel, 2)))
    np.testing.assert_allclose(f(x), _conv_same(x.reshape(6, 6, 5, 4), kernel).reshape(3, 2, 6, 5, 4),
                               rtol=1e-11, atol=1e-11)

    # The backward pass is itself a Winograd correlation, so it differentiates again.
    def hvp(conv):
        loss = lambda a: jnp.sum(jnp.sin(conv(a, kernel)))
        return jax.jit(jax.grad(lambda a: jnp.vdot(jax.grad(loss)(a), x[0])))(x[0])

    np.testing.assert_allclose(hvp(lambda a, b: conv_same_winograd(a, b, 2)), hvp(_conv_same), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tile,bound", [(2, 2e-5), (4, 3e-4)])
def test_winograd_float32_error_bound(tile, bound):
    """Float32 error of the Winograd convolution against float64, relative to the output RMS.

    Measured on 64 -> 64 channels (see conv_same_winograd): XLA 4.6e-6, F(2x2) 2.1e-6, F(4x4)
    4.4e-5.  The bounds leave ~7-10x margin; a wrong point set or transform blows far past them.
    """
    rng = np.random.default_rng(23)
    x = rng.standard_normal((1, 20, 20, 32))
    kernel = rng.standard_normal((3, 3, 32, 32)) * np.sqrt(2.0 / (9 * 32))
    cotangent = rng.standard_normal((1, 20, 20, 32))
    with jax.enable_x64(True):
        ref, ref_vjp = jax.vjp(lambda a: _conv_same(a, jnp.asarray(kernel)), jnp.asarray(x))
        ref, ref_grad = np.asarray(ref), np.asarray(ref_vjp(jnp.asarray(cotangent))[0])
    f32 = lambda a: jnp.asarray(a, jnp.float32)

    @jax.jit
    def value_and_input_gradient(a, b, ct):
        out, out_vjp = jax.vjp(lambda a_: conv_same_winograd(a_, b, tile), a)
        return out, out_vjp(ct)[0]

    out, grad = value_and_input_gradient(f32(x), f32(kernel), f32(cotangent))
    assert out.dtype == jnp.float32
    rms = lambda a: np.sqrt(np.mean(a ** 2))
    assert np.abs(np.asarray(out, np.float64) - ref).max() / rms(ref) < bound
    assert np.abs(np.asarray(grad, np.float64) - ref_grad).max() / rms(ref_grad) < bound


def test_winograd_conv_bad_arguments_and_no_forward_mode():
    x, kernel = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    with pytest.raises(ValueError, match="odd side"):
        conv_same_winograd(x, jnp.ones((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="kernel"):
        conv_same_winograd(x, jnp.ones((3, 3, 5, 2)))
    with pytest.raises(ValueError, match="tile"):
        conv_same_winograd(x, kernel, 2.5)
    with pytest.raises(ValueError, match="points"):
        conv_same_winograd(x, kernel, 9)
    # Documented limitation: reverse mode only (the input gradient is a custom VJP).
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda a: conv_same_winograd(a, kernel), (x,), (x,))


def test_conv_impls_agree_whole_cascade_values_and_gradients(x64):
    """conv_impl="winograd" is the same network as "xla": same parameters, values, gradients.

    ("winograd4" differs only in the tile, checked at the convolution level above.)
    """
    rng = np.random.default_rng(24)
    x_zf, k0, mask = _problem(rng, h=10, w=9)   # odd and even sides: partial tiles on both edges
    reference, model = _small(n_convs=3, conv_impl="xla"), _small(n_convs=3, conv_impl="winograd")  # conv_1: F -> F
    params = _to_f64(_random_params(reference, x_zf, k0, mask))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x_zf, k0, mask)
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(params)
    assert jax.tree_util.tree_map(lambda a: a.shape, shapes) == jax.tree_util.tree_map(lambda a: a.shape, params)
    # The option reaches the hidden convolutions on both code paths (plain loop and remat scan):
    # their programs hold the Winograd custom VJP, the reference's does not.
    for remat in (False, True):
        jaxpr = str(jax.make_jaxpr(_small(n_convs=3, conv_impl="winograd", remat=remat).apply)(params, x_zf, k0, mask))
        assert "custom_vjp_call" in jaxpr
    assert "custom_vjp_call" not in str(jax.make_jaxpr(reference.apply)(params, x_zf, k0, mask))

    target = jnp.asarray(_complex(rng, x_zf.shape))

    @jax.jit
    def values_and_gradients(p, x):
        def loss(m):
            return lambda p_, x_: jnp.sum(jnp.abs(m.apply(p_, x_, k0, mask) - target) ** 2)
        return [(m.apply(p, x, k0, mask), jax.grad(loss(m), argnums=(0, 1))(p, x)) for m in (model, reference)]

    (out, grads), (out_ref, grads_ref) = values_and_gradients(params, jnp.asarray(x_zf))
    np.testing.assert_allclose(out, out_ref, rtol=1e-11, atol=1e-11)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_auto_conv_impl_is_the_xla_convolution():
    rng = np.random.default_rng(25)
    x_zf, k0, mask = _problem(rng)
    model = _small(n_convs=4)
    assert model.conv_impl == "auto"
    params = _random_params(model, x_zf, k0, mask)
    # The same program: bitwise the same output.
    np.testing.assert_array_equal(model.apply(params, x_zf, k0, mask),
                                  _small(n_convs=4, conv_impl="xla").apply(params, x_zf, k0, mask))
