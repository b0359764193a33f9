"""Maths of the worst-case search (mrijax.attacks) on small problems with known answers."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from mrijax import attacks, fourier, operators

H = W = 8


def _mask(seed=0, shape=(H, W)):
    m = np.random.default_rng(seed).random(shape) < 0.5
    m[shape[0] // 2, shape[1] // 2] = True
    return m


def _real_linear_recon(seed=0):
    """A real-linear but non-holomorphic map: k -> Re(B vec(k)) + Im(C vec(k)) as an (H, W) image."""
    rng = np.random.default_rng(seed)
    b = rng.normal(size=(H * W, H * W)) + 1j * rng.normal(size=(H * W, H * W))
    c = rng.normal(size=(H * W, H * W))

    def recon(k):
        kv = k.reshape(-1)
        return (jnp.real(jnp.asarray(b) @ kv) + jnp.imag(jnp.asarray(c) @ kv)).reshape(H, W)
    return recon


def _smooth_recon(seed=1):
    """A small nonlinear map (zero-filled image through a random tanh layer)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(H * W, 2 * H * W)) / H

    def recon(k):
        z = fourier.ifft2c(k)
        v = jnp.concatenate([jnp.real(z).ravel(), jnp.imag(z).ravel()])
        return jnp.tanh(jnp.asarray(m, v.dtype) @ v).reshape(H, W) + z
    return recon


def _jacobian_of_real_perturbation(recon, x, mask):
    """Explicit real Jacobian of r (real image) -> recon(A x + A r), which is linear for a linear recon."""
    y = fourier.forward(x, mask)
    base = recon(y)
    cols = []
    for i in range(H * W):
        e = np.zeros(H * W)
        e[i] = 1.0
        out = recon(y + fourier.forward(jnp.asarray(e.reshape(H, W)), mask)) - base
        cols.append(np.concatenate([np.real(out).ravel(), np.imag(out).ravel()]))
    return np.stack(cols, axis=1)


def test_gradient_of_objective_matches_finite_differences(x64):
    recon = _smooth_recon()
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((H, W)))
    mask = _mask()
    cfg, prob, state, _ = attacks.setup(recon, x, mask, method="algorithm1", key=jax.random.key(0), steps=3,
                                        lam=0.1)
    p1 = jax.tree.map(lambda a: a[0], prob)
    r = jnp.asarray(rng.normal(size=(H, W)) + 1j * rng.normal(size=(H, W))) * 0.1
    q = lambda r: attacks._objective(recon, cfg, r, p1)[0]
    g = jnp.conj(jax.grad(q)(r))  # the ascent direction the search uses
    for seed in range(3):
        d = np.random.default_rng(10 + seed)
        d = jnp.asarray(d.normal(size=(H, W)) + 1j * d.normal(size=(H, W)))
        eps = 1e-6
        fd = (q(r + eps * d) - q(r - eps * d)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.real(jnp.vdot(g, d))), float(fd), rtol=1e-7, atol=1e-9)


def test_projected_search_on_linear_map_finds_top_singular_direction(x64):
    recon = _real_linear_recon()
    x = jnp.asarray(np.random.default_rng(1).random((H, W)))
    mask = _mask()
    jac = _jacobian_of_real_perturbation(recon, x, mask)
    _, s, vt = np.linalg.svd(jac)
    rho = 0.5
    res = attacks.worst_case(recon, x, mask, key=jax.random.key(0), steps=300, radius=rho, real=True,
                             lr=rho, momentum=0.0)  # a step as long as the radius: power iteration
    r = np.real(np.asarray(res.r)).ravel()
    assert np.linalg.norm(r) == pytest.approx(rho, rel=1e-9)
    cos = abs(r @ vt[0]) / np.linalg.norm(r)
    assert cos > 1 - 1e-6, f"|cos| to the top singular vector = {cos}"
    # The output change per unit perturbation is the top singular value.
    ev = attacks.evaluate(recon, x, mask, res.r)
    assert float(ev["diff_norm"]) / rho == pytest.approx(s[0], rel=1e-6)


