"""Tests of mrijax.train (optimisers, losses, the train step, fit, evaluate) and of the seeded batches of
mrijax.data.pipeline."""

import json

import numpy as np
import jax
import jax.numpy as jnp
import optax
import pytest
import flax.linen as nn

from mrijax import fourier, metrics, models, train
from mrijax.data import pipeline
from mrijax.models import Automap, Cascade

SIZE = 16


def line_mask(shape, seed):
    """A cheap seeded column mask (the DC column always sampled): no dependence on mrijax.masks."""
    h, w = shape
    rng = np.random.default_rng(seed)
    cols = rng.random(w) < 0.4
    cols[w // 2] = True
    return np.broadcast_to(cols, (h, w)).copy()


def tiny_cascade():
    # "conv" for the thin convolutions: the CPU matmul variant compiles more slowly.
    return Cascade(n_cascades=2, n_convs=3, features=8, small_conv_impl="conv")


@pytest.fixture(scope="module")
def source():
    return pipeline.BatchSource("ellipses", SIZE, 4, seed=3, mask_fn=line_mask, mask_mode="per_image")


@pytest.fixture(scope="module")
def setup(source):
    """One tiny cascade, optimiser and compiled train step (with measurement noise) for the module."""
    model = tiny_cascade()
    opt = train.make_optimizer("adam", lr=3e-3)
    batch = source(0)
    state = jax.jit(lambda x, mask: train.create_train_state(  # one compilation, not op by op
        model.init(jax.random.PRNGKey(0), x, x, mask), opt, seed=5))(batch["target"], batch["mask"])
    step = train.make_train_step(train.predictor(model, noise_std=0.01), opt, "mse")
    return model, state, step


# ----------------------------------------------------------------------------- optimisers


def test_automap_rmsprop_first_step_matches_tf1_formula():
    # TF1 RMSProp: ms <- decay*ms + (1-decay) g^2 with ms_0 = 1; update = -lr g / sqrt(ms + eps).
    opt = train.make_optimizer("automap_rmsprop")
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, -1.0, 4.0])}
    updates, _ = opt.update(grads, opt.init(params), params)
    ms = 0.9 * 1.0 + 0.1 * np.square(np.asarray(grads["w"]))
    expected = -2e-5 * np.asarray(grads["w"]) / np.sqrt(ms + 1e-10)
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)


def test_adam_weight_decay_is_decoupled():
    # With zero gradient, AdamW's update is -lr * wd * param exactly.
    opt = train.make_optimizer("adam", lr=0.1, weight_decay=0.01)
    params = {"w": jnp.array([3.0, -1.0])}
    updates, _ = opt.update({"w": jnp.zeros(2)}, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.01 * np.array([3.0, -1.0]), rtol=1e-6)


def test_clip_norm_and_cosine_decay():
    opt = train.make_optimizer("rmsprop", lr=1.0, clip_norm=1e-3, decay_steps=10, final_lr_fraction=0.0)
    params = {"w": jnp.ones(4)}
    state = opt.init(params)
    big = {"w": jnp.full(4, 100.0)}
    # RMSProp's update is invariant to the gradient scale, so a clipped first step equals the
    # step of the gradient already scaled to norm 1e-3.
    u_big, _ = opt.update(big, state, params)
    u_small, _ = opt.update({"w": jnp.full(4, 0.5e-3)}, state, params)
    np.testing.assert_allclose(u_big["w"], u_small["w"], rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(name="sgd"), dict(lr=0.0), dict(lr=-1.0), dict(weight_decay=-1.0),
                                    dict(b1=1.5), dict(clip_norm=0.0), dict(decay_steps=0)])
def test_make_optimizer_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        train.make_optimizer(**kwargs)


# ----------------------------------------------------------------------------- losses


