"""Training learned reconstruction maps with optax: train state, losses, batches, ``fit``, ``evaluate``.

The pieces, each usable on its own:

* :class:`TrainState` -- the whole mutable state of a run as one pytree
  (``params``, ``opt_state``, ``step``, ``rng``), so a checkpoint of it resumes a run
  exactly (see :mod:`mrijax.checkpoint`).
* :func:`make_optimizer` -- Adam (the default), AdamW-style decoupled weight decay,
  RMSProp, and ``"automap_rmsprop"``: the settings Antun et al. (PNAS 2020, SI 2.1.2)
  report for AUTOMAP (learning rate 2e-5, decay 0.9, momentum 0).
* Losses on images: :func:`l1_loss`, :func:`mse_loss` (means over pixels, complex
  differences by modulus) and :func:`magnitude_l2_loss` (per-image squared l2 norm of the
  magnitude difference, AUTOMAP's ``L_SE``), plus :func:`activation_l1` for AUTOMAP's
  ``lambda * L_PEN`` on the sown activations of its second convolution.
* Predictors -- how a model turns a batch ``{"target", "mask"}`` into a reconstruction:
  :func:`cascade_predictor` (``x_zf``, ``k0``, ``mask``, per-image masks allowed) and
  :func:`automap_predictor` (measurement vector ``y`` from one static mask).
* :func:`make_train_step` -- a pure, jit-compiled ``train_step(state, batch) -> (state,
  metrics)``.
* :class:`BatchSource` -- seeded batches: batch ``i`` is a pure function of ``(seed, i)``
  (images, augmentation, phase, masks), so a resumed run sees exactly the batches the
  uninterrupted run would have seen.
* :func:`fit` -- the loop: progress line (step, loss, PSNR, steps/s), early stop at a
  target loss (``min_loss``, the stopping rule of the DL4IA tutorial's training), periodic
  validation and "latest"/"best" checkpoints, metrics history.
* :func:`evaluate` -- zero-filled vs network PSNR/SSIM of a trained model on given images.
* :func:`run` -- a whole run from a JSON config (what ``experiments/train_cascade.py`` and
  ``experiments/train_automap.py`` call): checkpoints, ``metrics.json`` and a PNG of
  reconstructions in one directory, refusing to overwrite a run or resume a different one.

Conventions (those of the rest of the library): images ``(..., H, W)``, centred boolean
masks, orthonormal centred FFT, images scaled to magnitude ``[0, 1]`` (the published
D5-C5 weights need that scaling and our own models are trained with it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import jax
import jax.numpy as jnp
import optax
from flax import struct

from mrijax import fourier

Batch = Dict[str, Any]
Metrics = Dict[str, float]

# --------------------------------------------------------------------------- state


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
      params: the model's variables (``model.init`` output, e.g. ``{"params": ...}``).
      opt_state: the optax optimiser state for ``params``.
      step: number of optimiser steps taken, an int32 scalar array.
      rng: a raw ``uint32[2]`` PRNG key (``jax.random.PRNGKey``); split once per step, so
        stochastic parts of a step (measurement noise) are reproducible on resume.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array


def create_train_state(params, optimizer: optax.GradientTransformation, seed: int = 0) -> TrainState:
    """A fresh :class:`TrainState` at step 0.

    Args:
      params: the model's variables.
      optimizer: an optax transformation (e.g. from :func:`make_optimizer`).
      seed: seed of the state's PRNG key (a non-negative int).

    Returns:
      ``TrainState(params, optimizer.init(params), step=0, rng=PRNGKey(seed))``.
    """
    _check_nonneg_int(seed, "seed")
    return TrainState(params=params, opt_state=optimizer.init(params),
                      step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed))


# --------------------------------------------------------------------------- optimisers

OPTIMIZERS = ("adam", "rmsprop", "automap_rmsprop")

# Antun et al. 2020, SI 2.1.2: "RMSProp ... learning rate 0.00002, momentum 0, and decay 0.9".
# The network was trained with TensorFlow 1, whose RMSProp starts the mean-square
# accumulator at 1 (not 0) and uses eps = 1e-10; ``initial_scale`` / ``eps`` reproduce that.
AUTOMAP_RMSPROP = dict(lr=2e-5, decay=0.9, momentum=0.0, eps=1e-10, initial_scale=1.0)


def make_optimizer(name: str = "adam", lr: Optional[float] = None, weight_decay: float = 0.0, *,
                   b1: float = 0.9, b2: float = 0.999, eps: Optional[float] = None,
                   decay: float = 0.9, momentum: float = 0.0, initial_scale: Optional[float] = None,
                   clip_norm: Optional[float] = None, decay_steps: Optional[int] = None,
                   final_lr_fraction: float = 0.1) -> optax.GradientTransformation:
    """An optax optimiser by name.

    Args:
      name: ``"adam"`` (default lr 1e-3; with ``weight_decay > 0`` it is AdamW, decoupled
        decay), ``"rmsprop"`` (default lr 1e-3; weight decay is added to the gradient, as
        in TF/PyTorch) or ``"automap_rmsprop"``: RMSProp with AUTOMAP's published settings
        (:data:`AUTOMAP_RMSPROP`: lr 2e-5, decay 0.9, momentum 0, TF1's eps 1e-10 and
        accumulator initialised to 1); explicit arguments override them.
      lr: peak learning rate; ``None`` takes the default of ``name``.
      weight_decay: ``>= 0``.
      b1, b2: Adam's moment decays.
      eps: denominator offset; ``None`` takes the default of ``name`` (1e-8, or 1e-10 for
        ``automap_rmsprop``).
      decay: RMSProp's decay of the mean square.
      momentum: RMSProp momentum (0 = none).
      initial_scale: RMSProp's initial mean square (``None``: 0, or 1 for ``automap_rmsprop``).
      clip_norm: clip gradients to this global norm first (``None``: no clipping).
      decay_steps: if given, the learning rate follows a cosine decay from ``lr`` to
        ``lr * final_lr_fraction`` over this many steps (constant afterwards).
      final_lr_fraction: see ``decay_steps``, in ``[0, 1]``.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: unknown ``name`` or out-of-range numbers.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    preset = AUTOMAP_RMSPROP if name == "automap_rmsprop" else {}
    lr = preset.get("lr", 1e-3) if lr is None else lr
    eps = preset.get("eps", 1e-8) if eps is None else eps
    initial_scale = preset.get("initial_scale", 0.0) if initial_scale is None else initial_scale
    for value, label in ((lr, "lr"), (eps, "eps")):
        if not _is_number(value) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number > 0, got {value!r}")
    for value, label in ((weight_decay, "weight_decay"), (momentum, "momentum"), (initial_scale, "initial_scale")):
        if not _is_number(value) or not value >= 0 or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    for value, label in ((b1, "b1"), (b2, "b2"), (decay, "decay"), (final_lr_fraction, "final_lr_fraction")):
        if not _is_number(value) or not 0 <= value <= 1:
            raise ValueError(f"{label} must be in [0, 1], got {value!r}")
    if clip_norm is not None and (not _is_number(clip_norm) or not clip_norm > 0):
        raise ValueError(f"clip_norm must be None or a number > 0, got {clip_norm!r}")
    if decay_steps is not None:
        _check_pos_int(decay_steps, "decay_steps")
        schedule = optax.cosine_decay_schedule(lr, decay_steps, alpha=final_lr_fraction)
    else:
        schedule = lr

    parts = []
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if name == "adam":
        if weight_decay > 0:
            parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
        else:
            parts.append(optax.adam(schedule, b1=b1, b2=b2, eps=eps))
    else:
        if weight_decay > 0:
            parts.append(optax.add_decayed_weights(weight_decay))
        parts.append(optax.rmsprop(schedule, decay=decay, eps=eps, initial_scale=initial_scale,
                                   momentum=momentum if momentum > 0 else None))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


