"""Shared pytest fixtures, and how the suite compiles (it is mostly XLA compilation).

Two settings make the suite about twice as fast on 2 CPU cores without changing what is
computed beyond rounding (timings in ``docs/performance.md``):

* ``--xla_backend_optimization_level=0`` in ``XLA_FLAGS``: the tests run tiny problems for a
  few iterations, so LLVM's optimisation of the generated CPU code costs far more than it
  saves.  Fast-math stays off; what changes is rounding, e.g. whether a multiply and an add
  are fused (the CS solver's float32 output and its gradient move by 3.5e-7 of their largest
  entry, a few ulps).  Set ``XLA_FLAGS`` with your own ``--xla_backend_optimization_level``
  to test another level.
* A persistent compilation cache (below).
"""

import os
import pathlib
import shutil
import tempfile

# Before jax creates its CPU backend, which reads XLA_FLAGS once.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
D5C5_PATH = ROOT.parent / "shared" / "data" / "d5_c5.npz"

# Where the run's compiled XLA programs are kept.  Set it yourself to keep them between runs.
COMPILATION_CACHE_ENV = "MRIJAX_TEST_COMPILATION_CACHE"


def pytest_configure(config):
    """Keep compiled programs for the other tests of the same worker.

    Most of the time of the experiment-script tests (tiny images, a few iterations) is XLA
    compiling the same programs again: every run of a script builds fresh closures, so JAX's
    in-memory cache misses, while the persistent cache, keyed on the compiled module, hits.
    A hit loads the executable compilation would have produced, so results are unchanged.  The
    folder is made by the first process (the xdist controller, whose environment the workers
    inherit), holds one subfolder per worker, and is removed at the end, unless you set
    ``MRIJAX_TEST_COMPILATION_CACHE`` yourself (then it is kept for the next run).
    """
    folder = os.environ.get(COMPILATION_CACHE_ENV)
    if folder is None:
        folder = tempfile.mkdtemp(prefix="mrijax-test-xla-cache-")
        os.environ[COMPILATION_CACHE_ENV] = folder
        config.mrijax_owns_compilation_cache = True
    # One folder per worker: jax writes entries unlocked unless a size limit is set, and with one
    # it lists the whole folder on every write, which cost more than the cache saved.
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(folder, os.environ.get("PYTEST_XDIST_WORKER", "main")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    if getattr(config, "mrijax_owns_compilation_cache", False):
        shutil.rmtree(os.environ.pop(COMPILATION_CACHE_ENV), ignore_errors=True)


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
    from mrijax import checkpoint, models, train
    from mrijax.models import Cascade

    def make(size):
        model = Cascade(n_cascades=1, n_convs=2, features=4)
        x = jnp.zeros((1, size, size), jnp.complex64)
        params = model.init(jax.random.PRNGKey(3), x, x, jnp.ones((size, size), bool))
        state = train.create_train_state(params, train.make_optimizer("adam", lr=1e-3))
        folder = tmp_path_factory.mktemp("tiny_cascade")
        checkpoint.save(folder, state, {"model": models.model_config(model)}, include_opt_state=False)
        return str(folder)

    return make


def interrupt_then_resume(run, stop_after: str) -> list:
    """Run ``run()`` until it has saved ``stop_after`` (a file name), stop it there as Ctrl-C would,
    then ``run(resume=True)`` to the end; returns the names of the files the resumed run saved.

    ``run(resume=False)`` must call the experiment's ``main`` and return its exit code (``main``
    answers Ctrl-C with 130); saves go through ``experiments.common.save_npz``, which is what is
    watched.
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
        assert run(resume=False) == 130
        mp.setattr(common, "save_npz", save_and_record)
        assert run(resume=True) == 0
    finally:
        mp.undo()
    return saved
