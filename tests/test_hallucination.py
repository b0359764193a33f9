"""mrijax.hallucination: kernel/range parts, visibility, detail transfer and training on pairs."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from mrijax import fourier, masks, pair_training, train
from mrijax import hallucination as hal
from mrijax.data import phantoms
from mrijax.models import Automap, reconstruction_map


def _line_mask(n, seed=0):
    # Random columns: not conjugate-symmetric, so the real and complex kernels differ.
    return masks.for_acceleration("exact_count_lines", (n, n), 4.0, seed)


def _mirror_index(i, n):
    return (2 * (n // 2) - i) % n


def _sq(a):
    return float(np.sum(np.abs(np.asarray(a)) ** 2))


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("n", [8, 9])
def test_conjugate_mask_is_the_mirror_image_of_a_real_spectrum(x64, n):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n))
    spec = np.asarray(fourier.fft2c(x))
    for i, j in [(0, 0), (1, 3), (n // 2, n // 2), (n - 1, 2), (n // 2, 0)]:
        single = np.zeros((n, n), bool)
        single[i, j] = True
        (ci, cj), = np.argwhere(np.asarray(hal.conjugate_mask(single)))
        assert (ci, cj) == (_mirror_index(i, n), _mirror_index(j, n))
        np.testing.assert_allclose(spec[ci, cj], np.conj(spec[i, j]), atol=1e-12)
    m = _line_mask(n) if n % 2 == 0 else rng.random((n, n)) < 0.3
    np.testing.assert_array_equal(hal.conjugate_mask(hal.conjugate_mask(m)), m)
    sym = np.asarray(hal.conjugate_symmetric_mask(m))
    np.testing.assert_array_equal(np.asarray(hal.conjugate_mask(sym)), sym)
    assert sym.sum() >= m.sum()


def test_conjugate_mask_batched_and_bad_shape():
    ms = np.stack([_line_mask(16, s) for s in range(3)])
    out = np.asarray(hal.conjugate_mask(ms))
    for k in range(3):
        np.testing.assert_array_equal(out[k], np.asarray(hal.conjugate_mask(ms[k])))
    with pytest.raises(ValueError, match="mask"):
        hal.conjugate_mask(np.ones(5, bool))


# ----------------------------------------------------------------------------- kernel / range


def test_complex_kernel_part_is_the_null_space_projection(x64):
    n = 16
    mask = _line_mask(n)
    rng = np.random.default_rng(1)
    d = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    k = np.asarray(hal.detail_in_kernel(d, mask))
    r = np.asarray(hal.detail_in_range(d, mask))
    np.testing.assert_allclose(k, np.asarray(fourier.null_space_projection(d, mask)), atol=1e-13)
    np.testing.assert_allclose(k + r, d, atol=1e-13)
    assert _sq(fourier.forward(k, mask)) < 1e-26
    np.testing.assert_allclose(np.asarray(fourier.forward(r, mask)), np.asarray(fourier.forward(d, mask)),
                               atol=1e-13)
    assert abs(np.vdot(k, r)) < 1e-12                                    # orthogonal
    np.testing.assert_allclose(np.asarray(hal.detail_in_kernel(k, mask)), k, atol=1e-13)  # idempotent
    assert float(hal.max_visibility(d, mask)) == pytest.approx(1.0, abs=1e-12)


def test_real_kernel_part_is_real_invisible_and_an_orthogonal_projection(x64):
    n = 16
    mask = _line_mask(n)
    assert not np.array_equal(np.asarray(hal.conjugate_symmetric_mask(mask)), mask)
    rng = np.random.default_rng(2)
    d = rng.standard_normal((n, n))
    k = hal.detail_in_kernel(d, mask, real=True)
    assert k.dtype == jnp.float64
    k = np.asarray(k)
    r = np.asarray(hal.detail_in_range(d, mask, real=True))
    assert np.isrealobj(r)
    np.testing.assert_allclose(k + r, d, atol=1e-13)
    assert np.sqrt(_sq(fourier.forward(k, mask))) < 1e-13 * np.linalg.norm(k)
    np.testing.assert_allclose(np.asarray(hal.detail_in_kernel(k, mask, real=True)), k, atol=1e-13)
    # d - k is orthogonal to every real image that A does not see (the real kernel).
    for s in range(3):
        z = np.asarray(hal.detail_in_kernel(np.random.default_rng(10 + s).standard_normal((n, n)), mask, real=True))
        assert abs(np.sum(z * r)) < 1e-12 * np.linalg.norm(z) * np.linalg.norm(r)
    # Taking the real part of the complex projection instead would leave a visible part.
    re_part = np.real(np.asarray(hal.detail_in_kernel(d, mask)))
    assert float(hal.visibility(re_part, mask)) > 0.05
    # The real range part is only partly visible: between 1/sqrt(2) and 1.
    vmax = float(hal.max_visibility(d, mask, real=True))
    assert 1 / np.sqrt(2) - 1e-12 <= vmax < 1.0


def test_real_and_complex_kernels_agree_for_a_symmetric_mask(x64):
    n = 16
    mask = np.asarray(hal.conjugate_symmetric_mask(_line_mask(n)))
    d = np.random.default_rng(3).standard_normal((n, n))
    kc = np.asarray(hal.detail_in_kernel(d, mask))
    np.testing.assert_allclose(kc.imag, 0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(hal.detail_in_kernel(d, mask, real=True)), kc.real, atol=1e-13)


def test_real_kernel_rejects_complex_input():
    mask = _line_mask(8)
    with pytest.raises(TypeError, match="real"):
        hal.detail_in_kernel(jnp.ones((8, 8), jnp.complex64), mask, real=True)
    with pytest.raises(ValueError, match="mask"):
        hal.detail_in_kernel(jnp.ones((8, 8)), np.ones((4, 4), bool))


# ----------------------------------------------------------------------------- visibility


def test_visibility_known_answers(x64):
    n = 16
    mask = np.zeros((n, n), bool)
    mask[:, 5] = True                        # one column whose mirror image (column 11) is not sampled
    spec = np.zeros((n, n), complex)
    spec[3, 5] = 1.0
    seen = fourier.ifft2c(spec)
    spec2 = np.zeros((n, n), complex)
    spec2[3, 6] = 1.0
    unseen = fourier.ifft2c(spec2)
    assert float(hal.visibility(seen, mask)) == pytest.approx(1.0, abs=1e-12)
    assert float(hal.visibility(unseen, mask)) == pytest.approx(0.0, abs=1e-12)
    # A real cosine holds the pair {k, -k}; only k is sampled: half its energy is seen.
    cosine = np.real(np.asarray(seen)) * 2
    assert float(hal.visibility(cosine, mask)) == pytest.approx(1 / np.sqrt(2), abs=1e-12)
    # Batched equals one by one; the scale does not matter.
    batch = jnp.stack([seen, unseen, 3.0 * cosine])
    np.testing.assert_allclose(np.asarray(hal.visibility(batch, mask)), [1.0, 0.0, 1 / np.sqrt(2)], atol=1e-12)


@pytest.mark.parametrize("real", [False, True])
def test_detail_with_visibility_is_exact_in_float64(x64, real):
    n = 32
    mask = _line_mask(n)
    detail = phantoms.ellipse(n, (0.3, -0.35), (0.1, 0.08), value=0.3).astype(np.float64)
    vs = np.array([0.0, 1e-3, 0.01, 0.03, 0.1, 0.3, 0.6])
    dv = hal.detail_with_visibility(np.broadcast_to(detail, (len(vs), n, n)), mask, vs, real=real)
    assert (dv.dtype == jnp.float64) if real else (dv.dtype == jnp.complex128)
    np.testing.assert_allclose(np.asarray(hal.visibility(dv, mask)), vs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(dv), axis=(-2, -1)), np.linalg.norm(detail), rtol=1e-12)
    # Each d_v is (up to scale) the kernel part plus a non-negative multiple of the range part.
    kern = np.asarray(hal.detail_in_kernel(detail, mask, real=real))
    rng_part = np.asarray(hal.detail_in_range(detail, mask, real=real))
    for v, d in zip(vs, np.asarray(dv)):
        a = np.real(np.vdot(kern, d)) / _sq(kern)
        b = np.real(np.vdot(rng_part, d)) / _sq(rng_part)
        np.testing.assert_allclose(a * kern + b * rng_part, d, atol=1e-12)
        assert a > 0 and b >= -1e-12
        if v == 0:
            assert b == pytest.approx(0, abs=1e-12)
    # One v for all, and an explicit norm.
    one = hal.detail_with_visibility(detail, mask, 0.2, real=real, norm=2.0)
    assert float(hal.visibility(one, mask)) == pytest.approx(0.2, rel=1e-12)
    assert float(jnp.linalg.norm(one)) == pytest.approx(2.0, rel=1e-12)


def test_detail_with_visibility_rejects_unreachable_v(x64):
    n = 32
    mask = _line_mask(n)
    detail = phantoms.ellipse(n, (0.3, -0.35), (0.1, 0.08), value=0.3).astype(np.float64)
    vmax = float(hal.max_visibility(detail, mask, real=True))
    assert vmax < 0.95
    with pytest.raises(ValueError, match="max_visibility"):
        hal.detail_with_visibility(detail, mask, 0.95, real=True)
    with pytest.raises(ValueError, match="max_visibility"):
        hal.detail_with_visibility(detail, mask, -0.1)
    # Under jit nothing can be raised: the entry is NaN instead.
    out = jax.jit(lambda v: hal.detail_with_visibility(detail, mask, v, real=True))(0.95)
    assert np.all(np.isnan(np.asarray(out)))
    ok = jax.jit(lambda v: hal.detail_with_visibility(detail, mask, v, real=True))(0.5)
    assert float(hal.visibility(ok, mask)) == pytest.approx(0.5, rel=1e-12)


# ----------------------------------------------------------------------------- measuring


def test_transferred_fraction_and_local_gain_known_answers(x64):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 8))
    d = rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8))
    noise = rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8))
    # Remove the component of noise along d (real inner product), then plant c * d.
    noise = noise - (np.real(np.sum(np.conj(d) * noise, axis=(-2, -1))) / np.sum(np.abs(d) ** 2, axis=(-2, -1)))[
        :, None, None] * d
    c = np.array([0.7, -0.2])
    recon = x + c[:, None, None] * d + noise
    np.testing.assert_allclose(np.asarray(hal.transferred_fraction(recon, x, d)), c, atol=1e-12)
    # An imaginary multiple of a complex detail is orthogonal in the real inner product.
    assert float(hal.transferred_fraction(x[0] + 1j * d[0], x[0], d[0])) == pytest.approx(0.0, abs=1e-12)
    gain = hal.local_gain(recon, x, np.array([2.0, 4.0]))
    np.testing.assert_allclose(np.asarray(gain), np.linalg.norm(recon - x, axis=(-2, -1)) / [2.0, 4.0], rtol=1e-12)


@pytest.mark.parametrize("real", [False, True])
def test_error_split_pythagoras_and_invisibility(x64, real):
    n = 16
    mask = _line_mask(n)
    rng = np.random.default_rng(5)
    x = rng.random((3, n, n))
    recon = x + 0.1 * rng.standard_normal((3, n, n))
    s = hal.error_split(recon, x, mask, real=real)
    np.testing.assert_allclose(np.asarray(s["range"] + s["kernel"]), recon - x, atol=1e-13)
    np.testing.assert_allclose(np.asarray(s["error_norm"]) ** 2,
                               np.asarray(s["range_norm"]) ** 2 + np.asarray(s["kernel_norm"]) ** 2, rtol=1e-12)
    assert np.max(np.abs(np.asarray(fourier.forward(s["kernel"], mask)))) < 1e-13
    np.testing.assert_allclose(np.asarray(fourier.forward(s["range"], mask)),
                               np.asarray(fourier.forward(recon - x, mask)), atol=1e-13)
    np.testing.assert_allclose(np.asarray(s["kernel_fraction"]),
                               np.asarray(s["kernel_norm"]) ** 2 / np.asarray(s["error_norm"]) ** 2, rtol=1e-12)
    if real:
        assert np.isrealobj(np.asarray(s["kernel"])) and np.isrealobj(np.asarray(s["range"]))
    for i in range(3):
        one = hal.error_split(recon[i], x[i], mask, real=real)
        np.testing.assert_allclose(float(one["kernel_norm"]), float(s["kernel_norm"][i]), rtol=1e-12)
    # The complex kernel is at least as large as the real one.
    if real:
        sc = hal.error_split(recon, x, mask)
        assert np.all(np.asarray(sc["kernel_norm"]) >= np.asarray(s["kernel_norm"]) - 1e-12)


def test_error_split_of_a_data_consistent_recon_is_all_kernel(x64):
    n = 16
    mask = _line_mask(n)
    rng = np.random.default_rng(6)
    x = rng.random((n, n))
    planted = np.asarray(hal.detail_in_kernel(rng.standard_normal((n, n)), mask, real=True))
    s = hal.error_split(x + planted, x, mask, real=True)
    assert float(s["range_norm"]) < 1e-13
    assert float(s["kernel_fraction"]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(np.asarray(s["kernel"]), planted, atol=1e-13)


def test_measurement_noise_has_exact_norm_and_lives_on_the_mask():
    mask = _line_mask(16)
    e = hal.measurement_noise(jax.random.key(0), mask, 0.5)
    assert e.dtype == jnp.complex64
    assert float(jnp.linalg.norm(e)) == pytest.approx(0.5, rel=1e-5)
    assert float(jnp.max(jnp.abs(e[:, ~mask[0]]))) == 0.0
    noise = jax.jit(hal.measurement_noise, static_argnums=3)
    np.testing.assert_allclose(np.asarray(noise(jax.random.key(0), mask, 0.5, None)), np.asarray(e), rtol=1e-5,
                               atol=1e-7)
    assert not np.allclose(np.asarray(e), np.asarray(noise(jax.random.key(1), mask, 0.5, None)))
    eb = noise(jax.random.key(0), mask, jnp.array([1.0, 2.0]), (2, 16, 16))
    np.testing.assert_allclose(np.asarray(jnp.linalg.norm(eb, axis=(-2, -1))), [1.0, 2.0], rtol=1e-5)


def test_squared_error_loss_keeps_the_sign_of_the_target():
    target = -jnp.ones((2, 4, 4))
    assert float(pair_training.squared_error_loss(jnp.ones((2, 4, 4)), target)) == pytest.approx(64.0)
    assert float(pair_training.squared_error_loss(target, target)) == 0.0
    # Unlike AUTOMAP's magnitude loss, which would call this a perfect fit.
    assert float(train.magnitude_l2_loss(jnp.ones((2, 4, 4)), target)) == 0.0


# ----------------------------------------------------------------------------- training on pairs


@pytest.fixture(scope="module")
def automap32():
    """One small AUTOMAP problem shared by the training tests (so its step compiles once)."""
    n = 32
    mask = _line_mask(n)
    x1 = phantoms.shepp_logan(n)
    model = Automap(n=n, m=int(mask.sum()), hidden=64, conv_features=16)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), fourier.gather(fourier.fft2c(x1), mask))
    opt = train.make_optimizer("adam", 2e-3, decay_steps=400, final_lr_fraction=0.01)
    detail = phantoms.ellipse(n, (0.3, -0.35), (0.1, 0.08), value=0.3)
    return dict(mask=mask, x1=x1, model=model, params=params, opt=opt, detail=detail)


def test_stacked_training_equals_training_one_by_one(automap32):
    p = automap32
    mask, x1, model, params, opt, d = (p[k] for k in ("mask", "x1", "model", "params", "opt", "detail"))
    targets = np.stack([np.stack([x1, x1 + d]), np.stack([x1, x1 - d])])        # (2, 2, 32, 32)
    fit0 = pair_training.init_pair_fit(params, opt, 2)
    kw = dict(steps=4, chunk=2, min_loss=1e-3)
    both = pair_training.fit_pairs(model, mask, targets, opt, fit0, vmap=True, **kw)
    assert int(both.iteration) == 4
    np.testing.assert_array_equal(np.asarray(both.state.step), [4, 4])
    seq = pair_training.fit_pairs(model, mask, targets, opt, fit0, vmap=False, **kw)
    for g in range(2):
        alone = pair_training.fit_pairs(model, mask, targets[g:g + 1], opt, pair_training.init_pair_fit(params, opt, 1), **kw)
        for a, b, c in zip(*(jax.tree_util.tree_leaves(f.state.params) for f in (alone, both, seq))):
            np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[g]), rtol=2e-4, atol=2e-6)
            np.testing.assert_allclose(np.asarray(a[0]), np.asarray(c[g]), rtol=2e-4, atol=2e-6)
    # The two networks saw different data, so they differ.
    first = jax.tree_util.tree_leaves(both.state.params)[0]
    assert not np.allclose(np.asarray(first[0]), np.asarray(first[1]))
    rec = pair_training.stacked_reconstructions(model, both.state.params, mask, fourier.forward(targets, mask))
    for g in range(2):
        pg = jax.tree_util.tree_map(lambda a: a[g], both.state.params)
        direct = jax.jit(reconstruction_map(model, pg, mask))(fourier.forward(targets[g], mask))
        np.testing.assert_allclose(np.asarray(rec[g]), np.asarray(direct), rtol=1e-5, atol=1e-6)


def test_fit_pairs_validates_its_arguments():
    # Everything is checked before the model is used: stand-ins suffice.
    mask, model, params = _line_mask(16), None, {"w": jnp.zeros(3)}
    opt = train.make_optimizer("adam", 1e-3)
    fit = pair_training.init_pair_fit(params, opt, 2)
    with pytest.raises(ValueError, match="groups"):
        pair_training.fit_pairs(model, mask, np.zeros((3, 1, 16, 16)), opt, fit, steps=1)
    with pytest.raises(ValueError, match="G, P, H, W"):
        pair_training.fit_pairs(model, mask, np.zeros((2, 16, 16)), opt, fit, steps=1)
    with pytest.raises(ValueError, match="steps"):
        pair_training.fit_pairs(model, mask, np.zeros((2, 1, 16, 16)), opt, fit, steps=0)
    with pytest.raises(ValueError, match="num_networks"):
        pair_training.init_pair_fit(params, opt, 0)


def test_detail_in_the_kernel_is_transferred(automap32):
    """Acceptance (issue 6, item 1): a detail with ||A x_det|| / ||x_det|| <= 1e-3, AUTOMAP
    (hidden 64) trained on the single pair until min_loss: >= 80% of the detail's energy
    appears in the reconstruction of the detail-free image."""
    p = automap32
    mask, x1, model, params, opt = (p[k] for k in ("mask", "x1", "model", "params", "opt"))
    detail = hal.detail_in_kernel(p["detail"], mask, real=True)
    assert float(hal.visibility(detail, mask)) <= 1e-3
    targets = np.asarray(x1 + detail)[None, None]
    seen = []
    fit = pair_training.fit_pairs(model, mask, targets, opt, pair_training.init_pair_fit(params, opt, 1), steps=400,
                        min_loss=1e-3, chunk=100, callback=lambda f, losses: seen.append(losses.shape))
    assert bool(fit.done[0]), "the single pair was not fitted to min_loss in 400 steps"
    stopped = int(fit.stopped_at[0])
    assert 0 < stopped == int(fit.state.step[0]) <= int(fit.iteration) <= 400
    assert sum(s[0] for s in seen) == int(fit.iteration) and all(s[1] == 1 for s in seen)
    rec = pair_training.stacked_reconstructions(model, fit.state.params, mask,
                                      jnp.stack([fourier.forward(x1, mask), fourier.forward(targets[0, 0], mask)])[None])
    assert float(pair_training.squared_error_loss(rec[0, 1], targets[0, 0])) <= 1e-3   # the frozen parameters
    frac = float(hal.transferred_fraction(rec[0, 0], x1, detail))
    assert frac >= 0.8