@pytest.mark.parametrize("loop", ["host", "scan"])  # CPU's loop of single steps; the one-call loop
def test_local_lipschitz_equals_top_singular_value_of_measurement_jacobian(x64, loop):
    recon = _real_linear_recon(seed=4)
    x = jnp.asarray(np.random.default_rng(2).random((H, W)))
    mask = _mask(1)
    # Real Jacobian of (Re e, Im e) on the sampled entries -> (Re f, Im f).
    idx = np.flatnonzero(mask)
    y = fourier.forward(x, mask)
    base = recon(y)
    cols = []
    for part in (1.0, 1j):
        for i in idx:
            e = np.zeros(H * W, complex)
            e[i] = part
            out = recon(y + jnp.asarray(e.reshape(H, W))) - base
            cols.append(np.concatenate([np.real(out).ravel(), np.imag(out).ravel()]))
    s = np.linalg.svd(np.stack(cols, 1), compute_uv=False)
    ll = attacks.local_lipschitz(recon, x, mask, iters=200, key=jax.random.key(0), loop=loop)
    assert float(ll["gain"]) == pytest.approx(s[0], rel=1e-6)
    assert np.allclose(np.asarray(ll["direction"])[~mask], 0)
    assert np.linalg.norm(ll["direction"]) == pytest.approx(1.0)


def test_batch_equals_one_by_one(x64):
    recon = _smooth_recon()
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.random((3, H, W)))
    masks = np.stack([_mask(i) for i in range(3)])
    key = jax.random.key(7)
    kw = dict(steps=20, lr=0.05, snapshots=(5, 20))
    batch = attacks.algorithm1(recon, x, masks, key=key, **kw)
    keys = jax.random.split(key, 3)
    for i in range(3):
        one = attacks.algorithm1(recon, x[i], masks[i], key=keys[i], **kw)
        np.testing.assert_allclose(one.r, batch.r[i], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(one.snapshots, batch.snapshots[:, i], rtol=1e-12, atol=1e-12)
        for k in attacks.HISTORY_KEYS:
            np.testing.assert_allclose(one.history[k], batch.history[k][:, i], rtol=1e-10)


def test_snapshots_equal_runs_stopped_at_those_counts(x64):
    recon = _smooth_recon()
    x = jnp.asarray(np.random.default_rng(6).random((2, H, W)))
    mask = _mask()
    key = jax.random.key(1)
    full = attacks.algorithm1(recon, x, mask, key=key, steps=12, lr=0.05, snapshots=(0, 4, 12), chunk=5)
    for j, s in enumerate((0, 4, 12)):
        if s == 0:
            continue
        short = attacks.algorithm1(recon, x, mask, key=key, steps=s, lr=0.05)
        np.testing.assert_allclose(full.snapshots[j], short.r, rtol=1e-12, atol=1e-14)
    # r0 = tau * U[0, 1]
    r0 = np.asarray(full.snapshots[0])
    assert np.all(np.imag(r0) == 0) and r0.real.min() >= 0 and r0.real.max() <= 1e-2


def test_growing_snapshots_and_history_consistency(x64):
    recon = _smooth_recon()
    x = jnp.asarray(np.random.default_rng(6).random((H, W)))
    mask = _mask()
    res = attacks.algorithm1(recon, x, mask, key=jax.random.key(0), steps=30, lr=0.1, snapshots=(10, 20, 30))
    norms = [np.linalg.norm(s) for s in res.snapshots]
    assert norms[0] < norms[1] < norms[2]
    # History row t describes r_t; its numbers agree with a direct evaluation of the snapshot r_10.
    ev = attacks.evaluate(recon, x, mask, res.snapshots[0])
    assert res.history["r_norm"][10] == pytest.approx(float(ev["r_norm"]), rel=1e-10)
    assert res.history["diff_norm"][10] == pytest.approx(float(ev["diff_norm"]), rel=1e-10)
    assert res.history["ratio"][10] == pytest.approx(float(ev["diff_norm"] / ev["Ar_norm"]), rel=1e-10)


def test_per_image_stopping_and_divergence(x64):
    recon = _smooth_recon()
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.random((2, H, W)))
    mask = _mask()
    key = jax.random.key(3)
    lr = jnp.asarray([0.2, 0.02])  # one problem grows ten times faster
    res = attacks.algorithm1(recon, x, mask, key=key, steps=40, lr=lr, max_r_norm=1.0)
    sa = np.asarray(res.stopped_at)
    assert sa[0] < sa[1] <= 40
    assert np.all(np.isnan(res.history["r_norm"][sa[0] + 1:, 0]))
    assert res.history["r_norm"][sa[0], 0] > 1.0 >= np.nanmax(res.history["r_norm"][:sa[0], 0])
    # The frozen r is the one a run of exactly stopped_at steps returns.
    keys = jax.random.split(key, 2)
    short = attacks.algorithm1(recon, x[0], mask, key=keys[0], steps=int(sa[0]), lr=0.2)
    np.testing.assert_allclose(res.r[0], short.r, rtol=1e-12)

    def blows_up(k):
        z = fourier.ifft2c(k)
        return jnp.where(jnp.sum(jnp.abs(z) ** 2) > 60.0, jnp.nan, 1.0) * z
    res = attacks.algorithm1(blows_up, x, mask, key=key, steps=50, lr=jnp.asarray([0.5, 1e-4]))
    assert bool(res.diverged[0]) and not bool(res.diverged[1])
    assert np.all(np.isfinite(res.r))
    assert int(res.stopped_at[1]) == 50 and int(res.stopped_at[0]) < 50


