"""What the experiment scripts share: flag parsing, model loading, atomic output files.

Nothing scientific lives here: every number comes from a library call.  The helpers
write only under the folder the user names, and always atomically (a temporary file in
the same folder, then ``os.replace``), so an interrupted run never leaves a half-written
file behind.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
from typing import Callable

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CHECKPOINT = os.path.join(REPO_ROOT, "checkpoints", "cascade_gaussian33")
"""The cascade that the shipped experiments attack by default (see checkpoints/README.md)."""


# ----------------------------------------------------------------------------- files


#: What ``psnr_drop`` means in every results.json (:func:`mrijax.attacks.evaluate`).
PSNR_DROP_DEFINITION = ("PSNR(f(A x), x) - PSNR(f(A x + A r), x + r) (x in the measurement domain); "
                        "mrijax.attacks.evaluate")


def write_atomically(path: str, write_bytes: Callable) -> None:
    """Call ``write_bytes(f)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
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


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        a = np.asarray(obj)
        return _jsonable(a.tolist()) if a.ndim else _jsonable(a.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return _jsonable(obj.item())
    return obj


def save_json(path: str, obj) -> None:
    """JSON (NumPy and JAX values converted; NaN -> null, +-inf -> "inf"/"-inf"), atomically."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()))


def save_npz(path: str, **arrays) -> None:
    """``np.savez_compressed`` of plain NumPy arrays, atomically (read with ``allow_pickle=False``)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    write_atomically(path, lambda f: np.savez_compressed(f, **arrays))


def load_npz(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_figure(path: str, fig) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_atomically(path, lambda f: f.write(buf.getvalue()))


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ----------------------------------------------------------------------------- flags


def parse(define_flags: Callable, argv) -> "flags.FlagValues":
    """Parse ``argv`` (program name first) into a fresh FlagValues from ``define_flags()``.

    Raises ``SystemExit(2)`` with absl's message on a bad flag.
    """
    from absl import flags
    argv = sys.argv if argv is None else list(argv)
    fv = define_flags()
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(fv.get_help())
        raise SystemExit(0)
    try:
        rest = fv(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    if len(rest) > 1:
        print(f"error: unexpected arguments {rest[1:]}", file=sys.stderr)
        raise SystemExit(2)
    return fv


def flag_dict(fv) -> dict:
    """The values of all flags defined in ``fv`` (for results.json and resume checks)."""
    return {name: fv[name].value for name in sorted(fv) if fv[name].value is not None or True}


# ----------------------------------------------------------------------------- models


def load_reconstruction(model: str, mask, *, weights: str | None = None, flip_filters: bool = False,
                        cs_iters: int | None = None, cs_options: dict | None = None, coil_maps=None):
    """``--model`` -> ``(recon, description)``: a pure ``f(masked k-space) -> image``.

    ``model`` is a checkpoint folder written by ``experiments.train_cascade`` /
    ``experiments.train_automap``, ``"deepmri_npz"`` (the published D5-C5 weights at
    ``weights``), ``"cs"`` (:func:`mrijax.cs.reconstruction_map` with its defaults,
    overridden by ``cs_options`` and ``cs_iters``), or ``"zero_filled"`` (``A* y``: the
    reference map whose worst-case gain is exactly 1).

    With ``coil_maps`` ``(C, H, W)`` (one image's sensitivities) ``f`` takes multi-coil
    masked k-space ``(C, H, W)``: the cascade and CS use the SENSE operator with these maps,
    ``zero_filled`` is its adjoint ``sum_c conj(S_c) ifft2c(mask * k_c)``; AUTOMAP, a
    single-coil model, raises ``ValueError``.  :func:`reconstruction_factory` builds the
    map for many sets of coil maps while loading the model once.
    """
    make, info = reconstruction_factory(model, mask, weights=weights, flip_filters=flip_filters,
                                        cs_iters=cs_iters, cs_options=cs_options, multicoil=coil_maps is not None)
    return make(coil_maps), info


def reconstruction_factory(model: str, mask, *, weights: str | None = None, flip_filters: bool = False,
                           cs_iters: int | None = None, cs_options: dict | None = None, multicoil: bool = False):
    """``(make, description)``: ``make(coil_maps)`` is :func:`load_reconstruction`'s ``recon``.

    The model is loaded (and, with ``multicoil``, checked to accept coil maps: AUTOMAP raises
    ``ValueError``) once; ``make(maps)`` only closes over the mask and ``maps`` (``None``
    for one coil).
    """
    from mrijax import cs, fourier
    from mrijax.models import Automap, load_deepmri_npz, reconstruction_map

    mask = np.asarray(mask, bool)
    if model == "cs":
        kw = dict(cs_options or {})
        if cs_iters is not None:
            kw["iters"] = cs_iters
        return (lambda maps: cs.reconstruction_map(mask, coil_maps=maps, **kw)), {"model": "cs", **kw}
    if model == "zero_filled":
        return (lambda maps: lambda k: fourier.adjoint(k, mask, maps)), {"model": "zero_filled"}
    if model == "deepmri_npz":
        if not weights:
            raise ValueError("--model=deepmri_npz needs --weights=PATH to the published d5_c5.npz")
        net, params = load_deepmri_npz(weights, flip_filters=flip_filters)
        info = {"model": "deepmri_npz", "weights": weights, "flip_filters": flip_filters}
    else:
        if not os.path.isdir(model):
            raise FileNotFoundError(
                f"--model={model!r} is neither 'cs', 'zero_filled', 'deepmri_npz' nor a checkpoint folder")
        from mrijax.checkpoint import load_model
        net, params, config = load_model(model)
        info = {"model": model, "config": config.get("model")}
    if multicoil and isinstance(net, Automap):
        raise ValueError(f"--model={model!r} is an AUTOMAP checkpoint, a single-coil model: it cannot use "
                         "coil maps (--coil_maps)")
    return (lambda maps: reconstruction_map(net, params, mask, coil_maps=maps)), info


# ----------------------------------------------------------------------------- shared flags

MODEL_HELP = ("A checkpoint folder (experiments.train_cascade / train_automap), 'deepmri_npz' "
              "(the published D5-C5, with --weights), 'cs' (compressed sensing, see --cs_*) or "
              "'zero_filled' (A* y, the gain-1 reference).")
IMAGES_HELP = ("Images: shepp_logan, shepp_logan_variants, ellipses, mni[:axial|coronal|sagittal], or a "
               ".npy/.npz/.mat/.h5/.nii/"
               "DICOM path (mrijax.data.images.load_images).")


def define_out_flags(fv, *, resume: bool = True) -> None:
    """``--out_dir`` (required) and, for resumable scripts, ``--resume``."""
    from absl import flags
    flags.DEFINE_string("out_dir", None, "Folder for all outputs (created).", flag_values=fv)
    flags.mark_flag_as_required("out_dir", flag_values=fv)
    if resume:
        flags.DEFINE_bool("resume", False, "Continue an interrupted run in --out_dir.", flag_values=fv)


def define_model_flags(fv, *, model: str = DEFAULT_CHECKPOINT, cs_iters: bool = True,
                       model_help: str = MODEL_HELP, cs_iters_lower_bound: int | None = None) -> None:
    """``--model``, ``--weights``, ``--flip_filters`` (and ``--cs_iters``) for :func:`load_reconstruction`.

    ``model_help`` replaces :data:`MODEL_HELP` for a script that accepts fewer models (only
    mask-agnostic ones, or no ``cs``); ``cs_iters_lower_bound`` is the smallest ``--cs_iters``
    the parser accepts (``None``: no bound).
    """
    from absl import flags
    d = dict(flag_values=fv)
    flags.DEFINE_string("model", model, model_help, **d)
    flags.DEFINE_string("weights", None, "Path of d5_c5.npz for --model=deepmri_npz.", **d)
    flags.DEFINE_bool("flip_filters", False, "Load the published weights as convolutions (Lasagne CPU).", **d)
    if cs_iters:
        flags.DEFINE_integer("cs_iters", None, "CS iterations (default: mrijax.cs default, 100; stopping "
                             "after 15-20 trades accuracy for stability: README, 'How stable is CS?').",
                             lower_bound=cs_iters_lower_bound, **d)
        flags.DEFINE_float("cs_tv", None, "CS total-variation weight (default: mrijax.cs default).",
                           lower_bound=0.0, **d)
        flags.DEFINE_float("cs_wavelet_weight", None, "CS wavelet-l1 weight (default: mrijax.cs default).",
                           lower_bound=0.0, **d)
        flags.DEFINE_bool("cs_penalised", False, "CS in the penalised form 1/2 ||Ax - y||^2 + ... instead of "
                          "exact data consistency (mrijax.cs, constrained=False).", **d)
        flags.DEFINE_float("cs_delta", None, "CS noise-aware constraint ||Ax - y|| <= delta ||y|| instead of "
                           "Ax = y (mrijax.cs, delta; not with --cs_penalised).", lower_bound=0.0, **d)
        flags.DEFINE_float("cs_tgv", None, "CS with second-order TGV in place of TV: its second-order weight "
                           "(--cs_tv is the first-order one; mrijax.cs, tgv; try 2x --cs_tv and --cs_iters=200).",
                           lower_bound=0.0, **d)


def cs_options(fv) -> dict:
    """Keyword arguments of :func:`mrijax.cs.reconstruction_map` from ``--cs_tv``,
    ``--cs_wavelet_weight``, ``--cs_delta``, ``--cs_tgv`` and ``--cs_penalised`` (only those given; absent
    flags are skipped)."""
    opts = {}
    for flag, key in (("cs_tv", "tv"), ("cs_wavelet_weight", "wavelet_weight"), ("cs_delta", "delta"),
                      ("cs_tgv", "tgv")):
        if flag in fv and fv[flag].value is not None:
            opts[key] = fv[flag].value
    if "cs_penalised" in fv and fv["cs_penalised"].value:
        opts["constrained"] = False
    return opts


def define_image_flags(fv, *, images: str = "shepp_logan", num_images: int = 1, size: int = 128) -> None:
    """``--images``, ``--num_images``, ``--size`` for :func:`mrijax.data.images.load_images`."""
    from absl import flags
    d = dict(flag_values=fv)
    flags.DEFINE_string("images", images, IMAGES_HELP, **d)
    flags.DEFINE_integer("num_images", num_images, "How many images.", lower_bound=1, **d)
    flags.DEFINE_integer("size", size, "Image side (images are cropped/resized to it).", lower_bound=8, **d)


def define_mask_flags(fv, *, mask: str = "gaussian_lines", acceleration: float = 3.0, sample_n: int | None = 8,
                      acceleration_flag: bool = True, kinds=None) -> None:
    """``--mask``, ``--acceleration``, ``--sample_n``, ``--mask_seed`` for :func:`mask_from_flags`.

    ``kinds`` are the values ``--mask`` accepts (default :data:`mrijax.masks.KINDS`; e.g.
    ``masks.NESTED_KINDS`` for a script that builds nested masks); ``acceleration_flag=False``
    leaves ``--acceleration`` out (a script that takes sampling rates instead).
    """
    from absl import flags
    from mrijax import masks
    d = dict(flag_values=fv)
    flags.DEFINE_enum("mask", mask, list(masks.KINDS if kinds is None else kinds), "Sampling mask kind.", **d)
    if acceleration_flag:
        flags.DEFINE_float("acceleration", acceleration, "Acceleration R (sampling rate about 1/R).",
                           lower_bound=1.0, **d)
    flags.DEFINE_integer("sample_n", sample_n, "Always-sampled centre lines (gaussian_lines).", lower_bound=0, **d)
    flags.DEFINE_integer("mask_seed", 0, "Seed of the mask.", lower_bound=0, **d)


def define_search_flags(fv, *, steps: int, radius: float = 0.02) -> None:
    """``--steps``, ``--radius``, ``--radius_relative_to``, ``--lr``, ``--momentum``, ``--tau``: one
    projected worst-case search (:func:`mrijax.attacks.worst_case` with ``radius``)."""
    from absl import flags
    d = dict(flag_values=fv)
    flags.DEFINE_integer("steps", steps, "Iterations of the worst-case search.", lower_bound=1, **d)
    flags.DEFINE_float("radius", radius, "l2 radius of r (see --radius_relative_to).", **d)
    flags.DEFINE_enum("radius_relative_to", "x", ["absolute", "x", "measurements"],
                      "Radius in absolute units, or times ||x|| or ||A x||.", **d)
    flags.DEFINE_float("lr", None, "Step of the search (default radius / 20).", **d)
    flags.DEFINE_float("momentum", 0.9, "Momentum of the search.", lower_bound=0.0, **d)
    flags.DEFINE_float("tau", 1e-2, "Scale of the search's uniform random start.", lower_bound=0.0, **d)


def mask_from_flags(fv, size: int | None = None):
    """The ``(size, size)`` mask the mask flags describe (:func:`mrijax.masks.for_acceleration`).

    ``size`` defaults to ``--size``; give it for a mask of another side from the same flags.
    """
    from mrijax import masks
    size = fv.size if size is None else size
    return masks.for_acceleration(fv.mask, (size, size), fv.acceleration, fv.mask_seed, sample_n=fv.sample_n)


def parse_floats(values, name: str, count: int | None = None) -> list:
    """A list flag (or a comma-separated string) as finite floats, with errors naming ``--name``.

    ``count``: the exact number of values required (``None``: any).
    """
    text = values
    try:
        out = [float(v) for v in (values.split(",") if isinstance(values, str) else values)]
    except ValueError as e:
        raise ValueError(f"--{name} must be numbers, got {text!r}") from e
    if count is not None and len(out) != count:
        raise ValueError(f"--{name} needs {count} numbers, got {text!r}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"--{name} must be finite, got {text!r}")
    return out


def prepare_out_dir(fv, not_numeric=("resume", "out_dir")) -> None:
    """Create ``--out_dir`` and store the flags; on ``--resume`` check they match the stored run.

    Flags named in ``not_numeric`` (progress, figures, the folder itself) may differ on resume.
    Raises ``FileExistsError`` when the folder holds a run and ``--resume`` was not given, and
    ``ValueError`` naming the flags that differ from the stored run.
    """
    os.makedirs(fv.out_dir, exist_ok=True)
    path = os.path.join(fv.out_dir, "run_config.json")
    numeric = {k: v for k, v in flag_dict(fv).items() if k not in set(not_numeric)}
    if not os.path.exists(path):
        save_json(path, numeric)
        return
    with open(path) as f:
        stored = json.load(f)
    if not getattr(fv, "resume", False):
        raise FileExistsError(f"{fv.out_dir} already holds a run; pass --resume to continue it or "
                              "choose another --out_dir")
    diff = sorted(k for k in set(stored) | set(numeric) if stored.get(k) != _jsonable(numeric.get(k)))
    if diff:
        raise ValueError(f"--resume with flags that differ from the stored run: {diff}")


# ----------------------------------------------------------------------------- resumable searches

_STATE_FIELDS = ("r", "v", "t", "active", "diverged", "stopped_at", "snapshots")


def search_state_to_npz(state) -> dict:
    """An :mod:`mrijax.attacks` search state as plain arrays (history entries as ``history_<name>``)."""
    out = {k: np.asarray(getattr(state, k)) for k in _STATE_FIELDS}
    out.update({f"history_{k}": np.asarray(v) for k, v in state.history.items()})
    return out


def search_state_from_npz(arrays, template):
    """The search state :func:`search_state_to_npz` saved, in the structure of ``template``.

    Raises ``ValueError`` when the saved arrays do not fit ``template`` (another problem).
    """
    import jax.numpy as jnp
    fields = {k: jnp.asarray(arrays[k]) for k in _STATE_FIELDS}
    hist = {k: jnp.asarray(arrays[f"history_{k}"]) for k in template.history}
    new = template._replace(**fields, history=hist)
    for name in ("r", "snapshots", "active"):
        if getattr(new, name).shape != getattr(template, name).shape:
            raise ValueError(f"saved search state does not fit this run ({name} shape "
                             f"{getattr(new, name).shape} vs {getattr(template, name).shape})")
    return new


def run_search(recon, cfg, prob, state, *, state_path: str, resume: bool, chunk: int, report: Callable,
               label: str):
    """:func:`mrijax.attacks.run` that saves its state to ``state_path`` after every ``chunk`` iterations.

    With ``resume`` and a state saved there, the search continues from it (printing
    ``"{label} resuming at iteration t"``).  ``report(state)`` prints progress after each
    save.  Returns the final state.
    """
    from mrijax import attacks
    if resume and os.path.exists(state_path):
        state = search_state_from_npz(load_npz(state_path), state)
        print(f"{label} resuming at iteration {int(state.t)}", flush=True)

    def save_and_report(s):
        save_npz(state_path, **search_state_to_npz(s))
        report(s)
    return attacks.run(recon, cfg, prob, state, chunk=chunk, callback=save_and_report)


def batch_state_path(fv, j: int) -> str:
    """Where batch ``j``'s search state is saved while it runs (see :func:`run_batches`)."""
    return os.path.join(fv.out_dir, f"state_batch{j}.npz")


def run_batches(fv, images, attack_batch: Callable, batch: int | None = None) -> list:
    """Process ``images`` in batches of ``--batch``, resumably; returns each batch's dict of arrays.

    ``batch`` overrides ``--batch`` (e.g. 1 when each image needs its own reconstruction map).

    Batch ``j`` is ``attack_batch(j, n_batches, xb, key)``, ``key`` being
    ``fold_in(key(--seed), j)``; its result is saved as ``batch{j}.npz`` in ``--out_dir`` and its
    search state (:func:`batch_state_path`) removed.  With ``--resume`` a finished batch is loaded
    instead of recomputed.
    """
    import jax
    n = images.shape[0]
    batch = fv.batch if batch is None else int(batch)
    batches = [images[i:i + batch] for i in range(0, n, batch)]
    parts = []
    for j, xb in enumerate(batches):
        done_path = os.path.join(fv.out_dir, f"batch{j}.npz")
        if fv.resume and os.path.exists(done_path):
            print(f"[batch {j + 1}/{len(batches)}] already finished, loading it", flush=True)
            parts.append(load_npz(done_path))
            continue
        key = jax.random.fold_in(jax.random.key(fv.seed), j)
        part = attack_batch(j, len(batches), xb, key)
        save_npz(done_path, **part)
        if os.path.exists(batch_state_path(fv, j)):
            os.remove(batch_state_path(fv, j))
        parts.append(part)
    return parts


def main(define_flags: Callable, run: Callable, argv=None) -> int:
    """Parse flags, call ``run(fv)``; a bad flag or input prints ``error: ...`` and returns 2."""
    fv = parse(define_flags, argv)
    try:
        run(fv)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
