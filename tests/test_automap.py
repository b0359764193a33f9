"""Tests for mrijax.models.Automap and reconstruction_map on AUTOMAP."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.signal import correlate2d

from mrijax import fourier
from mrijax.models import Automap, count_params, reconstruction_map

N, M, HIDDEN, FEATURES = 8, 20, 16, 4


def _random_params(model, y, seed=0, scale=0.4):
    """Random params of the model's structure (NumPy draws: JAX's samplers compile slowly on CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), y)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def _to_f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _y(rng, lead=()):
    return rng.standard_normal(lead + (M,)) + 1j * rng.standard_normal(lead + (M,))


def reference_forward(params, y, n):
    """AUTOMAP as described in Antun et al. SI 2.1, in NumPy/SciPy, for one y of shape (m,)."""
    p = jax.tree_util.tree_map(np.asarray, params["params"])
    h = np.concatenate([y.real, y.imag])
    h = np.tanh(h @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    h = h @ p["fc2"]["kernel"] + p["fc2"]["bias"]
    img = (h - h.mean()).reshape(n, n)

    def conv(channels, kernel, bias):  # 'same' cross-correlation, HWIO kernel
        return [sum(correlate2d(channels[i], kernel[:, :, i, o], mode="same") for i in range(len(channels)))
                + bias[o] for o in range(kernel.shape[3])]

    a1 = [np.tanh(c) for c in conv([img], p["conv1"]["kernel"], p["conv1"]["bias"])]
    a2 = [np.maximum(c, 0) for c in conv(a1, p["conv2"]["kernel"], p["conv2"]["bias"])]
    out = conv(a2, p["deconv"]["kernel"], p["deconv"]["bias"])[0]
    return out, np.stack(a2, -1)


def test_parameter_count_and_names():
    model = Automap(N, M, hidden=HIDDEN, conv_features=FEATURES)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((M,), jnp.complex64))
    # fc1: 2m*hidden + hidden; fc2: hidden*n^2 + n^2; conv1: 5*5*1*F + F; conv2: 5*5*F*F + F;
    # deconv: 7*7*F*1 + 1.
    expected = (40 * 16 + 16) + (16 * 64 + 64) + (25 * 4 + 4) + (25 * 16 + 4) + (49 * 4 + 1)
    assert expected == 2449
    assert count_params(shapes) == expected
    p = shapes["params"]
    assert sorted(p) == ["conv1", "conv2", "deconv", "fc1", "fc2"]
    assert p["fc1"]["kernel"].shape == (2 * M, HIDDEN)
    assert p["fc2"]["kernel"].shape == (HIDDEN, N * N)
    assert p["deconv"]["kernel"].shape == (7, 7, FEATURES, 1)


def test_paper_size_shapes_without_allocation():
    model = Automap(128, 9855, hidden=25000)
    y = jax.ShapeDtypeStruct((2, 9855), jnp.complex64)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), y)
    assert shapes["params"]["fc1"]["kernel"].shape == (2 * 9855, 25000)
    assert shapes["params"]["fc2"]["kernel"].shape == (25000, 128 * 128)
    out = jax.eval_shape(model.apply, shapes, y)
    assert out.shape == (2, 128, 128) and out.dtype == jnp.float32


@pytest.mark.parametrize("n,m,lead", [(4, 5, ()), (8, 20, (3,)), (6, 36, (2, 2)), (10, 1, ())])
def test_shapes(n, m, lead):
    model = Automap(n, m, hidden=8, conv_features=3)
    y = jnp.ones(lead + (m,), jnp.complex64)
    params = _random_params(model, y)
    out = model.apply(params, y)
    assert out.shape == lead + (n, n) and out.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))


