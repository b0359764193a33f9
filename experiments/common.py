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
import time
import zipfile
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from mrijax import attacks, checkpoint, cs, masks, models, operators
from mrijax._checks import check_finite_images
from mrijax.data.images import SPEC_OPTIONS, load_images

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CHECKPOINT = os.path.join(REPO_ROOT, "checkpoints", "cascade_gaussian33")
"""The cascade that the shipped experiments attack by default (see checkpoints/README.md)."""


# ----------------------------------------------------------------------------- files


#: What PSNR means in every results.json (:func:`mrijax.metrics.psnr`, on magnitudes).
PSNR_DEFINITION = "10 log10(max|ref|^2 / mean((|rec| - |ref|)^2)) on magnitudes"

#: What ``psnr_change`` means in every results.json: one sign everywhere, negative = worse.
PSNR_CHANGE_DEFINITION = ("PSNR(f(A x + A r), x + r) - PSNR(f(A x), x) in dB (x in place of x + r for "
                          "measurement-domain r); negative = worse (the perturbation cost PSNR); "
                          "PSNR = " + PSNR_DEFINITION + " (mrijax.attacks.evaluate: psnr_perturbed - psnr_clean)")


def psnr_change(numbers) -> np.ndarray:
    """``psnr_perturbed - psnr_clean`` of a dict from :func:`mrijax.attacks.evaluate` or
    :func:`mrijax.attacks.noise_baseline` (negative = worse; see :data:`PSNR_CHANGE_DEFINITION`)."""
    return np.asarray(numbers["psnr_perturbed"]) - np.asarray(numbers["psnr_clean"])


def save_json(path: str, obj) -> None:
    """JSON (NumPy and JAX values converted; NaN -> null, +-inf -> "inf"/"-inf"), atomically."""
    checkpoint.write_json_atomic(path, obj, strict=True)


def save_npz(path: str, **arrays) -> None:
    """``np.savez_compressed`` of plain NumPy arrays, atomically (read with ``allow_pickle=False``)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    checkpoint.write_atomically(path, lambda f: np.savez_compressed(f, **arrays))


#: What reading a corrupt or truncated ``.npz`` raises (a cut zip archive, bad CRC or compressed
#: data, a short array, an unreadable file).
NPZ_CORRUPTION = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError)


class CorruptFileError(ValueError):
    """A saved file is corrupt or truncated; the message names it (``path``: the file)."""

    def __init__(self, path: str, cause: BaseException):
        self.path = path
        super().__init__(f"{path} is corrupt or truncated ({type(cause).__name__}: {cause})")


def load_npz(path: str) -> dict:
    """All arrays of an ``.npz`` (read at once, ``allow_pickle=False``).

    Raises ``FileNotFoundError`` if ``path`` is missing and :class:`CorruptFileError` (a
    ``ValueError`` naming the file) if it is corrupt or truncated (:data:`NPZ_CORRUPTION`).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except NPZ_CORRUPTION as e:
        raise CorruptFileError(str(path), e) from e


def save_figure(path: str, fig) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    checkpoint.write_atomically(path, lambda f: f.write(buf.getvalue()))


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ----------------------------------------------------------------------------- flags


#: The flags ``--help`` lists first, in this order (then the others as defined).
KEY_FLAGS = ("model", "images", "out_dir", "resume")


def usage(define_flags: Callable, fv) -> str:
    """``--help``: the script's one-line summary (its docstring's first line), a usage line, and
    the flags, :data:`KEY_FLAGS` first, then the others in the order the script defines them."""
    module = sys.modules.get(getattr(define_flags, "__module__", ""), None)
    doc = (getattr(module, "__doc__", None) or "").strip()
    name = getattr(module, "__name__", "script")
    if name == "__main__":
        spec = getattr(module, "__spec__", None)
        name = spec.name if spec is not None else os.path.splitext(os.path.basename(sys.argv[0]))[0]
    ordered = []
    for key in KEY_FLAGS:
        if key in fv:
            ordered.append(fv[key])
    for key, flag in fv._flags().items():                      # definition order
        if key == flag.name and flag not in ordered:
            ordered.append(flag)
    required = [f for f in ordered if f.default is None and not f.boolean and f.name == "out_dir"]
    lines = [doc.splitlines()[0] if doc else name, "",
             f"usage: python -m {name}" + "".join(f" --{f.name}=DIR" for f in required) + " [flags]",
             "", "flags:"]
    for flag in ordered:
        head = f"--[no]{flag.name}:" if flag.boolean else f"--{flag.name}:"
        text = flags.text_wrap(f"{head} {flag.help or ''}", indent="    ", firstline_indent="  ")
        if flag.default_as_str:
            text += "\n" + flags.text_wrap(f"(default: {flag.default_as_str})", indent="    ")
        if flag.parser.syntactic_help:
            text += "\n" + flags.text_wrap(f"({flag.parser.syntactic_help})", indent="    ")
        lines.append(text)
    if doc:
        rest = "\n".join(doc.splitlines()[1:]).strip()
        if rest:
            lines += ["", rest]
    return "\n".join(lines)


