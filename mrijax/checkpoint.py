"""Orbax checkpoints of training runs: "latest" and "best", with the run's config beside them.

Layout of a checkpoint directory ``ckpt_dir``::

    ckpt_dir/
      latest/                 the most recent state (written every few steps)
        params/               orbax (StandardCheckpointer) tree of plain NumPy arrays
        train_state/          orbax tree: opt_state, step, rng (omitted with include_opt_state=False)
        config.json           the run's config (model class + kwargs, data, mask, training flags)
        meta.json             step, format version, free-form metrics (e.g. the best validation)
        arrays.npz            optional extra arrays (e.g. AUTOMAP's fixed mask), read without pickle
      best/                   the same for the best validation so far
      metrics.json            training history (written by :func:`mrijax.train.fit`)

Every checkpoint is written into a temporary sibling folder (``.latest.tmp-<hex>``) and
renamed into place, so a crash never leaves a half-written ``latest``; the previous one is
renamed aside first and removed only afterwards (a crash in between leaves it as
``latest.old``, which :func:`resumable_path`, and so :func:`restore` and a resumed run, fall
back to).  Temporaries a killed process left behind (those folders, and the
``.NAME.<random>.tmp`` files of :func:`write_atomically`) are removed by the next save
(:func:`remove_stale_temporaries`).

``meta.json`` also holds, under ``metrics``, what :func:`mrijax.train.fit` needs to continue
the run's records exactly (the history so far, the best record, the per-step metrics since
the last record, the last step's loss), so a kill between a checkpoint and ``metrics.json``
loses nothing.

The arrays are stored as plain NumPy (no device or sharding information needed), so a
checkpoint written on a GPU restores on a CPU-only machine.

The config is a JSON dict.  Its ``"model"`` entry, ``{"class": "cascade", "kwargs":
{...}}`` (:func:`mrijax.models.model_config`), lets :func:`mrijax.models.load` rebuild the model with no
other information; the other entries (``"data"``, ``"mask"``, ``"train"``) describe how
it was trained.  On resume, :func:`restore` compares the stored config with the new one
and refuses to continue a different run (keys in :data:`RESUME_MAY_CHANGE`, such as
the number of steps, may differ).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import jax
import orbax.checkpoint as ocp
from flax import serialization

__all__ = ["BEST", "CheckpointError", "ConfigMismatchError", "FORMAT_VERSION", "LATEST", "RESUME_MAY_CHANGE",
           "check_same_structure", "checkpoint_path", "config_differences", "holds_checkpoint", "load_arrays",
           "load_params", "read_config", "read_meta", "remove_stale_temporaries", "restore", "resumable_path",
           "save", "to_jsonable", "write_atomically", "write_json_atomic"]

LATEST = "latest"
BEST = "best"
FORMAT_VERSION = 1

# Config keys (dotted paths) that may change between an interrupted run and its resumption.
# (With a cosine learning-rate decay over ``train.steps``, raising the steps stretches the
# schedule from the restored step on; resuming with unchanged settings is exact.)
RESUME_MAY_CHANGE = ("train.steps", "train.log_every", "train.ckpt_every", "train.validate_every",
                     "train.min_loss", "validation.plot_count",
                     # How the same convolutions are computed, not what they compute.
                     "model.kwargs.conv_impl", "model.kwargs.small_conv_impl", "model.kwargs.remat")


# Our own temporaries: the folders save() writes a checkpoint into, and the files of
# write_atomically() (tempfile.mkstemp: "." + name + "." + 8 random characters + ".tmp").
_TMP_FOLDER = re.compile(r"^\.(?:%s|%s)\.tmp-[0-9a-f]{32}$" % (LATEST, BEST))
_TMP_FILE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
# A temporary is stale when it was last modified before this process started using this module:
# an earlier (killed) process left it.  One this process (or a writer still running beside it)
# is writing is never touched.
_STARTED = time.time()


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit what it is restored into."""


class ConfigMismatchError(ValueError):
    """Resuming a run whose stored config differs from the requested one."""


# --------------------------------------------------------------------------- files


