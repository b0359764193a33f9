"""The measurement operators: adjointness, projections, norm bounds, batching, bad input.

Every property test runs for every operator (the ``OPERATORS`` factories), in float64.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from mrijax import fourier, operators

H, W, C = 8, 6, 3


def _mask(seed=0, shape=(H, W)):
    m = np.random.default_rng(seed).random(shape) < 0.4
    m[H // 2, W // 2] = True
    return m


def _maps(seed=1, batch=()):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(batch + (C, H, W)) + 1j * rng.standard_normal(batch + (C, H, W))
    return s / np.sqrt(np.sum(np.abs(s) ** 2, axis=-3, keepdims=True)) * 0.9


OPERATORS = {
    "cartesian": lambda: operators.cartesian(_mask()),
    "sense": lambda: operators.sense(_mask(), _maps()),
    "sense_unnormalised": lambda: operators.sense(_mask(), 2.0 * _maps() ** 2),
}


def _rand(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_adjoint_dot_product(name):
    op = OPERATORS[name]()
    rng = np.random.default_rng(2)
    x = _rand(rng, op.image_shape)
    y = op.restrict(_rand(rng, op.measurement_shape))
    lhs = np.vdot(np.asarray(op.forward(x)), np.asarray(y))
    rhs = np.vdot(x, np.asarray(op.adjoint(y)))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    # forward lands in the measurement space; restrict is a projection onto it.
    fx = op.forward(x)
    assert fx.shape == op.measurement_shape
    np.testing.assert_allclose(op.restrict(fx), fx, atol=1e-14)
    np.testing.assert_allclose(op.restrict(op.restrict(y)), op.restrict(y), atol=1e-14)
    np.testing.assert_allclose(op.normal(x), op.adjoint(op.forward(x)), atol=1e-14)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_norm_bound_holds_and_power_iteration_reaches_the_norm(name):
    op = OPERATORS[name]()
    x = _rand(np.random.default_rng(3), op.image_shape)
    for _ in range(300):
        x = op.normal(x)
        x = x / np.linalg.norm(x)
    norm = float(np.linalg.norm(op.forward(x)))
    bound = float(op.norm_bound())
    assert norm <= bound * (1 + 1e-12)
    if name == "cartesian":
        assert norm == pytest.approx(1.0, abs=1e-12)


def _dense(op):
    n = int(np.prod(op.image_shape))
    eye = np.eye(n).reshape((n,) + op.image_shape)
    return np.asarray(jax.vmap(op.forward)(eye + 0j)).reshape(n, -1).T   # (m, n)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_range_and_kernel_projections_against_the_pseudo_inverse(name):
    op = OPERATORS[name]()
    a = _dense(op)
    x = _rand(np.random.default_rng(4), op.image_shape)
    expected = (np.linalg.pinv(a) @ a @ x.reshape(-1)).reshape(op.image_shape)
    iters = 200   # CG on the ill-conditioned unnormalised maps needs more than the default
    rng_part = np.asarray(op.range_projection(x, iters))
    np.testing.assert_allclose(rng_part, expected, atol=1e-9 * np.linalg.norm(x))
    ker = np.asarray(op.kernel_projection(x, iters))
    np.testing.assert_allclose(ker + rng_part, x, atol=1e-12)
    # The kernel part is invisible, orthogonal to the range part, and idempotent.
    assert np.linalg.norm(op.forward(ker)) <= 1e-9 * np.linalg.norm(x)
    assert abs(np.vdot(ker, rng_part)) <= 1e-9 * np.linalg.norm(x) ** 2
    np.testing.assert_allclose(op.kernel_projection(ker, iters), ker, atol=1e-9 * np.linalg.norm(x))


def test_cartesian_range_projection_is_exactly_normal_and_one_coil_sense_agrees():
    m = _mask()
    op = operators.cartesian(m)
    assert op.is_partial_isometry
    x = _rand(np.random.default_rng(5), (H, W))
    np.testing.assert_array_equal(op.range_projection(x), fourier.normal(x, m))
    one = operators.sense(m, np.ones((1, H, W)))
    np.testing.assert_allclose(one.range_projection(x), op.range_projection(x), atol=1e-10)


def test_gather_scatter_round_trip():
    m = _mask()
    op = operators.cartesian(m)
    y = _rand(np.random.default_rng(6), (int(m.sum()),))
    k = op.scatter(y)
    np.testing.assert_array_equal(op.gather(k), y)
    np.testing.assert_array_equal(op.scatter(op.gather(op.restrict(k))), k)


def test_jit_vmap_grad_and_batched_equals_one_by_one():
    masks = np.stack([_mask(s) for s in range(3)])
    maps = _maps(batch=(3,))
    op = operators.sense(masks, maps)
    assert op.batch_shape == (3,)
    x = _rand(np.random.default_rng(7), (3, H, W))
    batched = jax.jit(lambda o, x: o.forward(x))(op, x)
    for i in range(3):
        one = operators.sense(masks[i], maps[i])
        np.testing.assert_allclose(batched[i], one.forward(x[i]), atol=1e-14)
    flat = operators.broadcast(operators.cartesian(masks[0]), (2, 3))
    assert flat.mask.shape == (6, H, W)
    ys = jax.vmap(lambda o, xi: o.forward(xi))(operators.broadcast(op, (3,)), x)
    np.testing.assert_allclose(ys, batched, atol=1e-14)
    # d/dx 1/2 ||A x||^2 = A* A x (real inner product; JAX's grad is the conjugate).
    g = jax.grad(lambda x: 0.5 * jnp.sum(jnp.abs(op.forward(x)) ** 2))(x)
    np.testing.assert_allclose(np.conj(g), op.normal(x), atol=1e-12)


def test_as_operator_conveniences():
    m = _mask()
    assert isinstance(operators.as_operator(m), operators.Cartesian)
    s = operators.as_operator(m, _maps())
    assert isinstance(s, operators.Sense) and s.measurement_shape == (C, H, W)
    op = operators.cartesian(m)
    assert operators.as_operator(op) is op
    with pytest.raises(ValueError, match="coil_maps is given with an operator"):
        operators.as_operator(op, _maps())


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="exactly 0/1"):
        operators.cartesian(0.3 * np.ones((H, W)))
    with pytest.raises(ValueError, match="exactly 0/1"):
        fourier.forward(np.ones((H, W)), 0.3 * np.ones((H, W)))
    with pytest.raises(TypeError, match="must be an array"):
        operators.cartesian("gaussian_lines")
    with pytest.raises(ValueError, match="at least 2 axes"):
        operators.cartesian(np.ones(W, bool))
    with pytest.raises(ValueError, match="coil_maps has image shape"):
        operators.sense(_mask(), np.ones((C, H + 1, W)))
    with pytest.raises(ValueError, match="does not broadcast"):
        operators.broadcast(operators.cartesian(np.ones((2, H, W), bool)), (3,))
    with pytest.raises(ValueError, match="operator .its mask. is for images"):
        operators.check_fits(operators.cartesian(_mask()), np.ones((H, W + 1)))
    # 0/1 numeric masks are fine (and equal to the boolean ones).
    m = _mask()
    np.testing.assert_array_equal(operators.cartesian(m.astype(np.float32)).mask, m)