def test_matches_independent_reference_and_sows_activations(x64):
    rng = np.random.default_rng(0)
    model = Automap(N, M, hidden=HIDDEN, conv_features=FEATURES)
    y = _y(rng, (2,))
    params = _to_f64(_random_params(model, y))
    out, state = model.apply(params, y, mutable=["intermediates"])
    acts = state["intermediates"]["activations"][0]
    assert out.shape == (2, N, N) and acts.shape == (2, N, N, FEATURES)
    for i in range(2):
        ref_out, ref_acts = reference_forward(params, y[i], N)
        np.testing.assert_allclose(out[i], ref_out, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(acts[i], ref_acts, rtol=1e-11, atol=1e-11)
    assert float(jnp.max(acts)) > 0 and float(jnp.min(acts)) == 0.0   # ReLU output
    # Without mutable, nothing is collected and apply returns just the image.
    np.testing.assert_allclose(model.apply(params, y), out, rtol=1e-13)


def test_mean_subtraction_makes_fc_bias_shift_invisible(x64):
    """A constant added to fc2's output is removed by the mean subtraction."""
    rng = np.random.default_rng(1)
    model = Automap(N, M, hidden=HIDDEN, conv_features=FEATURES)
    y = _y(rng)
    params = _to_f64(_random_params(model, y))
    shifted = jax.tree_util.tree_map(lambda a: a, params)
    shifted["params"]["fc2"]["bias"] = params["params"]["fc2"]["bias"] + 3.7
    np.testing.assert_allclose(model.apply(shifted, y), model.apply(params, y), rtol=1e-12, atol=1e-12)
    # ... whereas a non-constant change is visible (the check can fail).
    shifted["params"]["fc2"]["bias"] = params["params"]["fc2"]["bias"] + jnp.linspace(0, 1, N * N)
    assert float(jnp.abs(model.apply(shifted, y) - model.apply(params, y)).max()) > 1e-3


def test_batched_equals_one_by_one_and_vmap_jit(x64):
    rng = np.random.default_rng(2)
    model = Automap(N, M, hidden=HIDDEN, conv_features=FEATURES)
    y = _y(rng, (3,))
    params = _to_f64(_random_params(model, y))
    batched = jax.jit(model.apply)(params, y)
    for i in range(3):
        np.testing.assert_allclose(batched[i], model.apply(params, y[i]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(lambda v: model.apply(params, v))(y), batched, rtol=1e-12, atol=1e-12)


def test_gradients_match_finite_differences_with_activation_penalty(x64):
    rng = np.random.default_rng(3)
    model = Automap(N, M, hidden=HIDDEN, conv_features=FEATURES)
    y = jnp.asarray(_y(rng))
    params = _to_f64(_random_params(model, y))
    target = jnp.asarray(rng.random((N, N)))

    def loss(p, y):
        # The paper's loss: squared error on the magnitude image + lambda * L1 of conv2's activations.
        out, state = model.apply(p, y, mutable=["intermediates"])
        acts = state["intermediates"]["activations"][0]
        return jnp.sum((out - target) ** 2) + 1e-4 * jnp.sum(jnp.abs(acts))

    gp, gy = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, y)
    eps = 1e-6
    v = jnp.asarray(_y(rng))
    fd = (loss(params, y + eps * v) - loss(params, y - eps * v)) / (2 * eps)
    # jax.grad of a real function of complex y is dL/dRe - i dL/dIm: the derivative along v is Re(sum(g v)).
    np.testing.assert_allclose(jnp.sum(jnp.real(gy * v)), fd, rtol=1e-6)
    leaves, tree = jax.tree_util.tree_flatten(params)
    dirs = jax.tree_util.tree_unflatten(tree, [jnp.asarray(rng.standard_normal(a.shape)) for a in leaves])
    shift = lambda s: jax.tree_util.tree_map(lambda a, d: a + s * d, params, dirs)
    fd = (loss(shift(eps), y) - loss(shift(-eps), y)) / (2 * eps)
    analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(dirs)))
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


def test_reconstruction_map_automap(x64):
    rng = np.random.default_rng(4)
    mask = np.zeros((N, N), bool)
    mask.flat[rng.choice(N * N, M, replace=False)] = True
    model = Automap(N, M, hidden=HIDDEN, conv_features=FEATURES)
    params = _to_f64(_random_params(model, jnp.zeros((M,), jnp.complex128)))
    f = reconstruction_map(model, params, mask)
    k = jnp.asarray(rng.standard_normal((2, N, N)) + 1j * rng.standard_normal((2, N, N)))
    out = jax.jit(f)(k)
    assert out.shape == (2, N, N)
    eager = model.apply(params, fourier.gather(k, mask))
    # Rounding is relative to the terms summed, not to an output that cancels near 0.
    np.testing.assert_allclose(out, eager, rtol=1e-13, atol=1e-13 * float(jnp.abs(eager).max()))
    # Entries off the mask are not measurements.
    junk = jnp.where(jnp.asarray(mask), 0, 5.0)
    np.testing.assert_allclose(f(k + junk), out, rtol=1e-12, atol=1e-12)
    g = jax.grad(lambda k: jnp.sum(f(k) ** 2))(k[0])
    assert float(jnp.abs(g).max()) > 0
    np.testing.assert_allclose(jnp.where(jnp.asarray(mask), 0, g), 0, atol=0)


def test_errors():
    model = Automap(N, M, hidden=HIDDEN, conv_features=FEATURES)
    y = jnp.zeros((M,), jnp.complex64)
    params = _random_params(model, y)
    with pytest.raises(ValueError, match="m = 20"):
        model.apply(params, jnp.zeros((M + 1,), jnp.complex64))
    with pytest.raises(ValueError, match="hidden"):
        Automap(N, M, hidden=0)
    mask = np.zeros((N, N), bool)
    mask.flat[:M + 1] = True
    with pytest.raises(ValueError, match="m = 20"):
        reconstruction_map(model, params, mask)
    with pytest.raises(ValueError, match="8 x 8"):
        reconstruction_map(model, params, np.ones((N + 1, N + 1), bool))
    mask.flat[M] = False
    with pytest.raises(ValueError, match="takes measurements of a Cartesian operator"):
        reconstruction_map(model, params, mask, coil_maps=np.ones((2, N, N)))
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda msk: reconstruction_map(model, params, msk)(jnp.zeros((N, N), jnp.complex64)))(mask)