def test_losses_known_values():
    pred = jnp.array([[[1 + 1j, 0.0], [2.0, 0.0]]])           # (1, 2, 2)
    target = jnp.array([[[1.0, 0.0], [0.0, 3j]]])
    diff = np.abs(np.asarray(pred - target))                 # [1, 0, 2, 3]
    np.testing.assert_allclose(train.l1_loss(pred, target), diff.mean(), rtol=1e-6)
    np.testing.assert_allclose(train.mse_loss(pred, target), np.mean(diff ** 2), rtol=1e-6)
    mag = np.abs(np.asarray(pred)) - np.abs(np.asarray(target))  # [sqrt2-1, 0, 2, -3]
    np.testing.assert_allclose(train.magnitude_l2_loss(pred, target), np.sum(mag ** 2), rtol=1e-6)


def test_magnitude_l2_is_per_image_sum_averaged_over_batch():
    pred = jnp.zeros((2, 3, 3))
    target = jnp.stack([jnp.ones((3, 3)), 2 * jnp.ones((3, 3))])
    np.testing.assert_allclose(train.magnitude_l2_loss(pred, target), (9 * 1 + 9 * 4) / 2, rtol=1e-6)


def test_activation_l1_over_a_pytree():
    acts = {"a": (jnp.array([[1.0, -2.0], [3.0, 0.0]]),), "b": jnp.array([[[-1.0]], [[1.0]]])}
    # per-image sums: a -> [3, 3], b -> [1, 1]; means 3 + 1
    np.testing.assert_allclose(train.activation_l1(acts), 4.0)
    with pytest.raises(ValueError, match="no activations"):
        train.activation_l1({})


def test_train_step_psnr_is_metrics_psnr_of_magnitudes():
    # The step's "psnr" is the batch mean of mrijax.metrics.psnr on magnitudes: a complex
    # prediction is compared by modulus, a real one (AUTOMAP's) by |prediction|, and identical
    # magnitudes give +inf.
    rng = np.random.default_rng(0)
    ref = rng.random((3, 8, 8)).astype(np.float32)
    noisy = (ref + 0.1 * rng.standard_normal((3, 8, 8)) * 1j).astype(np.complex64)
    batch = {"target": ref.astype(np.complex64), "mask": np.ones((3, 8, 8), bool)}
    params = {"w": jnp.zeros(())}
    opt = optax.sgd(0.0)

    def psnr_of(prediction):
        step = train.make_train_step(lambda p, b, r: (prediction + p["w"], None), opt, "mse")
        return float(step(train.create_train_state(params, opt), batch)[1]["psnr"])

    np.testing.assert_allclose(psnr_of(jnp.asarray(noisy)), np.mean(metrics.psnr(noisy, ref)), rtol=1e-5)
    assert np.isinf(psnr_of(jnp.asarray(ref)))
    assert np.isinf(psnr_of(-jnp.asarray(ref)))  # a real prediction is compared by its modulus


# ----------------------------------------------------------------------------- train step


def test_train_step_loss_decreases_on_a_tiny_problem(source, setup):
    _, state, step = setup
    batch = source(0)
    losses = []
    for _ in range(25):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert int(state.step) == 25
    assert losses[-1] < 0.5 * losses[0], losses
    assert np.isfinite(float(m["psnr"])) and float(m["psnr"]) > 0


def test_train_step_is_pure_and_splits_the_rng(source, setup):
    _, state, step = setup
    batch = source(1)
    s1, m1 = step(state, batch)
    s2, m2 = step(state, batch)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        np.testing.assert_array_equal(a, b)
    assert float(m1["loss"]) == float(m2["loss"])
    assert not np.array_equal(s1.rng, state.rng)
    # the noise comes from the state's key: another key, another loss
    s3, m3 = step(state.replace(rng=jax.random.PRNGKey(6)), batch)
    assert float(m3["loss"]) != float(m1["loss"])
    # the total loss is the data loss when there is no penalty
    assert float(m1["loss"]) == float(m1["data_loss"]) and float(m1["penalty"]) == 0.0