# --------------------------------------------------------------------------- losses and metrics


def l1_loss(prediction, target):
    """Mean over all pixels of ``|prediction - target|`` (the modulus for complex images)."""
    return jnp.mean(jnp.abs(prediction - target))


def mse_loss(prediction, target):
    """Mean over all pixels of ``|prediction - target|^2``."""
    return jnp.mean(jnp.square(jnp.abs(prediction - target)))


def magnitude_l2_loss(prediction, target):
    """AUTOMAP's ``L_SE``: ``|| |prediction| - |target| ||_2^2`` per image, averaged over the batch.

    Magnitudes are compared (AUTOMAP outputs a magnitude image; a complex input is
    replaced by its modulus).  The per-image *sum* (not mean) matches the paper's
    "l2-norm of the difference", the scale against which ``lambda = 1e-4`` of the
    activation penalty was chosen.
    """
    diff = jnp.abs(prediction) - jnp.abs(target)
    return jnp.mean(jnp.sum(jnp.square(diff), axis=(-2, -1)))


def activation_l1(activations, batch_ndim: int = 1):
    """AUTOMAP's ``L_PEN``: the l1 norm of the activations per image, averaged over the batch.

    Args:
      activations: an array or a pytree of arrays (e.g. the ``'intermediates'`` collection,
        where ``sow`` stores a tuple) whose first ``batch_ndim`` axes are batch axes.
      batch_ndim: number of leading batch axes of every leaf.
    """
    leaves = jax.tree_util.tree_leaves(activations)
    if not leaves:
        raise ValueError("activation_l1 got no activations (did the model sow any?)")
    total = 0.0
    for a in leaves:
        per_image = jnp.sum(jnp.abs(a).reshape(a.shape[:batch_ndim] + (-1,)), axis=-1)
        total = total + jnp.mean(per_image)
    return total


LOSSES: Dict[str, Callable] = {"l1": l1_loss, "mse": mse_loss, "magnitude_l2": magnitude_l2_loss}


def batch_psnr(prediction, target):
    """PSNR in dB of magnitudes per image, peak ``max|target|`` (as :func:`mrijax.metrics.psnr`).

    A jit-friendly copy used for the per-step training metric; ``+inf`` for identical images.
    """
    pred, ref = jnp.abs(prediction), jnp.abs(target)
    mse = jnp.mean(jnp.square(pred - ref), axis=(-2, -1))
    peak = jnp.max(ref, axis=(-2, -1))
    safe = jnp.where(mse == 0, 1.0, mse)
    return jnp.where(mse == 0, jnp.inf, 10.0 * jnp.log10(jnp.square(peak) / safe))


# --------------------------------------------------------------------------- predictors


def cascade_predictor(model, noise_std: float = 0.0) -> Callable:
    """``predict(params, batch, rng) -> (reconstruction, activations)`` for a model called as
    ``model.apply(params, x_zf, k0, mask)`` (the :class:`mrijax.models.Cascade` signature).

    From ``batch["target"]`` (complex or real ``(B, H, W)``) and ``batch["mask"]``
    (``(H, W)`` or one mask per image ``(B, H, W)``) it simulates ``k0 = mask * F x``
    (plus, if ``noise_std > 0``, complex Gaussian noise of that standard deviation per real
    and imaginary part on the sampled entries, drawn from ``rng``) and ``x_zf = A* k0``.
    ``activations`` is ``None``.
    """
    if not _is_number(noise_std) or not noise_std >= 0:
        raise ValueError(f"noise_std must be a number >= 0, got {noise_std!r}")

    def predict(params, batch, rng):
        target, mask = batch["target"], batch["mask"]
        k0 = fourier.forward(target, mask)
        if noise_std > 0:
            re_key, im_key = jax.random.split(rng)
            noise = (jax.random.normal(re_key, k0.shape) + 1j * jax.random.normal(im_key, k0.shape))
            k0 = fourier.apply_mask(k0 + noise_std * noise.astype(k0.dtype), mask)
        x_zf = fourier.adjoint(k0, mask)
        return model.apply(params, x_zf, k0, mask), None

    return predict