def write_atomically(path, write_bytes) -> None:
    """Call ``write_bytes(f)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A crash leaves either the old file or the new one, never a part; the temporary file is
    removed when ``write_bytes`` fails.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(folder, name=os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_bytes(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder, name: Optional[str] = None, extra=()) -> List[str]:
    """Remove the temporaries a killed process left in ``folder``; returns their paths.

    Only our own patterns are touched: ``.latest.tmp-<32 hex>`` / ``.best.tmp-<32 hex>``
    folders of :func:`save` and ``.NAME.<8 characters>.tmp`` files of :func:`write_atomically`
    (with ``name``, only those of that file name), plus files whose names match one of the
    compiled regular expressions ``extra``.  Only stale ones go: last modified before this
    process started (an interrupted write of this process removes its own temporary, and
    a writer still running beside it is left alone).  A missing ``folder`` is nothing to clean.
    """
    folder = os.fspath(folder)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        try:
            is_folder = entry.is_dir(follow_symlinks=False)
            if is_folder:
                ours = name is None and _TMP_FOLDER.match(entry.name) is not None
            else:
                match = _TMP_FILE.match(entry.name)
                ours = (match is not None and match.group("name") == name) if name is not None else \
                    (match is not None or any(p.match(entry.name) for p in extra))
            if not ours or entry.stat(follow_symlinks=False).st_mtime >= _STARTED:
                continue
            if is_folder:
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
        removed.append(entry.path)
    return removed


def to_jsonable(obj, strict: bool = True):
    """NumPy / JAX scalars and arrays -> Python numbers and lists, recursively.

    ``strict``: standard JSON, NaN -> ``None`` and +-inf -> ``"inf"`` / ``"-inf"`` (results
    files other tools read); otherwise non-finite floats stay floats (Python's ``json`` writes
    and reads them back as ``NaN`` / ``Infinity``: the checkpoint's own files, which must
    round-trip numbers exactly).
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, strict) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        a = np.asarray(obj)
        return to_jsonable(a.tolist() if a.ndim else a.item(), strict)
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return to_jsonable(obj.item(), strict)
    if strict and isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json_atomic(path, obj, strict: bool = False) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (:func:`write_atomically`, :func:`to_jsonable`)."""
    text = json.dumps(to_jsonable(obj, strict), indent=2, sort_keys=True, allow_nan=not strict) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing (incomplete or corrupt checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON (corrupt checkpoint): {e}") from e


def _to_numpy_tree(tree):
    """A pytree of arrays -> nested dicts of NumPy arrays (optax named tuples become dicts)."""
    return jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(jax.device_get(tree)))


def _orbax_save(path, tree):
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(path), tree)
        checkpointer.wait_until_finished()


def _orbax_restore(path):
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint folder {path} is missing (incomplete or corrupt checkpoint)")
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(os.path.abspath(path))
    except Exception as e:  # orbax raises many types for unreadable data
        raise CheckpointError(f"could not read the orbax checkpoint at {path} (corrupt?): "
                              f"{type(e).__name__}: {e}") from e


# --------------------------------------------------------------------------- save / restore


def save(directory, state, config: Mapping[str, Any], *, best: bool = False,
         metrics: Optional[Mapping[str, Any]] = None, include_opt_state: bool = True,
         arrays: Optional[Mapping[str, np.ndarray]] = None) -> str:
    """Atomically write ``state`` and ``config`` to ``directory/latest`` (or ``/best``).

    Args:
      directory: the run's checkpoint directory (created if needed).
      state: a :class:`mrijax.train.TrainState`.
      config: the run's JSON-serialisable config; should hold ``"model"`` (see
        :func:`mrijax.models.model_config`) for :func:`mrijax.models.load`.
      best: write ``best`` instead of ``latest``.
      metrics: JSON-able extras stored in ``meta.json``.
      include_opt_state: also store ``opt_state``, ``step`` and ``rng`` (needed to resume;
        without them the checkpoint holds only what inference needs, a third of Adam's size).
      arrays: extra named NumPy arrays stored in ``arrays.npz`` (e.g. a fixed mask).

    Returns:
      The path of the written checkpoint.

    Raises:
      TypeError: ``config`` or ``metrics`` is not JSON-serialisable (before anything is written).
    """
    directory = os.fspath(directory)
    try:
        config_text = json.dumps(to_jsonable(config, strict=False), sort_keys=True)
        json.dumps(to_jsonable(metrics or {}, strict=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint config and metrics must be JSON-serialisable: {e}") from e
    which = BEST if best else LATEST
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    final = os.path.join(directory, which)
    tmp = os.path.join(directory, f".{which}.tmp-{uuid.uuid4().hex}")
    try:
        os.makedirs(tmp)
        _orbax_save(os.path.join(tmp, "params"), _to_numpy_tree(state.params))
        if include_opt_state:
            _orbax_save(os.path.join(tmp, "train_state"), _to_numpy_tree(
                {"opt_state": state.opt_state, "step": state.step, "rng": state.rng}))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(json.dumps(json.loads(config_text), indent=2, sort_keys=True) + "\n")
        write_json_atomic(os.path.join(tmp, "meta.json"), {
            "format": FORMAT_VERSION, "step": int(np.asarray(state.step)),
            "has_train_state": bool(include_opt_state), "metrics": metrics or {}})
        if arrays:
            np.savez(os.path.join(tmp, "arrays.npz"), **{k: np.asarray(v) for k, v in arrays.items()})
        old = os.path.join(directory, f"{which}.old")
        if os.path.exists(final):
            if os.path.exists(old):
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        # (also the .old a crash between these renames left, from which this run may have resumed)
        if os.path.exists(old):
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def checkpoint_path(directory, which: Optional[str] = None) -> str:
    """The folder of one checkpoint.

    ``directory`` may be a run directory (holding ``latest``/``best``) or a checkpoint
    folder itself (holding ``config.json``).  ``which``: ``"latest"``, ``"best"`` or
    ``None`` (a checkpoint folder itself, else ``best`` if present, else ``latest``).

    Raises:
      FileNotFoundError: nothing usable at ``directory``, naming the path.
    """
    directory = os.fspath(directory)
    if which not in (None, LATEST, BEST):
        raise ValueError(f"which must be None, {LATEST!r} or {BEST!r}, got {which!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if which is None and os.path.exists(os.path.join(directory, "config.json")):
        return directory
    candidates = [which] if which else [BEST, LATEST]
    for name in candidates:
        for folder in (name, f"{name}.old"):  # .old: a crash between the two renames of save()
            path = os.path.join(directory, folder)
            if os.path.isdir(path):
                return path
    raise FileNotFoundError(f"no {' or '.join(repr(c) for c in candidates)} checkpoint in {directory}")


def resumable_path(directory) -> Optional[str]:
    """The checkpoint folder a resumed run continues from, or ``None`` if there is none.

    The one answer to "is there a run to resume (or to refuse to overwrite)?", used by
    :func:`restore` and by ``experiments/training.py``'s ``run``: ``latest``, else
    ``latest.old`` (a crash between the two renames of :func:`save`), else ``best`` /
    ``best.old`` if it holds an optimiser state (a run killed after its first validation but
    before its first ``latest``: ``best`` is the run's state at that step).
    ``directory`` may also be a checkpoint folder itself (holding ``config.json``).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return None
    if os.path.exists(os.path.join(directory, "config.json")):
        return directory
    for folder in (LATEST, f"{LATEST}.old"):
        path = os.path.join(directory, folder)
        if os.path.isdir(path):
            return path
    for folder in (BEST, f"{BEST}.old"):
        path = os.path.join(directory, folder)
        if os.path.isdir(path):
            try:
                if _read_json(os.path.join(path, "meta.json")).get("has_train_state", False):
                    return path
            except CheckpointError:
                continue
    return None


def holds_checkpoint(directory) -> bool:
    """Whether ``directory`` holds any checkpoint folder (``latest``, ``best`` or their ``.old``)."""
    directory = os.fspath(directory)
    return any(os.path.isdir(os.path.join(directory, name))
               for name in (LATEST, f"{LATEST}.old", BEST, f"{BEST}.old"))


def read_config(directory, which: Optional[str] = None) -> Dict[str, Any]:
    """The config stored with a checkpoint (see :func:`checkpoint_path` for the arguments)."""
    return _read_json(os.path.join(checkpoint_path(directory, which), "config.json"))


def read_meta(directory, which: Optional[str] = None) -> Dict[str, Any]:
    """The ``meta.json`` of a checkpoint: ``step``, ``format``, ``metrics``."""
    return _read_json(os.path.join(checkpoint_path(directory, which), "meta.json"))


def load_arrays(directory, which: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The extra arrays saved with ``save(..., arrays=...)`` (``{}`` if none)."""
    path = os.path.join(checkpoint_path(directory, which), "arrays.npz")
    if not os.path.exists(path):
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as e:
        raise CheckpointError(f"could not read {path} (corrupt?): {e}") from e


def _flatten(config, prefix=""):
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(stored: Mapping, requested: Mapping,
                       ignore: Tuple[str, ...] = RESUME_MAY_CHANGE) -> Dict[str, Tuple[Any, Any]]:
    """``{dotted key: (stored, requested)}`` for every differing key not in ``ignore``
    (compared after a JSON round trip, so tuples equal lists)."""
    a = _flatten(json.loads(json.dumps(to_jsonable(stored, strict=False))))
    b = _flatten(json.loads(json.dumps(to_jsonable(requested, strict=False))))
    missing = object()
    diffs = {}
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            diffs[key] = (None if va is missing else va, None if vb is missing else vb)
    return diffs


def check_same_structure(path, template, restored):
    t_leaves, t_def = jax.tree_util.tree_flatten(template)
    r_leaves, r_def = jax.tree_util.tree_flatten(restored)
    if t_def != r_def:
        raise CheckpointError(f"the checkpoint at {path} has a different structure than expected "
                              f"(another model or optimiser?):\n  stored:   {r_def}\n  expected: {t_def}")
    for i, (t, r) in enumerate(zip(t_leaves, r_leaves)):
        if tuple(_shape(t)) != tuple(_shape(r)):
            raise CheckpointError(f"the checkpoint at {path} has an array of shape {tuple(_shape(r))} where "
                                  f"{tuple(_shape(t))} is expected (leaf {i}); another model size?")


def _shape(x):
    return x.shape if hasattr(x, "shape") else np.shape(x)


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def restore(directory, template, *, config: Optional[Mapping[str, Any]] = None,
            which: Optional[str] = LATEST) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
    """Restore a :class:`mrijax.train.TrainState` exactly (params, optimiser state, step, RNG).

    Args:
      directory: the run directory (or a checkpoint folder).
      template: a state of the same structure (e.g. a fresh ``create_train_state``, or
        its ``jax.eval_shape``, which costs nothing), which fixes the pytree types (optax
        named tuples), shapes and dtypes of the result.
      config: the config of the run being resumed; if given it must equal the stored one
        except for :data:`RESUME_MAY_CHANGE` keys.
      which: ``"latest"`` (default: the checkpoint a resumed run continues from,
        :func:`resumable_path`: ``latest``, else ``latest.old``, else a ``best`` holding an
        optimiser state), ``"best"`` or ``None`` (see :func:`checkpoint_path`).

    Returns:
      ``(state, stored_config, meta)``.

    Raises:
      FileNotFoundError: no checkpoint at ``directory``.
      ConfigMismatchError: ``config`` differs from the stored one (lists the keys).
      CheckpointError: a corrupt checkpoint, one without optimiser state, or one whose
        arrays do not fit ``template``.
    """
    if which == LATEST:  # (checkpoint_path raises FileNotFoundError, naming the path, if nothing is there)
        path = resumable_path(directory) or checkpoint_path(directory, LATEST)
    else:
        path = checkpoint_path(directory, which)
    stored = _read_json(os.path.join(path, "config.json"))
    meta = _read_json(os.path.join(path, "meta.json"))
    if config is not None:
        diffs = config_differences(stored, config)
        if diffs:
            lines = "\n".join(f"  {k}: stored {a!r}, requested {b!r}" for k, a, b in
                              ((k, *v) for k, v in diffs.items()))
            raise ConfigMismatchError(
                f"cannot resume from {path}: its config differs from this run's:\n{lines}\n"
                "Use another checkpoint directory, or the stored settings.")
    if not meta.get("has_train_state", False):
        raise CheckpointError(f"the checkpoint at {path} holds parameters only (no optimiser state); "
                              "it can be loaded with mrijax.models.load but not resumed")
    params = _orbax_restore(os.path.join(path, "params"))
    rest = _orbax_restore(os.path.join(path, "train_state"))
    if not isinstance(rest, Mapping) or not {"opt_state", "step", "rng"} <= set(rest):
        raise CheckpointError(f"the train state at {path} lacks opt_state/step/rng (corrupt checkpoint)")
    try:
        params = serialization.from_state_dict(template.params, params)
        opt_state = serialization.from_state_dict(template.opt_state, rest["opt_state"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint at {path} does not fit this model/optimiser: {e}") from e
    check_same_structure(path, template.params, params)
    check_same_structure(path, template.opt_state, opt_state)

    def like(t, r):
        return jax.numpy.asarray(np.asarray(r).astype(_dtype(t)))

    state = template.replace(
        params=jax.tree_util.tree_map(like, template.params, params),
        opt_state=jax.tree_util.tree_map(like, template.opt_state, opt_state),
        step=like(template.step, rest["step"]), rng=like(template.rng, rest["rng"]))
    if int(state.step) != int(meta.get("step", -1)):
        raise CheckpointError(f"the checkpoint at {path} is inconsistent: meta.json says step "
                              f"{meta.get('step')}, the train state says {int(state.step)}")
    return state, stored, meta


def load_params(directory, which: Optional[str] = None):
    """The parameters of a checkpoint as a pytree of JAX arrays (nested dicts)."""
    path = checkpoint_path(directory, which)
    params = _orbax_restore(os.path.join(path, "params"))
    return jax.tree_util.tree_map(jax.numpy.asarray, params)