def test_predictor_simulates_zero_filled_input(source):
    # A registered "model" that returns its zero-filled input and its k-space shows what the
    # predictor feeds a model.
    class Echo(nn.Module):
        @nn.compact
        def __call__(self, x_zf, k0):
            return x_zf, k0

    models.register(models.ModelSpec(name="test_echo", cls=Echo, init=lambda m, key, op, y: {},
                                     apply=lambda m, v, op, y: m.apply(v, op.adjoint(y), y)))
    batch = source(2)
    x, mask = batch["target"], batch["mask"]
    (x_zf, k0), _ = jax.jit(train.predictor(Echo()))({}, batch, jax.random.PRNGKey(0))
    # k0 = mask * F x and x_zf = F^-1 k0, checked with NumPy's FFT
    k_ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)) * mask
    x_ref = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k_ref, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(k0, k_ref, atol=1e-5)
    np.testing.assert_allclose(x_zf, x_ref, atol=1e-5)
    # with noise: k0 still vanishes off the mask, and differs on it
    (_, k_noisy), _ = jax.jit(train.predictor(Echo(), noise_std=0.1))({}, batch, jax.random.PRNGKey(0))
    assert np.all(np.asarray(k_noisy)[~mask] == 0)
    assert not np.allclose(k_noisy, k0)
    with pytest.raises(ValueError, match="noise_std"):
        train.predictor(Echo(), noise_std=-1.0)


def test_automap_step_adds_the_activation_penalty():
    n = 8
    mask = line_mask((n, n), 1)
    model = Automap(n=n, m=int(mask.sum()), hidden=16, conv_features=4)
    src = pipeline.BatchSource("ellipses", n, 2, seed=0, mask_fn=line_mask, mask_mode="fixed")
    batch = src(0)
    predict = train.predictor(model, fixed_mask=mask)
    with pytest.raises(ValueError, match="tied to one mask"):
        train.predictor(model)
    y = np.asarray(batch["target"]).reshape(2, -1)[:, np.flatnonzero(mask)]  # any y of the right length
    opt = train.make_optimizer("automap_rmsprop")
    state = jax.jit(lambda y: train.create_train_state(model.init(jax.random.PRNGKey(0), y), opt))(y)
    params = state.params
    _, m = train.make_train_step(predict, opt, "magnitude_l2", activation_penalty=1e-4)(state, batch)
    y = fourier.gather(fourier.fft2c(batch["target"]), mask)  # what the predictor feeds the model
    out, inter = jax.jit(lambda p, y: model.apply(p, y, mutable=["intermediates"]))(params, y)
    expected_penalty = 1e-4 * float(train.activation_l1(inter["intermediates"]))
    expected_data = float(train.magnitude_l2_loss(out, jnp.abs(batch["target"])))
    assert expected_penalty > 0
    np.testing.assert_allclose(float(m["penalty"]), expected_penalty, rtol=1e-5)
    np.testing.assert_allclose(float(m["data_loss"]), expected_data, rtol=1e-5)
    np.testing.assert_allclose(float(m["loss"]), expected_data + expected_penalty, rtol=1e-5)


def test_make_train_step_validates():
    with pytest.raises(ValueError, match="loss"):
        train.make_train_step(lambda p, b, r: (b["target"], None), optax.adam(1e-3), loss="huber")
    with pytest.raises(ValueError, match="activation_penalty"):
        train.make_train_step(lambda p, b, r: (b["target"], None), optax.adam(1e-3), activation_penalty=-1)


# ----------------------------------------------------------------------------- batches


def test_batches_are_pure_functions_of_seed_and_index():
    a = pipeline.BatchSource("ellipses", SIZE, 3, seed=7, mask_fn=line_mask, mask_mode="per_image", max_phase=1.0)
    b = pipeline.BatchSource("ellipses", SIZE, 3, seed=7, mask_fn=line_mask, mask_mode="per_image", max_phase=1.0)
    for i in (5, 0, 5):  # any order
        ba, bb = a(i), b(i)
        np.testing.assert_array_equal(ba["target"], bb["target"])
        np.testing.assert_array_equal(ba["mask"], bb["mask"])
    assert not np.array_equal(a(0)["target"], a(1)["target"])
    it = a.iterate(start=4)
    next(it)
    np.testing.assert_array_equal(next(it)["target"], b(5)["target"])
    c = pipeline.BatchSource("ellipses", SIZE, 3, seed=8, mask_fn=line_mask, mask_mode="per_image")
    assert not np.array_equal(a.images_for(0), c.images_for(0))


