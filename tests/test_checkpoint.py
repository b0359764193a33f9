"""Tests of mrijax.checkpoint: round trips, exact resume, clear errors, load_model, the shipped checkpoint."""

import json
import os
import pathlib
import shutil

import numpy as np
import jax
import jax.numpy as jnp
import flax.linen as nn
import pytest

from mrijax import checkpoint, fourier, train, models
from mrijax.data import pipeline
from mrijax.models import Cascade

SIZE = 16
ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "cascade_gaussian33"


def line_mask(shape, seed):
    h, w = shape
    cols = np.random.default_rng(seed).random(w) < 0.4
    cols[w // 2] = True
    return np.broadcast_to(cols, (h, w)).copy()


MODEL_KW = dict(n_cascades=1, n_convs=2, features=4, small_conv_impl="conv")


MODEL = Cascade(**MODEL_KW)
OPTIMIZER = train.make_optimizer("adam", lr=3e-3, decay_steps=8)
# One compiled step for the whole module: a resumed run in a new process would compile the
# same function; here sharing it only saves compile time.
STEP = train.make_train_step(train.predictor(MODEL, noise_std=0.01), OPTIMIZER, "l1")
# Likewise one compiled initialisation (jit: a single compilation instead of op-by-op dispatch).
INIT_STATE = jax.jit(lambda x, mask: train.create_train_state(
    MODEL.init(jax.random.PRNGKey(0), x, x, mask), OPTIMIZER, seed=4))


def make_run(seed=0, **train_overrides):
    """A tiny cascade run, rebuilt from scratch: (config, source, fresh state, step function)."""
    model = Cascade(**MODEL_KW)
    source = pipeline.BatchSource("ellipses", SIZE, 2, seed=seed, mask_fn=line_mask, mask_mode="per_image")
    state = INIT_STATE(source(0)["target"], source(0)["mask"])
    step = STEP
    config = {"model": models.model_config(model), **source.config(),
              "train": dict(dict(lr=3e-3, steps=8, loss="l1"), **train_overrides)}
    return config, source, state, step


def assert_trees_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def run_parts():
    return make_run()


def test_round_trip_state_and_config(tmp_path, run_parts):
    config, source, state, step = run_parts
    state, _ = step(state, source(0))
    path = checkpoint.save(tmp_path, state, config, metrics={"note": 1.5}, arrays={"mask": line_mask((4, 4), 0)})
    assert path == os.path.join(tmp_path, "latest")
    restored, stored, meta = checkpoint.restore(tmp_path, make_run()[2], config=config)
    assert_trees_equal(restored, state)  # params, opt_state (optax named tuples), step, rng
    assert isinstance(restored.opt_state, type(state.opt_state))
    assert stored == json.loads(json.dumps(config))
    assert meta["step"] == 1 and meta["metrics"] == {"note": 1.5}
    np.testing.assert_array_equal(checkpoint.load_arrays(tmp_path)["mask"], line_mask((4, 4), 0))
    assert_trees_equal(checkpoint.load_params(tmp_path), state.params)
    # nothing temporary is left behind, also after overwriting
    checkpoint.save(tmp_path, state, config)
    assert sorted(os.listdir(tmp_path)) == ["latest"]


def test_exact_resume(tmp_path):
    """Train N steps == train k, save, restore into a fresh state, train N - k (bitwise)."""
    n, k = 5, 2
    config, source, state, step = make_run()
    full = state
    for i in range(n):
        full, _ = step(full, source(i))

    part = state
    for i in range(k):
        part, _ = step(part, source(i))
    checkpoint.save(tmp_path, part, config)
    del part
    config2, source2, fresh, step2 = make_run()  # a new process would rebuild all of this
    resumed, _, _ = checkpoint.restore(tmp_path, fresh, config=config2)
    abstract, _, _ = checkpoint.restore(tmp_path, jax.eval_shape(lambda: fresh), config=config2)
    assert_trees_equal(abstract, resumed)
    assert int(resumed.step) == k
    for i in range(int(resumed.step), n):
        resumed, _ = step2(resumed, source2(i))
    assert_trees_equal(resumed, full)


def test_exact_resume_through_fit(tmp_path):
    config, source, state, step = make_run()
    straight = train.fit(state, step, source, 6, log=None).state
    first = train.fit(state, step, source, 3, ckpt_dir=str(tmp_path), config=config, log=None, log_every=1)
    config2, source2, fresh, step2 = make_run()
    resumed, _, _ = checkpoint.restore(tmp_path, fresh, config=dict(config2, train=dict(config2["train"], steps=6)))
    second = train.fit(resumed, step2, source2, 6, ckpt_dir=str(tmp_path), config=config2,
                       history=first.history + [{"step": 99, "loss": 0.0}], log=None, log_every=1)
    assert_trees_equal(second.state, straight)
    # the history continues (records past the restored step, e.g. from a crashed run, are dropped)
    assert [r["step"] for r in second.history] == list(range(1, 7))


def test_config_mismatch_is_refused_with_the_keys(tmp_path, run_parts):
    config, _, state, _ = run_parts
    checkpoint.save(tmp_path, state, config)
    other = json.loads(json.dumps(config))
    other["model"]["kwargs"]["features"] = 8
    other["data"]["seed"] = 99
    with pytest.raises(checkpoint.ConfigMismatchError) as err:
        checkpoint.restore(tmp_path, state, config=other)
    message = str(err.value)
    assert str(tmp_path) in message and "model.kwargs.features" in message and "data.seed" in message
    # the number of steps may change between an interrupted run and its continuation
    longer = json.loads(json.dumps(config))
    longer["train"]["steps"] = 1000
    checkpoint.restore(tmp_path, state, config=longer)
    # so may the way the same convolutions are computed (and a checkpoint written before the
    # option existed, whose config lacks the key, still resumes)
    other_impl = json.loads(json.dumps(config))
    other_impl["model"]["kwargs"]["conv_impl"] = "winograd"
    del other_impl["model"]["kwargs"]["small_conv_impl"]
    checkpoint.restore(tmp_path, state, config=other_impl)


def test_missing_checkpoints_name_the_path(tmp_path, run_parts):
    _, _, state, _ = run_parts
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.restore(tmp_path / "nope", state)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        checkpoint.restore(tmp_path, state)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        models.load(tmp_path)


@pytest.mark.parametrize("damage", ["delete_params", "truncate_data", "bad_json", "missing_meta"])
def test_corrupt_checkpoints_give_a_clear_error(tmp_path, run_parts, damage):
    config, _, state, _ = run_parts
    path = pathlib.Path(checkpoint.save(tmp_path, state, config))
    if damage == "delete_params":
        shutil.rmtree(path / "params")
    elif damage == "truncate_data":
        for f in (path / "params").rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(b"garbage")
    elif damage == "bad_json":
        (path / "config.json").write_text("{not json")
    else:
        (path / "meta.json").unlink()
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.restore(tmp_path, state)
    assert str(path) in str(err.value)


def test_restore_into_another_model_is_refused(tmp_path, run_parts):
    config, _, state, _ = run_parts
    checkpoint.save(tmp_path, state, config)
    bigger = Cascade(**dict(MODEL_KW, features=8))
    x = jnp.zeros((1, SIZE, SIZE), jnp.complex64)
    # an abstract template (jax.eval_shape) is enough to restore into
    other = jax.eval_shape(lambda: train.create_train_state(
        bigger.init(jax.random.PRNGKey(0), x, x, jnp.ones((SIZE, SIZE), bool)), OPTIMIZER))
    with pytest.raises(checkpoint.CheckpointError, match="shape"):
        checkpoint.restore(tmp_path, other)


def test_params_only_checkpoint_loads_but_does_not_resume(tmp_path, run_parts):
    config, _, state, _ = run_parts
    checkpoint.save(tmp_path, state, config, best=True, include_opt_state=False)
    assert sorted(os.listdir(tmp_path)) == ["best"]
    with pytest.raises(checkpoint.CheckpointError, match="parameters only"):
        checkpoint.restore(tmp_path, state, which="best")
    model, params, _ = models.load(tmp_path)
    assert_trees_equal(params, state.params)


def test_load_model_rebuilds_the_same_function(tmp_path, run_parts):
    config, source, state, _ = run_parts
    checkpoint.save(tmp_path, state, config)
    model, params, stored = models.load(tmp_path)
    assert isinstance(model, Cascade) and model.features == MODEL_KW["features"]
    assert stored["model"] == config["model"]
    batch = source(1)
    k0 = fourier.forward(batch["target"], batch["mask"])
    x_zf = fourier.adjoint(k0, batch["mask"])
    original = Cascade(**MODEL_KW).apply(state.params, x_zf, k0, batch["mask"])
    np.testing.assert_array_equal(model.apply(params, x_zf, k0, batch["mask"]), original)
    # a checkpoint folder can be named directly as well
    assert_trees_equal(models.load(tmp_path / "latest")[1], params)


def test_falls_back_to_the_previous_checkpoint_after_a_crash_between_renames(tmp_path, run_parts):
    config, _, state, _ = run_parts
    checkpoint.save(tmp_path, state, config)
    os.replace(tmp_path / "latest", tmp_path / "latest.old")  # the window inside save()
    restored, _, _ = checkpoint.restore(tmp_path, state)
    assert_trees_equal(restored, state)


def test_custom_models_register_and_bad_configs_fail(tmp_path):
    class Scale(nn.Module):
        factor: float = 2.0

        @nn.compact
        def __call__(self, x):
            return self.param("w", nn.initializers.ones, ()) * self.factor * x

    models.register(models.ModelSpec(
        name="TestScaleModel", cls=Scale, apply=lambda m, v, op, y: m.apply(v, op.adjoint(y)),
        init=lambda m, key, op, y: m.init(key, op.adjoint(y))))
    model = Scale(factor=3.0)
    params = model.init(jax.random.PRNGKey(0), jnp.ones(2))
    state = train.create_train_state(params, train.make_optimizer("adam"))
    config = {"model": {"class": "TestScaleModel", "kwargs": {"factor": 3.0}}}
    checkpoint.save(tmp_path, state, config)
    loaded, loaded_params, _ = models.load(tmp_path)
    np.testing.assert_allclose(loaded.apply(loaded_params, jnp.ones(2)), 3.0)
    # A registered model is a reconstruction map like the library's own.
    f = models.reconstruction_map(loaded, loaded_params, np.ones((4, 4), bool))
    np.testing.assert_allclose(f(fourier.fft2c(jnp.ones((4, 4)))), 3.0, rtol=1e-6)
    with pytest.raises(TypeError, match="not a registered model"):
        models.reconstruction_map(object(), {}, np.ones((4, 4), bool))

    checkpoint.save(tmp_path / "unknown", state, {"model": {"class": "NoSuchNet", "kwargs": {}}})
    with pytest.raises(checkpoint.CheckpointError, match="NoSuchNet"):
        models.load(tmp_path / "unknown")
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save(tmp_path / "bad", state, {"model": object()})
    assert not (tmp_path / "bad").exists() or not os.listdir(tmp_path / "bad")


def test_model_config_of_a_cascade():
    cfg = models.model_config(Cascade(n_cascades=3, features=16))
    assert cfg["class"] == "cascade"   # the registry name (the class name is an alias for old configs)
    assert cfg["kwargs"]["n_cascades"] == 3 and cfg["kwargs"]["features"] == 16
    assert "parent" not in cfg["kwargs"] and "name" not in cfg["kwargs"]
    assert isinstance(models.build(cfg), Cascade)


# ----------------------------------------------------------------------------- the shipped checkpoint


@pytest.mark.skipif(not SHIPPED.exists(), reason=f"shipped checkpoint {SHIPPED} not present")
def test_shipped_checkpoint_rebuilds_a_working_cascade():
    from mrijax import masks
    from mrijax.data import phantoms

    model, params, config = models.load(SHIPPED)
    assert isinstance(model, Cascade)
    assert config["mask"]["kind"] == "gaussian_lines"
    n = 128
    image = jnp.asarray(phantoms.random_ellipses(n, [424242, 0]), jnp.complex64)
    mask = masks.make("gaussian_lines", (n, n), acceleration=3, sample_n=8, seed=12345)
    k0 = fourier.forward(image, mask)
    x_zf = fourier.adjoint(k0, mask)
    out = jax.jit(model.apply)(params, x_zf, k0, mask)
    from mrijax import metrics
    gain = float(metrics.psnr(out, image)) - float(metrics.psnr(x_zf, image))
    assert gain > 5.0, gain
    # data consistency: the measured k-space is reproduced exactly
    np.testing.assert_allclose(fourier.forward(out, mask), k0, atol=1e-4)


@pytest.mark.skipif(not SHIPPED.exists(), reason=f"shipped checkpoint {SHIPPED} not present")
def test_shipped_checkpoint_beats_zero_filling_on_axial_brain_slices():
    # Axial MNI152 slices: a plane the network was not trained on (it saw coronal and sagittal
    # slices of the same template, see checkpoints/README.md).  Measured on these 4 slices:
    # +17.0 / +11.1 / +13.2 / +15.4 dB.
    from mrijax import masks, train
    from mrijax.data import images

    model, params, _ = models.load(SHIPPED)
    ims = images.load_images("mni:axial", 128, count=4, seed=0)
    mask_fn = lambda i: masks.make("gaussian_lines", (128, 128), acceleration=3, sample_n=8, seed=i)
    r = train.evaluate(model, params, ims, mask_fn)
    gains = np.asarray(r["psnr_net_all"]) - np.asarray(r["psnr_zf_all"])
    assert gains.min() >= 3.0, gains


# ----------------------------------------------------------------------------- crashes and leftovers


def _age(path):
    """Date ``path`` back to before this process started (a temporary left by a killed process)."""
    t = checkpoint._STARTED - 60
    os.utime(path, (t, t))


def test_resume_and_restore_agree_on_the_checkpoint_after_a_crash_between_renames(tmp_path, run_parts):
    config, source, state, step = run_parts
    later, _ = step(state, source(0))
    checkpoint.save(tmp_path, state, config, best=True)        # best at step 0, latest at step 1
    checkpoint.save(tmp_path, later, config)
    assert checkpoint.resumable_path(tmp_path) == os.path.join(tmp_path, "latest")
    os.replace(tmp_path / "latest", tmp_path / "latest.old")   # the window inside save()
    # The resume decision and restore pick the same checkpoint: latest.old (step 1), not best.
    assert checkpoint.resumable_path(tmp_path) == os.path.join(tmp_path, "latest.old")
    restored, _, meta = checkpoint.restore(tmp_path, state, config=config)
    assert meta["step"] == 1
    assert_trees_equal(restored, later)
    # A run killed after its first validation but before its first "latest": best is its state.
    shutil.rmtree(tmp_path / "latest.old")
    assert checkpoint.resumable_path(tmp_path) == os.path.join(tmp_path, "best")
    assert_trees_equal(checkpoint.restore(tmp_path, state)[0], state)
    # A parameters-only best cannot be resumed; an empty or missing folder holds nothing.
    checkpoint.save(tmp_path, state, config, best=True, include_opt_state=False)
    assert checkpoint.resumable_path(tmp_path) is None and checkpoint.holds_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        checkpoint.restore(tmp_path, state)
    assert checkpoint.resumable_path(tmp_path / "empty") is None
    assert not checkpoint.holds_checkpoint(tmp_path / "empty")


def test_save_and_write_atomically_remove_stale_temporaries_only(tmp_path, run_parts):
    config, _, state, _ = run_parts
    stale = [tmp_path / f".latest.tmp-{'a' * 32}", tmp_path / f".best.tmp-{'0123456789abcdef' * 2}",
             tmp_path / ".metrics.json.k2j_x9a1.tmp", tmp_path / ".state_batch0.npz.abcdefgh.tmp"]
    for folder in stale[:2]:
        (folder / "params").mkdir(parents=True)
        (folder / "params" / "data").write_bytes(b"half a checkpoint")
        _age(folder)
    for f in stale[2:]:
        f.write_bytes(b"half a file")
        _age(f)
    # Not ours, or not stale (a writer that may still be running): left alone.
    kept = [tmp_path / ".latest.tmp-notours", tmp_path / "notes.tmp", tmp_path / ".metrics.json.tmp",
            tmp_path / f"x.latest.tmp-{'a' * 32}", tmp_path / ".results.json.abcdefgh.tmp.bak"]
    for f in kept:
        f.write_text("user data")
        _age(f)
    fresh = tmp_path / ".metrics.json.fresh123.tmp"
    fresh.write_text("being written")
    checkpoint.save(tmp_path, state, config)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "latest", "notes.tmp", f"x.latest.tmp-{'a' * 32}"]

    # write_atomically removes the stale temporaries of the file it writes, and only those.
    mine, other = tmp_path / ".results.json.aaaaaaaa.tmp", tmp_path / ".other.json.aaaaaaaa.tmp"
    for f in (mine, other):
        f.write_text("{")
        _age(f)
    checkpoint.write_json_atomic(tmp_path / "results.json", {"a": 1})
    assert not mine.exists() and other.exists()
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert checkpoint.remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.skipif(not SHIPPED.exists(), reason=f"shipped checkpoint {SHIPPED} not present")
def test_the_main_jobs_network_is_accurate_on_the_main_jobs_input():
    # The README's first command attacks the shipped cascade on the embedded phantom with the default
    # mask: its figure must show a network that reconstructs its input well (measured 42.45 dB against
    # compressed sensing's 38.27 dB and zero filling's 18.28 dB), not one that is poor to begin with.
    from mrijax import cs, masks, metrics, operators
    from mrijax.data import phantoms

    x = jnp.asarray(phantoms.shepp_logan(128), jnp.complex64)
    op = operators.cartesian(masks.for_acceleration("gaussian_lines", (128, 128), 3.0, 0, sample_n=8))
    y = op.forward(x)
    model, params, _ = models.load(SHIPPED)
    net = float(metrics.psnr(jnp.abs(models.reconstruction_map(model, params, op)(y)), jnp.abs(x)))
    cs_psnr = float(metrics.psnr(jnp.abs(cs.reconstruction_map(op)(y)), jnp.abs(x)))
    zero_filled = float(metrics.psnr(jnp.abs(op.adjoint(y)), jnp.abs(x)))
    assert net >= cs_psnr and net >= zero_filled + 15, (net, cs_psnr, zero_filled)