def automap_predictor(model, mask, noise_std: float = 0.0) -> Callable:
    """``predict(params, batch, rng) -> (magnitude image, activations)`` for AUTOMAP.

    AUTOMAP maps a measurement vector ``y = gather(F x, mask)`` of fixed length ``m`` to a
    magnitude image, so the mask is one static NumPy array closed over here (a
    ``batch["mask"]`` is ignored).  The activations sown by the model in the
    ``'intermediates'`` collection are returned for :func:`activation_l1`.

    Args:
      model: an :class:`mrijax.models.Automap` (``model.apply(params, y)``).
      mask: concrete centred boolean ``(H, W)`` mask with ``model.m`` sampled entries.
      noise_std: as in :func:`cascade_predictor`.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be one (H, W) array for AUTOMAP, got shape {mask.shape}")
    mask = mask.astype(bool)
    if not _is_number(noise_std) or not noise_std >= 0:
        raise ValueError(f"noise_std must be a number >= 0, got {noise_std!r}")

    def predict(params, batch, rng):
        y = fourier.gather(fourier.fft2c(batch["target"]), mask)
        if noise_std > 0:
            re_key, im_key = jax.random.split(rng)
            y = y + noise_std * (jax.random.normal(re_key, y.shape)
                                 + 1j * jax.random.normal(im_key, y.shape)).astype(y.dtype)
        out, variables = model.apply(params, y, mutable=["intermediates"])
        return out, variables.get("intermediates")

    return predict


def predictor_for(model, mask=None, noise_std: float = 0.0) -> Callable:
    """The right predictor for ``model``: :func:`automap_predictor` for AUTOMAP (needs ``mask``),
    :func:`cascade_predictor` for everything called as ``(x_zf, k0, mask)``."""
    if _is_automap(model):
        if mask is None:
            raise ValueError("AUTOMAP needs its static (H, W) mask to form the measurement vector y")
        return automap_predictor(model, mask, noise_std)
    return cascade_predictor(model, noise_std)


def _is_automap(model) -> bool:
    try:
        from mrijax.models import Automap
    except ImportError:  # pragma: no cover - the models package always has it
        return False
    return isinstance(model, Automap)


# --------------------------------------------------------------------------- train step


def make_train_step(predict: Callable, optimizer: optax.GradientTransformation, loss: str = "mse",
                    activation_penalty: float = 0.0, jit: bool = True) -> Callable:
    """Build ``train_step(state, batch) -> (new_state, metrics)``.

    One optimiser step on ``loss(prediction, target) + activation_penalty *
    activation_l1(activations)``.  The step is pure: the new state depends only on
    ``(state, batch)`` (the PRNG key for measurement noise is split from ``state.rng``).

    Args:
      predict: ``predict(params, batch, rng) -> (prediction, activations)``, e.g. from
        :func:`cascade_predictor` / :func:`automap_predictor`.
      optimizer: the optax transformation whose state is ``state.opt_state``.
      loss: ``"l1"``, ``"mse"`` or ``"magnitude_l2"`` (:data:`LOSSES`).  For a real
        (magnitude) prediction the target is compared by magnitude.
      activation_penalty: ``lambda >= 0`` (AUTOMAP: 1e-4); needs a predictor that returns
        activations.
      jit: compile the step with ``jax.jit`` (default).

    Returns:
      The step function.  ``metrics`` holds scalar arrays: ``loss`` (the total),
      ``data_loss``, ``penalty``, ``psnr`` (mean over the batch, of magnitudes, peak from
      the target) and ``grad_norm``.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
    if not _is_number(activation_penalty) or not activation_penalty >= 0:
        raise ValueError(f"activation_penalty must be a number >= 0, got {activation_penalty!r}")
    loss_fn = LOSSES[loss]

    def objective(params, batch, rng):
        prediction, activations = predict(params, batch, rng)
        target = batch["target"]
        if not jnp.iscomplexobj(prediction):
            target = jnp.abs(target)
        data_loss = loss_fn(prediction, target)
        penalty = jnp.zeros((), data_loss.dtype)
        if activation_penalty > 0:
            if activations is None:
                raise ValueError("activation_penalty > 0 but the predictor returns no activations")
            penalty = activation_penalty * activation_l1(activations)
        total = data_loss + penalty
        return total, (data_loss, penalty, jnp.mean(batch_psnr(prediction, target)))

    def train_step(state: TrainState, batch: Batch):
        rng, step_rng = jax.random.split(state.rng)
        (total, (data_loss, penalty, psnr)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, batch, step_rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1, rng=rng)
        metrics = dict(loss=total, data_loss=data_loss, penalty=penalty, psnr=psnr,
                       grad_norm=optax.tree.norm(grads))
        return new_state, metrics

    return jax.jit(train_step) if jit else train_step


# --------------------------------------------------------------------------- data


def _seed_int(*words: int) -> int:
    """A 32-bit seed that is a pure function of the words (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


# Streams of randomness per batch, so changing e.g. augmentation does not change the masks.
_STREAM_IMAGES, _STREAM_AUGMENT, _STREAM_PHASE, _STREAM_MASK = 1, 2, 3, 4

MASK_MODES = ("fixed", "per_batch", "per_image", "per_file")

def parse_image_spec(spec: str) -> List[Tuple[str, float]]:
    """``"ellipses:0.5,mni:coronal:0.25,mni:sagittal:0.25"`` -> ``[(source, weight), ...]``.

    Comma-separated sources, each with an optional ``:weight`` suffix (default 1; weights
    are normalised).  A source is ``ellipses`` or ``shepp_logan_variants`` (a fresh
    random-ellipse image or Shepp-Logan variant for every draw: unlimited data) or
    anything :func:`mrijax.data.images.load_images` reads (``shepp_logan``, ``mni``, ``mni:axial``, ``mni:coronal``, ``mni:sagittal``, a
    ``.npy``/``.npz``/``.mat``/... path, ``kspace:PATH``), which is loaded once as a
    finite pool, or ``fastmri:FOLDER`` / ``fastmri_magnitude:FOLDER``, a lazy pool of the
    slices of a folder of fastMRI volumes (:class:`mrijax.data.images.FastMRISlices`),
    e.g. ``"fastmri:/data/knee/singlecoil_train:3,ellipses:1"``.  (A source whose last
    ``:``-part parses as a number takes it as its weight, so a folder or key named like
    a number needs an explicit weight after it.)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"images spec must be a non-empty string, got {spec!r}")
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"images spec {spec!r} has an empty entry")
        name, weight = part, 1.0
        head, sep, tail = part.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
                name = head
            except ValueError:
                pass  # 'mni:axial' or 'file.npz:key', not a weight
        if not weight > 0 or not math.isfinite(weight):
            raise ValueError(f"weight of {name!r} in images spec must be > 0, got {weight}")
        out.append((name, weight))
    return out


def load_image_pool(source: str, size: int, count: Optional[int] = None, seed: int = 0):
    """The finite pool of images of a source other than a generator (``ellipses``,
    ``shepp_logan_variants``); ``count=None``: all it has.

    ``fastmri:FOLDER`` / ``fastmri_magnitude:FOLDER`` give a lazy
    :class:`mrijax.data.images.FastMRISlices` (``len``, ``pool[k]`` reads one slice,
    ``shape``/``dtype`` of the ``(N, size, size)`` array it stands for), so a folder of
    volumes is never loaded into memory.  Every other source is loaded at once by
    :func:`mrijax.data.images.load_images` into an ``(N, size, size)`` array.
    """
    from mrijax.data import images
    pool = images.fastmri_pool(source, size, count=count)
    if pool is not None:
        return pool
    return np.asarray(images.load_images(source, size, count=count, seed=seed))


def validation_images(spec: str, size: int, count: int, seed: int) -> np.ndarray:
    """``count`` held-out images ``(count, size, size)`` for a spec of :func:`parse_image_spec`.

    The count is split over the sources by weight (at least one each).  ``ellipses`` gives
    ``random_ellipses(size, [seed, j])``: two-word seeds, which no training batch uses
    (:class:`BatchSource` seeds its ellipses with three words), so they are never training
    images.  Other sources give ``count_i`` images evenly spread over what they hold; pick a
    source not used for training (e.g. ``mni:axial`` for a run trained on coronal and
    sagittal slices, or ``fastmri:`` on a validation folder) for truly unseen images.

    Images are magnitudes (``float32``), except those of sources that keep a measured
    phase (:func:`mrijax.data.images.keeps_phase`: ``fastmri:``, ``kspace:``), which stay
    complex as in training; the result is then ``complex64``.
    """
    from mrijax.data import images
    _check_pos_int(count, "count")
    parsed = parse_image_spec(spec)
    weights = np.array([w for _, w in parsed])
    counts = np.maximum(1, np.floor(count * weights / weights.sum()).astype(int))
    counts[0] += count - counts.sum()
    if counts[0] < 1:
        raise ValueError(f"count {count} is too small for the {len(parsed)} sources of {spec!r}")
    parts = []
    for (name, _), c in zip(parsed, counts):
        part = np.asarray(images.load_images(name, size, count=int(c), seed=seed))
        parts.append(part if images.keeps_phase(name) else np.abs(part))
    out = np.concatenate(parts)
    return out.astype(np.complex64 if np.iscomplexobj(out) else np.float32)