def test_shepp_logan_variants_are_unlimited_training_data():
    from mrijax.data import phantoms
    src = pipeline.BatchSource("shepp_logan_variants:1,ellipses:1", SIZE, 6, seed=3, augment=False,
                               mask_fn=line_mask)
    seen = 0
    for i in (0, 1):
        images = src.images_for(i)
        for j, (s, k) in enumerate(src.picks(i)):
            assert k == -1  # generators, not pools
            make = phantoms.shepp_logan_variant if s == 0 else phantoms.random_ellipses
            direct = make(SIZE, [3, i, j])
            np.testing.assert_allclose(images[j], direct / direct.max(), atol=1e-6)
            seen += s == 0
    assert seen >= 2  # several fresh variants, not one fixed image


def test_batch_content_scaling_phase_and_dtypes():
    src = pipeline.BatchSource("ellipses", SIZE, 4, seed=1, mask_fn=line_mask, max_phase=0.5)
    batch = src(3)
    assert batch["target"].dtype == np.complex64 and batch["mask"].dtype == bool
    assert batch["target"].shape == (4, SIZE, SIZE) and batch["mask"].shape == (4, SIZE, SIZE)
    np.testing.assert_allclose(np.abs(batch["target"]).max(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.abs(batch["target"]), src.images_for(3), atol=1e-6)
    assert np.abs(np.angle(batch["target"][np.abs(batch["target"]) > 0.1])).max() > 0.05


def test_mask_modes():
    kw = dict(images="ellipses", size=SIZE, batch_size=3, seed=2, mask_fn=line_mask)
    fixed = pipeline.BatchSource(mask_mode="fixed", mask_seed=11, **kw)
    m0, m1 = fixed.masks_for(0), fixed.masks_for(1)
    np.testing.assert_array_equal(m0, m1)
    np.testing.assert_array_equal(m0[0], line_mask((SIZE, SIZE), 11))
    np.testing.assert_array_equal(fixed.fixed_mask, m0[0])
    per_batch = pipeline.BatchSource(mask_mode="per_batch", **kw)
    pb = per_batch.masks_for(0)
    assert all(np.array_equal(pb[0], pb[j]) for j in range(3))
    assert not np.array_equal(pb[0], per_batch.masks_for(1)[0])
    per_image = pipeline.BatchSource(mask_mode="per_image", **kw).masks_for(0)
    assert not all(np.array_equal(per_image[0], per_image[j]) for j in range(3))


def test_masks_from_mrijax_masks():
    src = pipeline.BatchSource("ellipses", 32, 2, seed=0, mask_kind="gaussian_lines",
                               mask_kwargs=dict(acceleration=3, sample_n=4), mask_mode="per_image")
    masks = src.masks_for(0)
    assert masks.shape == (2, 32, 32)
    assert all(m[0].sum() == 32 // 3 for m in masks)  # columns: exactly W // R lines
    assert np.all(masks == masks[:, :1, :])            # line masks select whole columns


def test_augmentation_is_a_symmetry_of_the_square():
    image = np.arange(16.0).reshape(4, 4)
    outs = [pipeline.augment_dihedral(image, c) for c in range(8)]
    np.testing.assert_array_equal(outs[0], image)
    assert len({o.tobytes() for o in outs}) == 8  # all eight group elements are distinct
    plain = pipeline.BatchSource("ellipses", SIZE, 4, seed=9, mask_fn=line_mask, augment=False).images_for(0)
    augmented = pipeline.BatchSource("ellipses", SIZE, 4, seed=9, mask_fn=line_mask, augment=True).images_for(0)
    for p, a in zip(plain, augmented):
        assert any(np.array_equal(pipeline.augment_dihedral(p, c), a) for c in range(8))
    assert not np.array_equal(plain, augmented)


def test_array_images_and_weighted_specs():
    pool = np.stack([np.full((SIZE, SIZE), v, np.float32) for v in (1.0, 2.0, 3.0)])
    pool[:, 0, 0] = 10.0  # scaled to max 1 per image
    src = pipeline.BatchSource(pool, SIZE, 6, seed=0, mask_fn=line_mask, augment=False)
    images = src.images_for(0)
    assert np.all(images.max(axis=(1, 2)) == 1.0)
    assert set(np.round(images[:, 5, 5] * 10).astype(int)) <= {1, 2, 3}
    assert pipeline.parse_image_spec("ellipses:0.5, mni:coronal:0.25,mni:sagittal") == [
        ("ellipses", 0.5), ("mni:coronal", 0.25), ("mni:sagittal", 1.0)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=0), "size"), (dict(batch_size=0), "batch_size"), (dict(seed=-1), "seed"),
    (dict(mask_mode="sometimes"), "mask_mode"), (dict(max_phase=-1.0), "max_phase"),
    (dict(images=np.zeros((2, 8, 8))), "images"), (dict(images="ellipses:0"), "weight"),
    (dict(images=" "), "spec")])