def test_region_weight_only_counts_the_region(x64):
    recon = _smooth_recon()
    x = jnp.asarray(np.random.default_rng(9).random((H, W)))
    mask = _mask()
    region = np.zeros((H, W))
    region[2:5, 3:6] = 1.0
    res = attacks.algorithm1(recon, x, mask, key=jax.random.key(0), steps=15, lr=0.05, lam=0.0,
                             region=region, snapshots=(7,))
    ev = attacks.evaluate(recon, x, mask, res.snapshots[0])
    inside = 0.5 * np.sum(np.abs(region * (ev["perturbed"] - ev["clean"])) ** 2)
    assert res.history["Q"][7] == pytest.approx(inside, rel=1e-10)
    everywhere = 0.5 * np.sum(np.abs(ev["perturbed"] - ev["clean"]) ** 2)
    assert everywhere > inside * 1.01


def test_targeted_search_pulls_towards_target(x64):
    recon = _smooth_recon()
    x = jnp.asarray(np.random.default_rng(10).random((H, W)))
    mask = _mask()
    target = np.asarray(recon(fourier.forward(x, mask))).copy()
    target[3:5, 3:5] += 0.5  # a false detail
    res = attacks.algorithm1(recon, x, mask, key=jax.random.key(0), steps=60, lr=0.02, lam=1e-3, target=target)
    ev = attacks.evaluate(recon, x, mask, res.r)
    before = np.linalg.norm(ev["clean"] - target)
    after = np.linalg.norm(ev["perturbed"] - target)
    assert after < 0.8 * before
    q = np.asarray(res.history["Q"])
    assert q[-1] > q[0]  # the targeted objective (-distance) increases


def test_measurement_domain_stays_on_mask():
    recon = _smooth_recon()
    x = jnp.asarray(np.random.default_rng(11).random((2, H, W)), jnp.float32)
    mask = _mask()
    res = attacks.algorithm1(recon, x, mask, key=jax.random.key(0), steps=10, domain="measurement")
    assert np.all(np.asarray(res.r)[:, ~mask] == 0)
    assert np.all(np.abs(np.asarray(res.r)[:, mask]) > 0)
    np.testing.assert_allclose(res.history["Ar_norm"], res.history["r_norm"], rtol=1e-5)


def test_real_perturbations_stay_real():
    res = attacks.algorithm1(_smooth_recon(), np.random.default_rng(0).random((H, W)), _mask(),
                             key=jax.random.key(0), steps=5, real=True)
    assert np.all(np.imag(np.asarray(res.r)) == 0)


def test_relative_radius_and_defaults():
    x = np.random.default_rng(0).random((2, H, W)).astype(np.float32)
    res = attacks.worst_case(_smooth_recon(), x, _mask(), key=jax.random.key(0), steps=20, radius=0.05,
                             radius_relative_to="x")
    rn = np.linalg.norm(np.asarray(res.r).reshape(2, -1), axis=1)
    np.testing.assert_allclose(rn, 0.05 * np.linalg.norm(x.reshape(2, -1), axis=1), rtol=1e-5)
    np.testing.assert_allclose(res.radius, 0.05 * np.linalg.norm(x.reshape(2, -1), axis=1), rtol=1e-6)


def test_noise_baseline_norms_and_shapes():
    x = np.random.default_rng(0).random((2, H, W)).astype(np.float32)
    nb = attacks.noise_baseline(_smooth_recon(), x, _mask(), [0.1, 0.3], 4, jax.random.key(0))
    assert nb["r_norm"].shape == (2, 2, 4)
    np.testing.assert_allclose(nb["r_norm"][:, 0], 0.1, rtol=1e-5)
    np.testing.assert_allclose(nb["r_norm"][:, 1], 0.3, rtol=1e-5)
    assert np.all(nb["diff_norm"] > 0)