def parse(define_flags: Callable, argv) -> "flags.FlagValues":
    """Parse ``argv`` (program name first) into a fresh FlagValues from ``define_flags()``.

    ``--help`` prints :func:`usage` and raises ``SystemExit(0)``.  A bad flag (absl's checks, or
    a float flag that is NaN or infinite) prints one ``error: ...`` line and raises ``SystemExit(2)``.
    """
    argv = sys.argv if argv is None else list(argv)
    fv = define_flags()
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(usage(define_flags, fv))
        raise SystemExit(0)
    try:
        rest = fv(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    if len(rest) > 1:
        print(f"error: unexpected arguments {rest[1:]}", file=sys.stderr)
        raise SystemExit(2)
    for name in fv:
        value = fv[name].value
        if isinstance(value, float) and not math.isfinite(value):
            print(f"error: --{name}={value}: must be a finite number", file=sys.stderr)
            raise SystemExit(2)
    return fv


def require_positive(fv, *names: str) -> None:
    """Register absl validators: each flag in ``names`` must be unset (``None``) or ``> 0``, so a
    negative ``--lr`` is refused when the flags are parsed, before any work."""
    for name in names:
        flags.register_validator(name, lambda v: v is None or v > 0, message=f"--{name} must be > 0",
                                 flag_values=fv)


def flag_dict(fv) -> dict:
    """The values of all flags defined in ``fv`` (for results.json and resume checks)."""
    return {name: fv[name].value for name in sorted(fv)}


# ----------------------------------------------------------------------------- models


def load_reconstruction(model: str, mask, *, weights: str | None = None, flip_filters: bool = False,
                        cs_iters: int | None = None, cs_options: dict | None = None, coil_maps=None,
                        mask_kind: str | None = None):
    """``--model`` -> ``(recon, description)``: a pure ``f(masked k-space) -> image``.

    ``model`` is a checkpoint folder written by ``experiments.train``, ``"deepmri_npz"`` (the published D5-C5 weights at
    ``weights``), ``"cs"`` (:func:`mrijax.cs.reconstruction_map` with its defaults,
    overridden by ``cs_options`` and ``cs_iters``), or ``"zero_filled"`` (``A* y``: the
    reference map whose worst-case gain is exactly 1).

    With ``coil_maps`` ``(C, H, W)`` (one image's sensitivities) ``f`` takes multi-coil
    masked k-space ``(C, H, W)``: the cascade and CS use the SENSE operator with these maps,
    ``zero_filled`` is its adjoint ``sum_c conj(S_c) ifft2c(mask * k_c)``; a model whose
    registry entry takes no SENSE operator (AUTOMAP) raises ``ValueError``.  :func:`reconstruction_factory` builds the
    map for many sets of coil maps while loading the model once.

    ``mask_kind`` (``--mask``): a checkpoint trained with another kind of mask gets a warning
    (its errors on these measurements are then partly a distribution shift, not instability).
    """
    make, info = reconstruction_factory(model, mask, weights=weights, flip_filters=flip_filters,
                                        cs_iters=cs_iters, cs_options=cs_options, multicoil=coil_maps is not None,
                                        mask_kind=mask_kind)
    return make(coil_maps), info


def reconstruction_factory(model: str, mask, *, weights: str | None = None, flip_filters: bool = False,
                           cs_iters: int | None = None, cs_options: dict | None = None, multicoil: bool = False,
                           mask_kind: str | None = None):
    """``(make, description)``: ``make(coil_maps)`` is :func:`load_reconstruction`'s ``recon``.

    The model is loaded (and, with ``multicoil``, checked to accept coil maps: AUTOMAP raises
    ``ValueError``) once; ``make(maps)`` only closes over the mask and ``maps`` (``None``
    for one coil).
    """
    mask = np.asarray(mask, bool)
    if model == "cs":
        kw = dict(cs_options or {})
        if cs_iters is not None:
            kw["iters"] = cs_iters
        return (lambda maps: cs.reconstruction_map(mask, coil_maps=maps, **kw)), {"model": "cs", **kw}
    if model == "zero_filled":
        return (lambda maps: operators.as_operator(mask, maps).adjoint), {"model": "zero_filled"}
    if model == "deepmri_npz":
        if not weights:
            raise ValueError("--model=deepmri_npz needs --weights=PATH to the published d5_c5.npz")
        net, params = models.load_deepmri_npz(weights, flip_filters=flip_filters)
        info = {"model": "deepmri_npz", "weights": weights, "flip_filters": flip_filters}
    else:
        if not os.path.isdir(model):
            raise FileNotFoundError(
                f"--model={model!r} is neither 'cs', 'zero_filled', 'deepmri_npz' nor a checkpoint folder")
        net, params, config = models.load(model)
        info = {"model": model, "config": config.get("model")}
        trained_kind = (config.get("mask") or {}).get("kind")
        if mask_kind is not None and trained_kind is not None and trained_kind != mask_kind:
            print(f"warning: --model={model!r} was trained with {trained_kind!r} masks but is attacked with "
                  f"--mask={mask_kind}: part of its error is then a change of the sampling pattern, not "
                  "instability", file=sys.stderr)
            info["trained_mask_kind"] = trained_kind
    spec = models.spec_for(net)
    if multicoil and operators.Sense not in spec.operator_types:
        raise ValueError(f"--model={model!r} is a {spec.name!r} model, which takes no coil maps: drop --coil_maps")
    return (lambda maps: models.reconstruction_map(net, params, mask, coil_maps=maps)), info


# ----------------------------------------------------------------------------- shared flags

MODEL_HELP = ("A checkpoint folder (experiments.train), 'deepmri_npz' "
              "(the published D5-C5, with --weights), 'cs' (compressed sensing, see --cs_*) or "
              "'zero_filled' (A* y, the gain-1 reference).")


def images_help(single: bool = False) -> str:
    """The ``--images`` help: every spec :func:`mrijax.data.images.load_images` accepts
    (:data:`mrijax.data.images.SPEC_OPTIONS`), grouped.  ``single``: the script takes one image."""
    groups = {"phantoms": [], "the MNI152 template (nilearn)": [], "files": [], "measured k-space": []}
    for spec in SPEC_OPTIONS:
        if spec.startswith("mni"):
            groups["the MNI152 template (nilearn)"].append(spec)
        elif spec.startswith(("fastmri", "kspace")):
            groups["measured k-space"].append(spec)
        elif spec.startswith(("PATH", "DICOM")):
            groups["files"].append(spec)
        else:
            groups["phantoms"].append(spec)
    listed = "; ".join(f"{what}: {' | '.join(specs)}" for what, specs in groups.items() if specs)
    which = ("The image x (the middle one of a file or folder; its magnitude is used). "
             if single else "Images (evenly spread over a file's or folder's). ")
    return (which + listed + ". A file is centre-cropped to a square, resized to --size and scaled to [0, 1] "
            "(complex: largest modulus 1); see mrijax.data.images.load_images.")


def define_out_flags(fv, *, resume: bool = True) -> None:
    """``--out_dir`` (required) and, for resumable scripts, ``--resume``."""
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


def define_image_flags(fv, *, images: str = "shepp_logan", num_images: int = 1, size: int = 128,
                       single: bool = False, min_size: int = 8) -> None:
    """``--images``, ``--num_images``, ``--size`` for :func:`mrijax.data.images.load_images`.

    ``single``: the script takes one image (``--images`` names it; no ``--num_images``).
    ``min_size``: the smallest ``--size`` the parser accepts.
    """
    d = dict(flag_values=fv)
    flags.DEFINE_string("images", images, images_help(single), **d)
    if not single:
        flags.DEFINE_integer("num_images", num_images, "How many images.", lower_bound=1, **d)
    flags.DEFINE_integer("size", size, "Image side (images are cropped/resized to it).", lower_bound=min_size, **d)


def define_mask_flags(fv, *, mask: str = "gaussian_lines", acceleration: float = 3.0, sample_n: int | None = 8,
                      acceleration_flag: bool = True, kinds=None) -> None:
    """``--mask``, ``--acceleration``, ``--sample_n``, ``--mask_seed`` for :func:`mask_from_flags`.

    ``kinds`` are the values ``--mask`` accepts (default :data:`mrijax.masks.KINDS`; e.g.
    ``masks.NESTED_KINDS`` for a script that builds nested masks); ``acceleration_flag=False``
    leaves ``--acceleration`` out (a script that takes sampling rates instead).
    """
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
    d = dict(flag_values=fv)
    flags.DEFINE_integer("steps", steps, "Iterations of the worst-case search.", lower_bound=1, **d)
    flags.DEFINE_float("radius", radius, "l2 radius of r (see --radius_relative_to).", **d)
    flags.DEFINE_enum("radius_relative_to", "x", ["absolute", "x", "measurements"],
                      "Radius in absolute units, or times ||x|| or ||A x||.", **d)
    flags.DEFINE_float("lr", None, "Step of the search, > 0 (default radius / 20).", **d)
    flags.DEFINE_float("momentum", 0.9, "Momentum of the search.", lower_bound=0.0, **d)
    flags.DEFINE_float("tau", 1e-2, "Scale of the search's uniform random start.", lower_bound=0.0, **d)
    require_positive(fv, "lr")


def mask_from_flags(fv, size: int | None = None):
    """The ``(size, size)`` mask the mask flags describe (:func:`mrijax.masks.for_acceleration`).

    ``size`` defaults to ``--size``; give it for a mask of another side from the same flags.
    """
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


def prepare_out_dir(fv, not_numeric=("resume", "out_dir"), may_grow: dict | None = None) -> dict | None:
    """Create ``--out_dir`` and store the flags; on ``--resume`` check they match the stored run.

    Flags named in ``not_numeric`` (progress, figures, the folder itself) may differ on resume.
    ``may_grow`` maps integer flags that may *increase* on resume (``--steps``: continue the
    search) to ``None`` when that is allowed for this run, or to the reason it is not; a grown
    value is stored in place of the old one.  Raises ``FileExistsError`` when the folder holds
    a run and ``--resume`` was not given, and ``ValueError`` naming each flag that differs from
    the stored run with both values (stored and requested), in one line.

    Returns the flags stored before this call (``None`` for a new run).
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
    requested = checkpoint.to_jsonable(numeric)
    diff = sorted(k for k in set(stored) | set(requested) if stored.get(k) != requested.get(k))
    may_grow = may_grow or {}
    grown = [k for k in diff if k in may_grow and may_grow[k] is None and isinstance(stored.get(k), int)
             and isinstance(requested.get(k), int) and requested[k] > stored[k]]
    rest = [k for k in diff if k not in grown]
    if rest:
        show = lambda d, k: json.dumps(d[k]) if k in d else "(not set)"
        why = "; ".join(f"--{k} may grow only {may_grow[k]}" for k in rest if may_grow.get(k))
        raise ValueError(f"--resume with flags that differ from the stored run in {fv.out_dir}: "
                         + "; ".join(f"--{k} stored {show(stored, k)}, requested {show(requested, k)}"
                                     for k in rest)
                         + (f" ({why})" if why else "")
                         + " (rerun with the stored values, or choose another --out_dir)")
    if grown:
        print("continuing the stored run: " + ", ".join(f"--{k} {stored[k]} -> {requested[k]}" for k in grown),
              flush=True)
        save_json(path, numeric)
    return stored


# ----------------------------------------------------------------------------- images


def note(message: str) -> None:
    """A one-line ``note: ...`` on stdout (what the loaders log while a script runs)."""
    print(f"note: {message}", flush=True)


def check_images(images, source: str, *, need_scale: bool = True) -> None:
    """Refuse images a script cannot use, naming the image index and ``source`` (the spec).

    * NaN or infinity anywhere (:func:`mrijax._checks.check_finite_images`);
    * with ``need_scale`` (a radius relative to ``||x||``, or a PSNR, whose peak is
      ``max|x|``): an image that is all zeros, which is what a constant input image becomes
      after the loader scales it to ``[0, 1]``.

    ``images`` is ``(N, H, W)`` (or one ``(H, W)`` image).  Raises ``ValueError``.
    """
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    check_finite_images(a, source)
    if need_scale and a.size:
        peak = np.abs(a).reshape(a.shape[0], -1).max(axis=1)
        flat = np.flatnonzero(~(peak > 0))
        if flat.size:
            more = f" (and {flat.size - 1} more)" if flat.size > 1 else ""
            raise ValueError(f"{source}: image {int(flat[0])}{more} of the {a.shape[0]} loaded is constant (all "
                             "zeros after scaling to [0, 1]): a radius relative to ||x|| and the PSNR (peak "
                             "max|x|) need an image with some contrast")


def load_checked_images(spec: str, size: int, count: int | None = 1, seed: int = 0, *, flag: str = "images",
                        need_scale: bool = True) -> np.ndarray:
    """:func:`mrijax.data.images.load_images` for a script's flag: what the loader did to a
    user's file (crop, resize, scaling) is noted in one line, and the images are checked
    (:func:`check_images`) before any compilation."""
    images = np.asarray(load_images(spec, size, count=count, seed=seed, log=note))
    check_images(images, f"--{flag}={spec!r}", need_scale=need_scale)
    return images


# ----------------------------------------------------------------------------- resumable searches

_STATE_FIELDS = ("r", "v", "t", "active", "diverged", "stopped_at", "snapshots")


def search_state_to_npz(state) -> dict:
    """An :mod:`mrijax.attacks` search state as plain arrays (history entries as ``history_<name>``)."""
    out = {k: np.asarray(getattr(state, k)) for k in _STATE_FIELDS}
    out.update({f"history_{k}": np.asarray(v) for k, v in state.history.items()})
    return out


def search_state_from_npz(arrays, template):
    """The search state :func:`search_state_to_npz` saved, in the structure of ``template``.

    A state saved by a run of fewer steps than ``template``'s (``--steps`` grown on resume)
    continues: its history is extended with NaN, and the problems that ran to the old end
    (neither stopped early nor diverged) are active again.  Raises ``ValueError`` when the
    saved arrays do not fit ``template`` (another problem) or lack a field.
    """
    missing = [k for k in (*_STATE_FIELDS, *(f"history_{k}" for k in template.history)) if k not in arrays]
    if missing:
        raise ValueError(f"saved search state lacks {', '.join(missing)} (not a search state of this run)")
    fields = {k: jnp.asarray(arrays[k]) for k in _STATE_FIELDS}
    hist = {k: jnp.asarray(arrays[f"history_{k}"]) for k in template.history}
    steps = next(iter(template.history.values())).shape[1]
    saved_steps = next(iter(hist.values())).shape[1]
    if saved_steps < steps:
        hist = {k: jnp.concatenate([h, jnp.full((h.shape[0], steps - saved_steps), jnp.nan, h.dtype)], axis=1)
                for k, h in hist.items()}
        ran_out = (fields["stopped_at"] == saved_steps) & ~fields["diverged"]
        fields["active"] = fields["active"] | ran_out
        fields["stopped_at"] = jnp.where(ran_out, steps, fields["stopped_at"])
    elif saved_steps > steps:
        raise ValueError(f"saved search state ran {saved_steps} steps, more than --steps={steps}")
    new = template._replace(**fields, history=hist)
    for name in ("r", "snapshots", "active"):
        if getattr(new, name).shape != getattr(template, name).shape:
            raise ValueError(f"saved search state does not fit this run ({name} shape "
                             f"{getattr(new, name).shape} vs {getattr(template, name).shape})")
    return new


# What the run has saved so far, for the line a Ctrl-C prints: (path, description) in the order
# noted; the description is a string, or a callable of the path (read when the line is printed).
_PROGRESS: list = []


def note_progress(path: str, description) -> None:
    """Record, *before* ``path`` is saved (or when a saved one is loaded), what it holds.

    On Ctrl-C, :func:`main` names the last noted file that exists on disk, so the line it
    prints never claims more than was saved (an interrupted save leaves the old file, or none).
    ``description`` is ``"after batch 1/2"``-like, or a callable ``f(path) -> str`` read then
    (e.g. the iteration count stored in a search state).
    """
    _PROGRESS.append((path, description))


def saved_progress() -> str | None:
    """The description of the last noted file that exists, or ``None`` (see :func:`note_progress`)."""
    for path, description in reversed(_PROGRESS):
        if os.path.exists(path):
            try:
                return description(path) if callable(description) else description
            except Exception:   # an unreadable file: try the one before
                continue
    return None


def _saved_iteration(label: str):
    def describe(path):
        with np.load(path, allow_pickle=False) as z:
            return f"at iteration {int(z['t'])} of {label}"
    return describe


def search_progress(label: str, steps: int) -> Callable:
    """The progress line of every search (:func:`mrijax.attacks.run`'s callback).

    One line per chunk: iterations done, the largest output change, gain and relative
    perturbation norm over the problems, how many have finished, and the elapsed time.
    """
    t0 = time.time()

    def report(state):
        t = int(state.t)
        row = min(t, steps) - 1
        last = {k: np.asarray(state.history[k][:, row]) for k in ("diff_norm", "ratio", "r_rel")}
        done = int(np.sum(~np.asarray(state.active)))
        print(f"[{label}] iter {t}/{steps}  max ||f(y+Ar)-f(y)|| {np.nanmax(last['diff_norm']):.4g}  "
              f"max gain {np.nanmax(last['ratio']):.4g}  max ||r||/||x|| {np.nanmax(last['r_rel']):.4f}  "
              f"finished {done}/{last['ratio'].size}  {time.time() - t0:.1f}s", flush=True)
    return report


def run_search(recon, cfg, prob, state, *, state_path: str, resume: bool, chunk: int, report: Callable,
               label: str):
    """:func:`mrijax.attacks.run` that saves its state to ``state_path`` after every ``chunk`` iterations.

    With ``resume`` and a state saved there, the search continues from it (printing
    ``"{label} resuming at iteration t"``).  ``report(state)`` prints progress after each
    save.  Returns the final state.  Each save is atomic (:func:`save_npz`), so a Ctrl-C leaves
    the last complete state, which :func:`main` names (``interrupted at iteration t of ...``).

    The state saved before is kept beside it (:func:`previous_state_path`), so a state file
    found corrupt or truncated on resume is replaced by the last good one; with none the
    search starts again from iteration 0.  Either way one line says so and the run goes on.
    """
    name = label.strip("[]")
    previous = previous_state_path(state_path)
    note_progress(previous, _saved_iteration(name))
    note_progress(state_path, _saved_iteration(name))   # noted last: named first on Ctrl-C
    if resume:
        state = _resumed_search_state(state, state_path, previous, label)

    def save_and_report(s):
        if os.path.exists(state_path):      # keep the last good state until the new one is saved
            os.replace(state_path, previous)
        save_npz(state_path, **search_state_to_npz(s))
        report(s)
    return attacks.run(recon, cfg, prob, state, chunk=chunk, callback=save_and_report)


def previous_state_path(state_path: str) -> str:
    """Where :func:`run_search` keeps the state saved before the one at ``state_path``
    (``state_batch0.npz`` -> ``state_batch0.prev.npz``)."""
    root, ext = os.path.splitext(state_path)
    return f"{root}.prev{ext or '.npz'}"


def _resumed_search_state(state, state_path: str, previous: str, label: str):
    """The newest readable saved state (``state_path``, else ``previous``) in ``state``'s
    structure, or ``state`` itself when none is saved.  Corrupt or truncated files are
    removed; one line says what the search goes on from."""
    corrupt = []
    for path in (state_path, previous):
        if not os.path.exists(path):
            continue
        try:
            arrays = load_npz(path)
        except CorruptFileError:
            corrupt.append(path)
            continue
        resumed = search_state_from_npz(arrays, state)
        for bad in corrupt:
            os.remove(bad)
        if corrupt:
            print(f"{label} {corrupt[0]} is corrupt or truncated (removed); resuming from the previous state "
                  f"{os.path.basename(path)} at iteration {int(resumed.t)}", flush=True)
        else:
            print(f"{label} resuming at iteration {int(resumed.t)}", flush=True)
        return resumed
    if corrupt:
        for bad in corrupt:
            os.remove(bad)
        print(f"{label} {' and '.join(corrupt)} {'is' if len(corrupt) == 1 else 'are'} corrupt or truncated "
              "(removed) and no good state is left; restarting this batch from iteration 0", flush=True)
    return state


def batch_state_path(fv, j: int) -> str:
    """Where batch ``j``'s search state is saved while it runs (see :func:`run_batches`)."""
    return os.path.join(fv.out_dir, f"state_batch{j}.npz")


def run_batches(fv, images, attack_batch: Callable, batch: int | None = None, redo_finished: bool = False,
                keep_state: bool = False) -> list:
    """Process ``images`` in batches of ``--batch``, resumably; returns each batch's dict of arrays.

    ``batch`` overrides ``--batch`` (e.g. 1 when each image needs its own reconstruction map).

    Batch ``j`` is ``attack_batch(j, n_batches, xb, key)``, ``key`` being
    ``fold_in(key(--seed), j)``; its result is saved as ``batch{j}.npz`` in ``--out_dir``.  Its search
    state (:func:`batch_state_path`) is then removed, or with ``keep_state`` kept (the final state
    only: a search that may grow on resume continues from it).  With ``--resume`` a finished batch is loaded
    instead of recomputed, unless ``redo_finished`` (the search grew: every batch continues from
    its saved state); a finished batch whose file is corrupt or truncated is recomputed (one line
    says so).  A resumed run first removes the stale temporaries of killed writes in ``--out_dir``
    (:func:`mrijax.checkpoint.remove_stale_temporaries`).  Join the parts with :func:`join_batches`.
    """
    n = images.shape[0]
    batch = fv.batch if batch is None else int(batch)
    batches = [images[i:i + batch] for i in range(0, n, batch)]
    if fv.resume:
        checkpoint.remove_stale_temporaries(fv.out_dir)
    parts = []
    for j, xb in enumerate(batches):
        done_path = os.path.join(fv.out_dir, f"batch{j}.npz")
        note_progress(done_path, f"after batch {j + 1}/{len(batches)} (saved)")
        if fv.resume and os.path.exists(done_path) and not redo_finished:
            try:
                part = load_npz(done_path)
            except CorruptFileError:
                print(f"[batch {j + 1}/{len(batches)}] {done_path} is corrupt or truncated; recomputing it",
                      flush=True)
            else:
                print(f"[batch {j + 1}/{len(batches)}] already finished, loading it", flush=True)
                parts.append(part)
                continue
        key = jax.random.fold_in(jax.random.key(fv.seed), j)
        part = attack_batch(j, len(batches), xb, key)
        save_npz(done_path, **part)
        state_path = batch_state_path(fv, j)
        for path in ([] if keep_state else [state_path]) + [previous_state_path(state_path)]:
            if os.path.exists(path):
                os.remove(path)
        parts.append(part)
    return parts


def join_batches(parts, sizes, image_axis: dict | None = None) -> dict:
    """Concatenate per-batch dicts of arrays along each array's *image* axis.

    ``sizes``: the number of images of each part.  ``image_axis`` maps a key to its image axis
    (default 0: image axis first; e.g. 1 for snapshot-major ``(S, B, ...)`` arrays).  An array
    whose axis does not have its batch's number of images raises ``ValueError`` (an array laid
    out ``(steps, B)`` would otherwise be joined along the iterations).
    """
    image_axis = image_axis or {}
    out = {}
    for k in parts[0]:
        axis = image_axis.get(k, 0)
        for p, size in zip(parts, sizes):
            a = np.asarray(p[k])
            if a.ndim <= axis or a.shape[axis] != size:
                raise ValueError(f"batch array {k!r} of shape {a.shape} has no image axis {axis} of length {size}")
        out[k] = np.concatenate([np.asarray(p[k]) for p in parts], axis=axis)
    return out


def _interrupted_line(fv) -> str:
    where = saved_progress()
    can_resume = "resume" in fv
    started = can_resume and os.path.exists(os.path.join(str(fv["out_dir"].value), "run_config.json"))
    if not can_resume:
        return "interrupted; this script does not resume: rerun it"
    if where is None:
        if not started:
            return "interrupted before the run started; nothing was saved"
        where = "before any result was saved"
    return f"interrupted {where}; rerun with --resume"


def main(define_flags: Callable, run: Callable, argv=None) -> int:
    """Parse flags, call ``run(fv)``; returns the exit code.

    ``--help`` prints the usage and returns 0.  A bad flag or input (and a missing optional package) prints one ``error: ...`` line and
    returns 2; Ctrl-C prints one line saying how far the saved results go (``interrupted at
    iteration N of batch j/n; rerun with --resume``) and returns 130.
    """
    try:
        fv = parse(define_flags, argv)
    except SystemExit as e:       # --help (0) or a bad flag (2), the message already printed
        return int(e.code or 0)
    _PROGRESS.clear()
    try:
        run(fv)
    except KeyboardInterrupt:
        print(_interrupted_line(fv), file=sys.stderr, flush=True)
        return 130
    except (ValueError, OSError, TypeError, ImportError) as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    finally:
        _PROGRESS.clear()
    return 0