def test_batch_source_rejects_bad_settings(kwargs, match):
    args = dict(images="ellipses", size=SIZE, batch_size=2, mask_fn=line_mask)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pipeline.BatchSource(**args)


# ----------------------------------------------------------------------------- fit and evaluate


def test_fit_logs_validates_checkpoints_and_stops_early(tmp_path, source, setup):
    _, state, step = setup
    lines, calls = [], []

    def validate(params):
        calls.append(1)
        return {"psnr": float(len(calls))}  # improves every time

    config = {"model": {"class": "Cascade", "kwargs": {}}, "note": "test"}
    res = train.fit(state, step, source, 6, validate=validate, validate_every=2, best_metric="val_psnr",
                    log_every=3, ckpt_dir=str(tmp_path), ckpt_every=4, config=config, log=lines.append)
    assert int(res.state.step) == 6 and not res.stopped_early
    logged = [r for r in res.history if "loss" in r]
    assert [r["step"] for r in logged] == [3, 6]
    assert all({"psnr", "steps_per_s", "grad_norm"} <= set(r) for r in logged)
    assert [r["step"] for r in res.history if "val_psnr" in r] == [2, 4, 6]
    assert res.best == {"step": 6, "val_psnr": 3.0}
    assert any("steps/s" in line and "psnr" in line for line in lines)
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["best"]["step"] == 6
    from mrijax import checkpoint
    assert checkpoint.read_meta(tmp_path, "latest")["step"] == 6
    assert checkpoint.read_meta(tmp_path, "best")["step"] == 6

    stopped = train.fit(state, step, source, 50, min_loss=1e9, log=None)
    assert stopped.stopped_early and int(stopped.state.step) == 1


def test_fit_raises_on_nan_loss(source):
    def bad_step(state, batch):
        return state.replace(step=state.step + 1), {"loss": jnp.nan, "psnr": 0.0}

    state = train.TrainState(params={}, opt_state=(), step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(0))
    with pytest.raises(FloatingPointError, match="step 1"):
        train.fit(state, bad_step, source, 3, log=None)


def test_evaluate_identity_network_equals_zero_filled(source, setup):
    # A cascade whose blocks output zero residual returns DC(x_zf) = x_zf: PSNRs must agree.
    model, state, _ = setup
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.zeros_like(p) if "conv_2" in jax.tree_util.keystr(path) else p, state.params)
    images = source.images_for(4)
    result = train.evaluate(model, params, images, lambda i: line_mask((SIZE, SIZE), i), batch_size=3)
    np.testing.assert_allclose(result["psnr_net_all"], result["psnr_zf_all"], rtol=1e-4)
    np.testing.assert_allclose(result["ssim_net_all"], result["ssim_zf_all"], rtol=1e-4, atol=1e-5)
    assert result["count"] == 4 and result["psnr_zf_all"].shape == (4,)
    zf = np.abs(np.asarray(fourier.adjoint(fourier.forward(images[0], line_mask((SIZE, SIZE), 0)),
                                           line_mask((SIZE, SIZE), 0))))
    np.testing.assert_allclose(result["psnr_zf_all"][0], metrics.psnr(zf, images[0]), rtol=1e-5)
    with pytest.raises(ValueError, match="mask"):
        train.evaluate(model, params, images, np.ones((3, SIZE, SIZE), bool))