def test_sweep_matches_individual_runs(x64):
    recon = _smooth_recon()
    x = jnp.asarray(np.random.default_rng(12).random((2, H, W)))
    mask = _mask()
    key = jax.random.key(4)
    sw = attacks.sweep(recon, x, mask, method="algorithm1", key=key, grid={"lr": [0.01, 0.05], "seed": [0, 3]},
                       steps=8)
    assert sw.axes == ("lr", "seed") and sw.result.r.shape == (2, 2, 2, H, W)
    one = attacks.algorithm1(recon, x, mask, key=jax.random.fold_in(key, 3), steps=8, lr=0.05)
    np.testing.assert_allclose(sw.result.r[1, 1], one.r, rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"), (dict(domain="kspace"), "domain"), (dict(target="foo"), "target"),
    (dict(radius=-1.0), "radius"), (dict(snapshots=(99,)), "snapshots"), (dict(momentum=-0.1), "momentum"),
    (dict(radius_relative_to="y"), "radius_relative_to"), (dict(schedule="linear"), "schedule"),
    (dict(radius=float("nan")), "radius"), (dict(lr=-0.01), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(region=np.ones((4, 4))), r"region has shape \(4, 4\) but the images are"),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(key=jax.random.key(0), steps=5, radius=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attacks.worst_case(_smooth_recon(), np.zeros((H, W)), _mask(), **args)


def test_the_two_searches_refuse_each_others_arguments():
    x = np.ones((H, W))
    with pytest.raises(ValueError, match="needs a radius"):
        attacks.setup(_smooth_recon(), x, _mask(), method="projected", key=jax.random.key(0))
    with pytest.raises(ValueError, match="Algorithm 1 has no radius"):
        attacks.setup(_smooth_recon(), x, _mask(), method="algorithm1", key=jax.random.key(0), radius=0.1)
    with pytest.raises(ValueError, match="method"):
        attacks.setup(_smooth_recon(), x, _mask(), method="pgd", key=jax.random.key(0))
    with pytest.raises(ValueError, match="lr"):
        attacks.algorithm1(_smooth_recon(), x, _mask(), key=jax.random.key(0), steps=3, lr=-0.01)
    with pytest.raises(ValueError, match="loop"):
        attacks.algorithm1(_smooth_recon(), x, _mask(), key=jax.random.key(0), steps=3, loop="gpu")
    # Each search has its documented defaults, and they are the ones it runs with.
    cfg, prob, _, _ = attacks.setup(_smooth_recon(), x, _mask(), method="algorithm1", key=jax.random.key(0))
    assert cfg.schedule == "constant"
    assert float(prob.lam[0]) == pytest.approx(1e-3) and float(prob.lr[0]) == pytest.approx(1e-2)
    cfg, prob, _, _ = attacks.setup(_smooth_recon(), x, _mask(), method="projected", key=jax.random.key(0),
                                    radius=0.4)
    assert cfg.schedule == "cosine" and float(prob.lam[0]) == 0
    assert float(prob.lr[0]) == pytest.approx(0.4 / 20)   # radius / 20


def test_a_non_finite_image_is_refused_naming_its_index():
    x = np.ones((3, H, W))
    x[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"image\(s\) 1"):
        attacks.worst_case(_smooth_recon(), x, _mask(), key=jax.random.key(0), steps=3, radius=0.1)
    with pytest.raises(ValueError, match="no scale"):
        attacks.worst_case(_smooth_recon(), np.zeros((2, H, W)), _mask(), key=jax.random.key(0), steps=3,
                           radius=0.1, radius_relative_to="x")


def test_bad_mask_shape_raises():
    with pytest.raises(ValueError, match="mask"):
        attacks.algorithm1(_smooth_recon(), np.zeros((H, W)), np.ones((4, 4), bool), key=jax.random.key(0))


_SHARDED = textwrap.dedent("""
    import json, sys
    import numpy as np, jax, jax.numpy as jnp
    sys.path.insert(0, {root!r})
    from tests.test_attacks import _smooth_recon, _mask, H, W
    from mrijax import attacks
    assert len(jax.devices()) == {n}, jax.devices()
    x = np.random.default_rng(0).random((6, H, W)).astype(np.float32)
    res = attacks.algorithm1(_smooth_recon(), x, _mask(), key=jax.random.key(0), steps=10, lr=0.05,
                             snapshots=(5,))
    np.savez({out!r}, r=np.asarray(res.r), s=np.asarray(res.snapshots), q=np.asarray(res.history["Q"]))
""")


def test_sharded_equals_single_device(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = {}
    for n in (1, 4):
        out = str(tmp_path / f"r{n}.npz")
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        subprocess.run([sys.executable, "-c", _SHARDED.format(root=root, n=n, out=out)], check=True, env=env,
                       cwd=root, timeout=300)
        outs[n] = np.load(out)
    for k in ("r", "s", "q"):
        np.testing.assert_allclose(outs[4][k], outs[1][k], rtol=2e-5, atol=1e-6)


def test_multicoil_search_with_estimated_maps_finds_the_top_singular_value(x64):
    # f(k) = w * A* k (a weighted SENSE adjoint, maps estimated from the data) is complex-linear,
    # so the output change of a perturbation r is M r with M = w A*A, and the projected search
    # must reach rho * sigma_max(M), which the test computes by SVD of the dense M.
    from mrijax.data import sensitivity
    from tests.test_sensitivity import _fft2c, smooth_coil_maps, smooth_object

    n, coils = 12, 4
    k_full = _fft2c(smooth_coil_maps(n, coils) * smooth_object(n))
    maps = sensitivity.estimate_coil_maps(k_full, calib_size=6)
    rng = np.random.default_rng(0)
    mask = np.zeros((n, n), bool)
    mask[:, rng.random(n) < 0.4] = True
    mask[:, n // 2 - 2:n // 2 + 2] = True
    mask = jnp.asarray(mask)
    weight = 0.5 + 0.5 * rng.random((n, n))
    weight[n // 2, n // 3] = 3.0  # one dominant pixel separates the top singular value
    weight = jnp.asarray(weight)

    def recon(k):
        return weight * fourier.adjoint(k, mask, coil_maps=maps)

    basis = np.eye(n * n).reshape(n * n, n, n) + 0j
    dense = np.stack([np.asarray(recon(fourier.forward(jnp.asarray(e), mask, coil_maps=maps))).ravel()
                      for e in basis], axis=1)
    s = np.linalg.svd(dense, compute_uv=False)
    assert s[0] > 1.05 * s[1]  # a separated top: the search has one direction to find

    x = jnp.asarray(smooth_object(n) + 0j)
    rho = 0.3
    res = attacks.worst_case(recon, x, mask, key=jax.random.key(0), steps=400, radius=rho, lr=rho,
                             momentum=0.0, coil_maps=maps)
    assert np.linalg.norm(np.asarray(res.r)) == pytest.approx(rho, rel=1e-9)
    ev = attacks.evaluate(recon, x, mask, res.r, coil_maps=maps)
    assert float(ev["diff_norm"]) / rho == pytest.approx(s[0], rel=1e-6)


def test_a_numpy_reconstruction_map_gets_a_message_that_it_must_be_traceable():
    def numpy_recon(k):
        return np.fft.ifft2(np.asarray(k))      # NumPy cannot take JAX's traced values

    with pytest.raises(TypeError, match="traceable by JAX"):
        attacks.worst_case(numpy_recon, np.ones((H, W)), _mask(), key=jax.random.key(0), steps=2, radius=0.1)
    with pytest.raises(TypeError, match="traceable by JAX"):
        attacks.evaluate(numpy_recon, np.ones((H, W)), _mask(), np.zeros((H, W)))


def test_an_empty_mask_warns_that_the_gains_are_undefined():
    with pytest.warns(UserWarning, match=r"A x = 0 for image\(s\) 0"):
        attacks.worst_case(_smooth_recon(), np.ones((H, W)), np.zeros((H, W), bool), key=jax.random.key(0),
                           steps=2, radius=0.1)


def test_measurement_domain_search_with_a_sense_operator_stays_in_the_measurement_space(x64):
    # With an operator, the measurement domain is op.restrict's space: per coil, zero off the mask.
    rng = np.random.default_rng(3)
    mask = _mask()
    maps = rng.standard_normal((2, H, W)) + 1j * rng.standard_normal((2, H, W))
    op = operators.sense(mask, maps)
    recon = op.adjoint                                   # f(y) = A* y: the gain is at most ||A||
    x = rng.random((H, W))
    res = attacks.worst_case(recon, x, op, key=jax.random.key(0), steps=40, radius=0.3, domain="measurement")
    r = np.asarray(res.r)
    assert r.shape == (2, H, W)
    np.testing.assert_array_equal(r[:, ~mask], 0)
    assert np.linalg.norm(r) == pytest.approx(0.3, rel=1e-9)
    ev = attacks.evaluate(recon, x, op, res.r, domain="measurement")
    # ||A* e|| <= ||A|| ||e||, and the search gets close to that bound.
    assert float(ev["diff_norm"]) <= float(op.norm_bound()) * 0.3 * (1 + 1e-9)
    assert float(ev["diff_norm"]) >= 0.9 * np.linalg.svd(_dense_adjoint(op), compute_uv=False)[0] * 0.3


def _dense_adjoint(op):
    m = int(np.prod(op.measurement_shape))
    basis = np.eye(m).reshape((m,) + op.measurement_shape) + 0j
    cols = [np.asarray(op.adjoint(op.restrict(e))).ravel() for e in basis]
    return np.stack(cols, axis=1)
