"""Shared pytest fixtures."""

import pathlib

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
D5C5_PATH = ROOT.parent / "shared" / "data" / "d5_c5.npz"


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX types, for tolerances tighter than float32 allows."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def d5c5_path():
    """Path of the published D5-C5 weights; the test is skipped where they are absent."""
    if not D5C5_PATH.exists():
        pytest.skip(f"published D5-C5 weights not found at {D5C5_PATH} (they live in ../shared/data/, "
                    "which CI has and users' machines usually do not)")
    return D5C5_PATH


@pytest.fixture(scope="session")
def make_tiny_cascade(tmp_path_factory):
    """``make(size) -> folder``: a checkpoint folder holding Cascade(1 cascade, 2 convs, 4 features)
    with random weights (seed 3), as the experiment scripts' ``--model`` takes it."""
    import jax.numpy as jnp
    from mrijax import checkpoint, train
    from mrijax.models import Cascade

    def make(size):
        model = Cascade(n_cascades=1, n_convs=2, features=4)
        x = jnp.zeros((1, size, size), jnp.complex64)
        params = model.init(jax.random.PRNGKey(3), x, x, jnp.ones((size, size), bool))
        state = train.create_train_state(params, train.make_optimizer("adam", lr=1e-3))
        folder = tmp_path_factory.mktemp("tiny_cascade")
        checkpoint.save(folder, state, {"model": checkpoint.model_config(model)}, include_opt_state=False)
        return str(folder)

    return make


def interrupt_then_resume(run, stop_after: str) -> list:
    """Run ``run()`` until it has saved ``stop_after`` (a file name), stop it there as Ctrl-C would,
    then ``run(resume=True)`` to the end; returns the names of the files the resumed run saved.

    ``run(resume=False)`` must call the experiment's ``main`` and return its exit code; saves
    go through ``experiments.common.save_npz``, which is what is watched.
    """
    import os
    from experiments import common

    mp = pytest.MonkeyPatch()
    real_save = common.save_npz
    saved = []

    def save_then_stop(path, **arrays):
        real_save(path, **arrays)
        if os.path.basename(path) == stop_after:
            raise KeyboardInterrupt

    def save_and_record(path, **arrays):
        saved.append(os.path.basename(path))
        real_save(path, **arrays)
    try:
        mp.setattr(common, "save_npz", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run(resume=False)
        mp.setattr(common, "save_npz", save_and_record)
        assert run(resume=True) == 0
    finally:
        mp.undo()
    return saved