# ----------------------------------------------------------------------------- resumed histories


def _counting_step(state, batch):
    """A cheap deterministic step: params + 1, loss 10 / step (so every record's mean matters)."""
    params = jax.tree_util.tree_map(lambda p: p + 1.0, state.params)
    step = state.step + 1
    return state.replace(params=params, step=step), {"loss": 10.0 / step, "psnr": 1.0 * step}


def _validate(params):
    return {"psnr": float(sum(jnp.sum(jnp.abs(p)) for p in jax.tree_util.tree_leaves(params)))}


def _without_rates(history):
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in history]


def _fit(state, ckpt_dir, **kw):
    kw = dict(dict(validate=_validate, validate_every=4, log_every=2, ckpt_every=3, log=None,
                   config={"model": {"class": "cascade", "kwargs": {}}}), **kw)
    return train.fit(state, _counting_step, lambda i: None, 8, ckpt_dir=str(ckpt_dir), **kw)


def test_a_kill_between_checkpoint_and_metrics_json_loses_no_record(tmp_path, setup, monkeypatch):
    from mrijax import checkpoint
    _, state, _ = setup
    whole = _fit(state, tmp_path / "whole")

    # Killed right after the step-3 checkpoint, before metrics.json is written (a record at step 2
    # and the metrics of step 3, half of the step-4 record, are then only in the checkpoint).
    real = checkpoint.write_json_atomic

    def killed(path, obj, strict=False):
        if str(path).endswith("/metrics.json"):
            raise KeyboardInterrupt
        real(path, obj, strict)
    monkeypatch.setattr(checkpoint, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        _fit(state, tmp_path / "cut")
    monkeypatch.setattr(checkpoint, "write_json_atomic", real)
    assert not (tmp_path / "cut" / "metrics.json").exists()

    restored, _, meta = checkpoint.restore(tmp_path / "cut", state)
    assert int(restored.step) == 3
    resumed = _fit(restored, tmp_path / "cut", resume_from=meta)
    assert _without_rates(resumed.history) == _without_rates(whole.history)
    with open(tmp_path / "cut" / "metrics.json") as f:
        on_disk = json.load(f)
    with open(tmp_path / "whole" / "metrics.json") as f:
        assert _without_rates(on_disk["history"]) == _without_rates(json.load(f)["history"])
    assert resumed.best == whole.best and on_disk["best"] == whole.best
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(resumed.state.params)[0],
                                  jax.tree_util.tree_leaves(whole.state.params)[0])
    with pytest.raises(ValueError, match="step 3"):
        _fit(state, tmp_path / "other", resume_from=meta)     # the meta of another step


def test_resuming_a_finished_run_changes_nothing(tmp_path, setup, monkeypatch):
    from mrijax import checkpoint
    _, state, _ = setup
    # Stops early at step 5 (loss 10 / 5 <= 2).
    whole = _fit(state, tmp_path, min_loss=2.0)
    assert whole.stopped_early and int(whole.state.step) == 5
    restored, _, meta = checkpoint.restore(tmp_path, state)
    saves = []
    monkeypatch.setattr(checkpoint, "save", lambda *a, **k: saves.append(a))
    again = _fit(restored, tmp_path, min_loss=2.0, resume_from=meta)
    assert again.stopped_early and int(again.state.step) == 5
    assert _without_rates(again.history) == _without_rates(whole.history) and again.best == whole.best
    assert saves == []                                           # the finished checkpoint is not rewritten
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["history"] == whole.history
    # A lower min_loss (allowed on resume) continues the run.
    monkeypatch.undo()
    more = _fit(restored, tmp_path / "more", min_loss=0.1, resume_from=meta)
    assert not more.stopped_early and int(more.state.step) == 8