def make_mask(kind: str, shape: Tuple[int, int], seed: int, kwargs: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """``mrijax.masks.make(kind, shape, seed=seed, **kwargs)`` as a boolean ``(H, W)`` array;
    ``seed`` is dropped for deterministic kinds that take none (e.g. ``radial``)."""
    from mrijax import masks
    kwargs = dict(kwargs or {})
    if _accepts(getattr(masks, kind, None), "seed"):
        kwargs["seed"] = seed
    mask = np.asarray(masks.make(kind, shape, **kwargs))
    if mask.shape != tuple(shape):
        raise ValueError(f"mask kind {kind!r} gave shape {mask.shape}, expected {tuple(shape)}")
    return mask.astype(bool)


def augment_dihedral(image: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 symmetries of the square: ``rot90`` by ``code % 4`` then a left-right flip if
    ``code >= 4``.  ``code`` in ``0..7``; 0 is the identity."""
    out = np.rot90(image, int(code) % 4, axes=(-2, -1))
    if code >= 4:
        out = out[..., :, ::-1]
    return np.ascontiguousarray(out)


def _normalise_max(images: np.ndarray) -> np.ndarray:
    """Scale each image to max magnitude 1 (all-zero images stay zero)."""
    peak = np.max(np.abs(images), axis=(-2, -1), keepdims=True)
    return images / np.where(peak > 0, peak, 1)


@dataclasses.dataclass
class BatchSource:
    """Seeded training batches: ``source(i)`` is a pure function of ``(seed, i)``.

    ``source(i)`` returns ``{"target": complex64 (B, H, W), "mask": bool (B, H, W)}``.  Each
    image is drawn from one of the ``images`` sources (weighted), put through a random
    symmetry of the square if ``augment``, scaled to max magnitude 1, optionally given a
    smooth random phase (``max_phase > 0``), and paired with a mask:

    * ``mask_mode="fixed"``: one mask for the whole run, drawn with ``mask_seed``;
    * ``"per_batch"``: a new mask every batch (same for its images);
    * ``"per_image"``: a new mask for every image;
    * ``"per_file"``: as fastMRI does, one mask per volume: an image read from a
      ``fastmri:`` folder gets the mask seeded by
      :func:`mrijax.data.fastmri.mask_seed` ``(file, mask_seed)``, so every slice of a
      volume shares it; images of other sources get a new mask each (as ``per_image``).

    Masks come from ``mask_fn(shape, seed)`` if given, else
    ``mrijax.masks.make(mask_kind, shape, seed=seed, **mask_kwargs)``.

    Because nothing depends on earlier batches, resuming at step ``k`` reproduces the
    batches ``k, k+1, ...`` of an uninterrupted run exactly.

    Images are used as magnitudes, except those of sources with a *measured* phase
    (:func:`mrijax.data.images.keeps_phase`): ``fastmri:FOLDER`` single-coil slices and
    ``kspace:PATH`` single-coil k-space stay complex, because a cascade trained on
    single-coil data must see k-space like the scanner's -- the k-space of a magnitude
    image is conjugate-symmetric, real k-space is not.  They are scaled to max modulus 1
    (phase kept), augmented like the rest, and never given a synthetic phase
    (``max_phase`` applies to the magnitude images only).  The simulated measurement is
    then ``mask * F target`` of that complex image, i.e. the centre of the slice's
    measured k-space up to the field-of-view crop and resize.  ``fastmri_magnitude:``
    (and multi-coil volumes, whose RSS target is real) give magnitudes.

    ``fastmri:`` sources are lazy: each draw reads one slice from disk
    (:class:`mrijax.data.images.FastMRISlices`, the last 256 processed images cached),
    so a whole training folder is never held in memory; other sources are loaded once.

    Attributes:
      images: a spec for :func:`parse_image_spec`, or an array ``(N, H, W)`` of images
        (used as magnitudes).
      size: image side (square images).
      batch_size: images per batch.
      seed: the data seed.
      augment: apply random flips/rotations.
      max_phase: maximum smooth phase in radians (0: real images).
      mask_kind, mask_kwargs: passed to ``mrijax.masks.make``.
      mask_mode: one of :data:`MASK_MODES`.
      mask_seed: seed of the fixed mask (default ``seed``).
      pool_count: images to load for a finite (non-generator) source (``None``: all it has).
      mask_fn: optional ``mask_fn((H, W), seed) -> bool (H, W)`` replacing ``mrijax.masks``.
    """

    images: Union[str, np.ndarray]
    size: int
    batch_size: int
    seed: int = 0
    augment: bool = True
    max_phase: float = 0.0
    mask_kind: str = "gaussian_lines"
    mask_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    mask_mode: str = "per_batch"
    mask_seed: Optional[int] = None
    pool_count: Optional[int] = None
    mask_fn: Optional[Callable] = None

    def __post_init__(self):
        _check_pos_int(self.size, "size")
        _check_pos_int(self.batch_size, "batch_size")
        _check_nonneg_int(self.seed, "seed")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if not _is_number(self.max_phase) or not self.max_phase >= 0:
            raise ValueError(f"max_phase must be a number >= 0, got {self.max_phase!r}")
        self.mask_kwargs = dict(self.mask_kwargs)
        if self.mask_seed is None:
            self.mask_seed = self.seed
        from mrijax.data import images as image_sources
        # (name, pool or None for a generator); a pool is an array or a lazy FastMRISlices.
        self._sources: List[Tuple[str, Any]] = []
        self._generators: List[Optional[Callable]] = []  # per source: f(size, seed) or None
        self._keep_phase: List[bool] = []  # per source: keep its measured complex images
        if isinstance(self.images, str):
            parsed = parse_image_spec(self.images)
            for name, _ in parsed:
                pool, keep = None, False
                generator = image_sources.image_generator(name)
                if generator is None:
                    pool = load_image_pool(name, self.size, self.pool_count, self.seed)
                    if not isinstance(pool, image_sources.FastMRISlices):
                        pool = np.asarray(pool)
                    if len(pool.shape) != 3 or tuple(pool.shape[1:]) != (self.size, self.size) or len(pool) == 0:
                        raise ValueError(f"image source {name!r} gave shape {tuple(pool.shape)}, expected "
                                         f"(N>0, {self.size}, {self.size})")
                    keep = image_sources.keeps_phase(name) and np.dtype(pool.dtype).kind == "c"
                self._sources.append((name, pool))
                self._generators.append(generator)
                self._keep_phase.append(keep)
            weights = np.array([w for _, w in parsed], np.float64)
        else:
            pool = np.asarray(self.images)
            if pool.ndim != 3 or pool.shape[1:] != (self.size, self.size) or len(pool) == 0:
                raise ValueError(f"images must be a spec string or an array (N>0, {self.size}, {self.size}), "
                                 f"got shape {pool.shape}")
            self._sources.append(("array", pool))
            self._generators.append(None)
            self._keep_phase.append(False)
            weights = np.ones(1)
        self._weights = weights / weights.sum()
        self._fixed_mask = None
        self._file_masks = {}  # per_file: mask seed -> mask (every slice of a volume asks for the same one)
        if self.mask_mode == "fixed":
            self._fixed_mask = self._make_mask(self.mask_seed)

    def _make_mask(self, seed: int) -> np.ndarray:
        shape = (self.size, self.size)
        if self.mask_fn is not None:
            mask = np.asarray(self.mask_fn(shape, seed))
            if mask.shape != shape:
                raise ValueError(f"mask_fn gave shape {mask.shape}, expected {shape}")
            return mask.astype(bool)
        return make_mask(self.mask_kind, shape, seed, self.mask_kwargs)

    @property
    def fixed_mask(self) -> Optional[np.ndarray]:
        """The run's mask for ``mask_mode="fixed"``, else ``None``."""
        return self._fixed_mask

    def picks(self, i: int) -> List[Tuple[int, int]]:
        """Where the images of batch ``i`` come from: ``(source index, pool index)`` per image.

        The source index counts the entries of the ``images`` spec (0 for an array); the
        pool index is ``-1`` for ``ellipses`` / ``shepp_logan_variants`` (a fresh image seeded
        by ``(seed, i, j)``).
        For a ``fastmri:`` source, ``self.pool(s).locate(k)`` gives the file and slice.
        """
        _check_nonneg_int(i, "batch index")
        rng = np.random.default_rng(_seed_int(self.seed, i, _STREAM_IMAGES))
        which = rng.choice(len(self._sources), size=self.batch_size, p=self._weights)
        # The draws are made in this order (source choices, then one index per pool image),
        # so batches of existing specs are unchanged.
        return [(int(s), -1 if self._sources[s][1] is None else int(rng.integers(len(self._sources[s][1]))))
                for s in which]

    def pool(self, s: int):
        """The pool of source ``s`` (an array or a lazy ``FastMRISlices``; ``None`` for a generator
        such as ``ellipses``)."""
        return self._sources[s][1]

    def _draw(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(images, measured)``: the augmented, max-1 images of batch ``i`` and, per image,
        whether it keeps a measured phase."""
        picks = self.picks(i)
        dtype = np.complex64 if any(self._keep_phase) else np.float32
        out = np.empty((self.batch_size, self.size, self.size), dtype)
        measured = np.zeros(self.batch_size, bool)
        for j, (s, k) in enumerate(picks):
            name, pool = self._sources[s]
            if pool is None:  # ellipses / Shepp-Logan variants: a fresh image, seeded by (seed, i, j)
                out[j] = self._generators[s](self.size, [self.seed, i, j])
            elif self._keep_phase[s]:
                out[j] = pool[k]
                measured[j] = True
            else:
                out[j] = np.abs(pool[k])
        if self.augment:
            codes = np.random.default_rng(_seed_int(self.seed, i, _STREAM_AUGMENT)).integers(
                0, 8, self.batch_size)
            out = np.stack([augment_dihedral(im, c) for im, c in zip(out, codes)])
        return _normalise_max(out).astype(dtype), measured

    def images_for(self, i: int) -> np.ndarray:
        """The augmented, max-1 images of batch ``i`` (before synthetic phase), ``(B, H, W)``.

        ``float32`` magnitudes; ``complex64`` when a source keeps its measured phase
        (``fastmri:``, ``kspace:``), whose images are then complex and the rest real-valued.
        """
        return self._draw(i)[0]

    def masks_for(self, i: int) -> np.ndarray:
        """The masks of batch ``i``, ``bool (B, H, W)``."""
        if self.mask_mode == "fixed":
            masks = [self._fixed_mask] * self.batch_size
        elif self.mask_mode == "per_batch":
            masks = [self._make_mask(_seed_int(self.seed, i, _STREAM_MASK))] * self.batch_size
        elif self.mask_mode == "per_file":
            from mrijax.data import fastmri
            from mrijax.data.images import FastMRISlices
            masks = []
            for j, (s, k) in enumerate(self.picks(i)):
                pool = self._sources[s][1]
                if isinstance(pool, FastMRISlices):
                    masks.append(self._file_mask(fastmri.mask_seed(pool.locate(k)[0], self.mask_seed)))
                else:
                    masks.append(self._make_mask(_seed_int(self.seed, i, _STREAM_MASK, j)))
        else:
            masks = [self._make_mask(_seed_int(self.seed, i, _STREAM_MASK, j)) for j in range(self.batch_size)]
        return np.stack(masks)

    def _file_mask(self, seed: int) -> np.ndarray:
        if seed not in self._file_masks:
            self._file_masks[seed] = self._make_mask(seed)
        return self._file_masks[seed]

    def iterate(self, start: int = 0):
        """Yield batches ``start, start + 1, ...`` without end (resume with ``start = step``)."""
        _check_nonneg_int(start, "start")
        i = start
        while True:
            yield self(i)
            i += 1

    def __call__(self, i: int) -> Batch:
        images, measured = self._draw(i)
        if self.max_phase > 0:
            from mrijax.data import phantoms
            # Measured images keep their own phase; the others (real-valued) get a synthetic one.
            target = np.stack([im if measured[j] else
                               phantoms.with_smooth_phase(im.real, [self.seed, i, j, _STREAM_PHASE], self.max_phase)
                               for j, im in enumerate(images)])
        else:
            target = images.astype(np.complex64)
        return {"target": target.astype(np.complex64), "mask": self.masks_for(i)}

    def config(self) -> Dict[str, Any]:
        """JSON-able description (what :mod:`mrijax.checkpoint` stores and compares on resume)."""
        images = self.images if isinstance(self.images, str) else f"<array {tuple(np.shape(self.images))}>"
        return {"data": dict(images=images, size=self.size, batch_size=self.batch_size, seed=self.seed,
                             augment=bool(self.augment), max_phase=float(self.max_phase),
                             pool_count=self.pool_count),
                "mask": dict(kind=self.mask_kind if self.mask_fn is None else getattr(
                    self.mask_fn, "__name__", "custom"), kwargs=self.mask_kwargs,
                    mode=self.mask_mode, seed=self.mask_seed)}


# --------------------------------------------------------------------------- fit


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      state: the final train state.
      history: list of metric records (dicts with ``step`` and floats), one per logged step
        and one per validation.
      stopped_early: ``True`` if the loss reached ``min_loss``.
      best: the best validation record (``None`` without validation).
    """

    state: TrainState
    history: List[Dict[str, Any]]
    stopped_early: bool
    best: Optional[Dict[str, Any]]


def fit(state: TrainState, train_step: Callable, batches: Callable[[int], Batch], steps: int, *,
        validate: Optional[Callable[[Any], Mapping[str, float]]] = None, validate_every: int = 0,
        best_metric: str = "val_psnr", min_loss: Optional[float] = None, log_every: int = 10,
        ckpt_dir: Optional[str] = None, ckpt_every: int = 0, config: Optional[Mapping] = None,
        history: Optional[List[Dict[str, Any]]] = None, best: Optional[Mapping[str, Any]] = None,
        log: Optional[Callable[[str], None]] = print,
        arrays: Optional[Mapping[str, np.ndarray]] = None) -> FitResult:
    """Train from ``state.step`` up to ``steps`` optimiser steps.

    Step ``i`` uses ``batches(i)``; with a pure ``batches`` (e.g. :class:`BatchSource`) and a
    state restored from a checkpoint, the run continues exactly as if never interrupted.

    Args:
      state: the starting state (fresh or restored).
      train_step: from :func:`make_train_step`.
      batches: ``i -> batch``.
      steps: total number of steps (the run stops when ``state.step == steps``).
      validate: optional ``params -> {name: float}``; its names are prefixed with ``val_``
        in the history.  Run every ``validate_every`` steps and at the end.
      validate_every: validation period in steps (0: only at the end).
      best_metric: the history key whose maximum defines the "best" checkpoint
        (``"val_psnr"``; a name containing ``loss`` is minimised instead).
      min_loss: stop early once a step's training loss is ``<= min_loss``.
      log_every: print a progress line and record the metrics every this many steps
        (the metrics recorded are the means since the previous record).
      ckpt_dir: directory for :func:`mrijax.checkpoint.save` ("latest" every
        ``ckpt_every`` steps and at the end, "best" at each new best validation); also
        receives ``metrics.json`` with the history.  ``None``: no checkpoints.
      ckpt_every: checkpoint period in steps (0: only at the end).
      config: the run's JSON config, stored with each checkpoint (required with ``ckpt_dir``).
      history: records of an earlier part of the run (on resume); later records are dropped.
      best: best record of an earlier part of the run (on resume).
      log: where progress lines go (``None``: silent).
      arrays: extra arrays stored with every checkpoint (e.g. a fixed mask).

    Returns:
      A :class:`FitResult`.
    """
    _check_nonneg_int(steps, "steps")
    _check_pos_int(log_every, "log_every")
    _check_nonneg_int(validate_every, "validate_every")
    _check_nonneg_int(ckpt_every, "ckpt_every")
    if ckpt_dir is not None and config is None:
        raise ValueError("fit needs config (the run's JSON description) to write checkpoints")
    if min_loss is not None and not _is_number(min_loss):
        raise ValueError(f"min_loss must be None or a number, got {min_loss!r}")
    from mrijax import checkpoint as ckpt

    start = int(state.step)
    history = [dict(r) for r in (history or []) if int(r.get("step", 0)) <= start]
    best = dict(best) if best else None
    minimise = "loss" in best_metric
    stopped_early = False
    window: List[Dict[str, Any]] = []
    t_last, step_last = time.perf_counter(), start

    def is_better(record):
        if best_metric not in record:
            return False
        if best is None:
            return True
        return record[best_metric] < best[best_metric] if minimise else record[best_metric] > best[best_metric]

    def save_latest():
        if ckpt_dir is not None:
            ckpt.save(ckpt_dir, state, config, metrics={"best": best}, arrays=arrays)
            ckpt.write_json_atomic(os.path.join(ckpt_dir, "metrics.json"), {"history": history, "best": best})

    def run_validation(step):
        nonlocal best
        record = {"step": step}
        record.update({f"val_{k}": float(v) for k, v in validate(state.params).items()})
        history.append(record)
        improved = is_better(record)
        if improved:
            best = dict(record)
            if ckpt_dir is not None:
                ckpt.save(ckpt_dir, state, config, best=True, metrics={"best": best}, arrays=arrays)
        if log is not None:
            vals = "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
            log(f"step {step:>6d}  validation  {vals}{'  (best)' if improved else ''}")

    step = start
    while step < steps:
        state, metrics = train_step(state, batches(step))
        step += 1
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"training loss became {metrics['loss']} at step {step}; "
                                     "lower the learning rate or clip gradients (clip_norm)")
        window.append(metrics)
        reached = min_loss is not None and metrics["loss"] <= min_loss
        if step % log_every == 0 or step == steps or reached:
            now = time.perf_counter()
            rate = (step - step_last) / max(now - t_last, 1e-9)
            t_last, step_last = now, step
            record = {"step": step}
            record.update({k: float(np.mean([m[k] for m in window])) for k in window[0]})
            record["steps_per_s"] = rate
            history.append(record)
            window = []
            if log is not None:
                log(f"step {step:>6d}/{steps}  loss {record['loss']:.4e}  psnr {record['psnr']:.2f} dB  "
                    f"{rate:.2f} steps/s")
        if validate is not None and validate_every and step % validate_every == 0 and step < steps and not reached:
            run_validation(step)
        if reached:
            stopped_early = True
            if log is not None:
                log(f"step {step}: loss {metrics['loss']:.4e} <= min_loss {min_loss:g}, stopping early")
            break
        if ckpt_every and step % ckpt_every == 0 and step < steps:
            save_latest()
    if validate is not None and not any(r.get("step") == step and any(k.startswith("val_") for k in r)
                                        for r in history):
        run_validation(step)
    save_latest()
    return FitResult(state=state, history=history, stopped_early=stopped_early, best=best)


# --------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=32)
def _compiled_evaluation(model, mask_key):
    """One jitted function per (model, static AUTOMAP mask) computing reconstructions and metrics
    of a batch, compiled once and reused (Flax modules hash by their fields), so repeated
    validation neither recompiles nor dispatches op by op."""
    from mrijax import metrics

    if mask_key is None:
        predict = cascade_predictor(model)
    else:
        shape, packed = mask_key
        mask = np.unpackbits(np.frombuffer(packed, np.uint8))[:shape[0] * shape[1]].reshape(shape).astype(bool)
        predict = automap_predictor(model, mask)

    def run_batch(params, batch):
        out, _ = predict(params, batch, jax.random.PRNGKey(0))  # the key is unused: noiseless
        ref = jnp.abs(batch["target"])
        zf = jnp.abs(fourier.adjoint(fourier.forward(batch["target"], batch["mask"]), batch["mask"]))
        net = jnp.abs(out)
        return dict(zero_filled=zf, network=net, psnr_zf=metrics.psnr(zf, ref), psnr_net=metrics.psnr(net, ref),
                    ssim_zf=metrics.ssim(zf, ref), ssim_net=metrics.ssim(net, ref))

    return jax.jit(run_batch)


def evaluate(model, params, images, mask, *, batch_size: int = 8,
             return_images: bool = False) -> Dict[str, Any]:
    """Zero-filled vs network reconstruction quality on ``images``.

    Every image is scaled to max magnitude 1, sampled with its mask (``k0 = mask * F x``,
    noiseless) and reconstructed; PSNR and SSIM (:mod:`mrijax.metrics`, on magnitudes,
    peak / data range from the reference) are computed per image for the zero-filled
    image ``|A* k0|`` and for the network's output.

    Args:
      model: a Flax model called as ``(x_zf, k0, mask)`` (Cascade) or an AUTOMAP.
      params: its variables.
      images: ``(N, H, W)`` real or complex (or one ``(H, W)`` image).
      mask: one ``(H, W)`` mask, ``(N, H, W)`` masks, or a callable ``i -> (H, W)`` mask.
        AUTOMAP needs one static ``(H, W)`` mask.
      batch_size: images per forward pass.
      return_images: also return the magnitude images ``"target"``, ``"zero_filled"`` and
        ``"network"`` (``(N, H, W)`` NumPy arrays).

    Returns:
      ``{"psnr_zf", "psnr_net", "ssim_zf", "ssim_net"}``: means (floats), and the same names
      with ``_all`` appended: per-image NumPy arrays; ``"count"``.

    Example (the numbers of ``checkpoints/README.md``)::

      model, params, _ = mrijax.checkpoint.load_model("checkpoints/cascade_gaussian33")
      images = mrijax.data.images.load_images("mni:axial", 128, count=32)
      mask_fn = lambda i: mrijax.masks.make("gaussian_lines", (128, 128), acceleration=3,
                                            sample_n=8, seed=i)
      print(evaluate(model, params, images, mask_fn))
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, H, W) with N > 0, got {images.shape}")
    _check_pos_int(batch_size, "batch_size")
    n, h, w = images.shape
    if callable(mask):
        masks = np.stack([np.asarray(mask(i)) for i in range(n)])
    else:
        masks = np.asarray(mask)
        if masks.ndim == 2:
            masks = np.broadcast_to(masks, (n, h, w))
    if masks.shape != (n, h, w):
        raise ValueError(f"mask must be (H, W), (N, H, W) or a callable; got masks of shape {masks.shape} "
                         f"for images {images.shape}")
    masks = masks.astype(bool)
    targets = _normalise_max(images).astype(np.complex64)

    if _is_automap(model):
        if not np.all(masks == masks[0]):
            raise ValueError("AUTOMAP is evaluated with one fixed (H, W) mask")
        run_batch = _compiled_evaluation(model, ((h, w), np.packbits(masks[0]).tobytes()))
    else:
        run_batch = _compiled_evaluation(model, None)
    # Pad to whole batches (repeating the last image) so that one compiled shape serves all.
    size = min(batch_size, n)
    pad = (-n) % size
    targets_p = np.concatenate([targets, np.repeat(targets[-1:], pad, axis=0)])
    masks_p = np.concatenate([masks, np.repeat(masks[-1:], pad, axis=0)])
    parts = []
    for lo in range(0, n + pad, size):
        batch = {"target": targets_p[lo:lo + size], "mask": masks_p[lo:lo + size]}
        parts.append(jax.device_get(run_batch(params, batch)))
    out = {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
    result: Dict[str, Any] = {"count": n}
    for name in ("psnr_zf", "psnr_net", "ssim_zf", "ssim_net"):
        result[name] = float(np.mean(out[name]))
        result[name + "_all"] = out[name]
    if return_images:
        result.update(target=np.abs(targets), zero_filled=out["zero_filled"], network=out["network"])
    return result


# --------------------------------------------------------------------------- whole runs

DEFAULT_TRAIN = dict(optimizer="adam", lr=None, weight_decay=0.0, clip_norm=1.0, lr_decay=True,
                     loss="mse", activation_penalty=0.0, noise_std=0.0, steps=1000, min_loss=None,
                     log_every=10, ckpt_every=200, validate_every=200, init_seed=0)
DEFAULT_VALIDATION = dict(images="ellipses", size=None, count=8, seed=1_000_003, plot_count=4)


def save_reconstructions_png(path, targets, zero_filled, network, psnr_zf, psnr_net, title: str = "") -> None:
    """A grid PNG, one row per image: target | zero-filled | network, PSNRs in the titles.

    Magnitudes, grey scale ``[0, max|target|]``; written to a temporary file and renamed.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(targets)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for r in range(n):
        vmax = float(np.max(np.abs(targets[r]))) or 1.0
        for c, (image, label) in enumerate(((targets[r], "target"),
                                            (zero_filled[r], f"zero-filled {psnr_zf[r]:.2f} dB"),
                                            (network[r], f"network {psnr_net[r]:.2f} dB"))):
            axes[r, c].imshow(np.abs(image), cmap="gray", vmin=0, vmax=vmax)
            axes[r, c].set_title(label, fontsize=9)
            axes[r, c].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def _merged(defaults, given, section):
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {section} setting(s) {sorted(unknown)}; known: {sorted(defaults)}")
    out = dict(defaults)
    out.update(given)
    return out


def run(config: Mapping[str, Any], ckpt_dir: str, *, resume: bool = False,
        log: Optional[Callable[[str], None]] = print) -> FitResult:
    """Train a model described by a JSON ``config``; write checkpoints, metrics and a PNG.

    This is what ``experiments/train_cascade.py`` / ``train_automap.py`` call after
    turning their flags into a config.  The config::

        {"model": {"class": "Cascade" | "Automap" | registered, "kwargs": {...}},
         "data": {images, size, batch_size, seed, augment, max_phase, pool_count},
         "mask": {kind, kwargs, mode, seed},
         "train": {optimizer, lr, weight_decay, clip_norm, lr_decay, loss,
                   activation_penalty, noise_std, steps, min_loss, log_every,
                   ckpt_every, validate_every, init_seed},
         "validation": {images, size, count, seed, plot_count}}

    (``train`` and ``validation`` entries default to :data:`DEFAULT_TRAIN` /
    :data:`DEFAULT_VALIDATION`.)  AUTOMAP needs ``mask.mode == "fixed"``; its ``n``/``m``
    kwargs are filled in from the image size and the mask when absent.

    Writes into ``ckpt_dir``: ``latest/`` and ``best/`` (orbax, with the completed config
    and, for a fixed mask, ``arrays.npz`` holding it), ``metrics.json`` (history, best
    record, final evaluation) and ``reconstructions.png``.

    Args:
      config: as above.
      ckpt_dir: output directory.
      resume: continue from ``ckpt_dir/latest`` (the config must match the stored one,
        except e.g. ``train.steps``).  Without it an existing checkpoint is an error, so a
        run is never overwritten by accident.
      log: progress output (``None``: silent).

    Returns:
      The :class:`FitResult`.
    """
    from mrijax import checkpoint as ckpt

    config = json.loads(json.dumps(ckpt._jsonable(config)))  # a JSON-clean deep copy
    for key in ("model", "data", "mask"):
        if key not in config:
            raise ValueError(f"config needs a {key!r} entry")
    tcfg = _merged(DEFAULT_TRAIN, config.get("train"), "train")
    vcfg = _merged(DEFAULT_VALIDATION, config.get("validation"), "validation")
    data, mcfg = dict(config["data"]), dict(config["mask"])
    if vcfg["size"] is None:
        vcfg["size"] = data["size"]
    automap = config["model"].get("class") == "Automap"
    if automap and mcfg.get("mode", "fixed") != "fixed":
        raise ValueError("AUTOMAP's input length is fixed by its mask: use mask mode 'fixed'")
    if automap and vcfg["size"] != data["size"]:
        raise ValueError("AUTOMAP is not convolutional in k-space: validation size must equal the image size")

    source = BatchSource(images=data["images"], size=data["size"], batch_size=data["batch_size"],
                         seed=data.get("seed", 0), augment=data.get("augment", True),
                         max_phase=data.get("max_phase", 0.0), pool_count=data.get("pool_count"),
                         mask_kind=mcfg["kind"], mask_kwargs=mcfg.get("kwargs", {}),
                         mask_mode=mcfg.get("mode", "per_batch"), mask_seed=mcfg.get("seed"))
    stored = source.config()
    config["data"], config["mask"] = stored["data"], stored["mask"]
    fixed_mask = source.fixed_mask
    if automap:
        kwargs = config["model"].setdefault("kwargs", {})
        kwargs.setdefault("n", data["size"])
        kwargs.setdefault("m", int(fixed_mask.sum()))
    config["train"], config["validation"] = tcfg, vcfg
    model = ckpt.build_model(config)

    # Refuse to overwrite a run, or to resume a different one, before any long computation.
    latest = os.path.join(ckpt_dir, ckpt.LATEST)
    resuming = resume and os.path.isdir(latest)
    if resuming:
        diffs = ckpt.config_differences(ckpt.read_config(ckpt_dir, ckpt.LATEST), config)
        if diffs:
            lines = "\n".join(f"  {k}: stored {a!r}, requested {b!r}" for k, (a, b) in diffs.items())
            raise ckpt.ConfigMismatchError(f"cannot resume from {latest}: its config differs from this "
                                           f"run's:\n{lines}\nUse another directory, or the stored settings.")
    elif os.path.isdir(latest) or os.path.isdir(os.path.join(ckpt_dir, ckpt.BEST)):
        raise FileExistsError(f"{ckpt_dir} already holds a checkpoint; pass resume=True (--resume) to "
                              "continue it, or choose another directory")

    optimizer = make_optimizer(tcfg["optimizer"], tcfg["lr"], tcfg["weight_decay"], clip_norm=tcfg["clip_norm"],
                               decay_steps=tcfg["steps"] if tcfg["lr_decay"] else None)
    predict = predictor_for(model, fixed_mask, tcfg["noise_std"])
    first = source(0)
    init_key = jax.random.PRNGKey(tcfg["init_seed"])
    # jit: one compilation instead of op-by-op dispatch (identical values, much faster)
    if automap:
        y = fourier.gather(fourier.fft2c(first["target"][:1]), fixed_mask)
        params = jax.jit(model.init)(init_key, y)
    else:
        params = jax.jit(model.init)(init_key, first["target"][:1], first["target"][:1], first["mask"][:1])
    state = create_train_state(params, optimizer, seed=data.get("seed", 0))
    step_fn = make_train_step(predict, optimizer, tcfg["loss"], tcfg["activation_penalty"])

    history, best = [], None
    if resuming:
        state, _, meta = ckpt.restore(ckpt_dir, state, config=config)
        best = (meta.get("metrics") or {}).get("best")
        metrics_path = os.path.join(ckpt_dir, "metrics.json")
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                history = json.load(f).get("history", [])
        if log is not None:
            log(f"resumed {ckpt_dir} at step {int(state.step)}")

    val_images = validation_images(vcfg["images"], vcfg["size"], vcfg["count"], vcfg["seed"])
    if fixed_mask is not None and vcfg["size"] == data["size"]:
        val_masks = np.broadcast_to(fixed_mask, val_images.shape)
    else:  # one mask per validation image, seeded apart from the training masks
        shape = (vcfg["size"], vcfg["size"])
        val_masks = np.stack([make_mask(source.mask_kind, shape, _seed_int(vcfg["seed"], j, _STREAM_MASK),
                                        source.mask_kwargs) for j in range(len(val_images))])

    def validate(params):
        r = evaluate(model, params, val_images, val_masks)
        return {k: r[k] for k in ("psnr_net", "psnr_zf", "ssim_net", "ssim_zf")}

    arrays = {"mask": fixed_mask} if fixed_mask is not None else None
    result = fit(state, step_fn, source, tcfg["steps"], validate=validate,
                 validate_every=tcfg["validate_every"], best_metric="val_psnr_net", min_loss=tcfg["min_loss"],
                 log_every=tcfg["log_every"], ckpt_dir=ckpt_dir, ckpt_every=tcfg["ckpt_every"], config=config,
                 history=history, best=best, log=log, arrays=arrays)

    final = evaluate(model, result.state.params, val_images, val_masks, return_images=True)
    pictures = {k: final.pop(k) for k in ("target", "zero_filled", "network")}
    ckpt.write_json_atomic(os.path.join(ckpt_dir, "metrics.json"), {
        "history": result.history, "best": result.best, "stopped_early": result.stopped_early,
        "final_validation": final, "config": config})
    k = min(vcfg["plot_count"], len(val_images))
    if k > 0:
        save_reconstructions_png(os.path.join(ckpt_dir, "reconstructions.png"), pictures["target"][:k],
                                 pictures["zero_filled"][:k], pictures["network"][:k], final["psnr_zf_all"][:k],
                                 final["psnr_net_all"][:k],
                                 title=f"{config['model']['class']} step {int(result.state.step)}, "
                                       f"validation: {vcfg['images']}")
    if log is not None:
        log(f"final validation on {len(val_images)} images ({vcfg['images']}, {vcfg['size']}x{vcfg['size']}): "
            f"PSNR zero-filled {final['psnr_zf']:.2f} dB, network {final['psnr_net']:.2f} dB; "
            f"SSIM {final['ssim_zf']:.4f} -> {final['ssim_net']:.4f}")
    return result


# --------------------------------------------------------------------------- helpers


def _accepts(fn, name: str) -> bool:
    """Whether callable ``fn`` takes a keyword argument ``name``."""
    import inspect
    if fn is None:
        return True  # let masks.make raise its own error for an unknown kind
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_pos_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_nonneg_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
