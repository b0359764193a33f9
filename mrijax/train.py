"""Training learned reconstruction maps with optax: train state, losses, train step, ``fit``, ``evaluate``.

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
* :func:`predictor` -- how a model turns a batch ``{"target", "mask"}`` into a
  reconstruction, through the model registry (per-image masks allowed, except for a model
  tied to one mask such as AUTOMAP).
* :func:`make_train_step` -- a pure, jit-compiled ``train_step(state, batch) -> (state,
  metrics)``.
* :func:`fit` -- the loop: progress line (step, loss, PSNR, steps/s), early stop at a
  target loss (``min_loss``, the stopping rule of the DL4IA tutorial's training), periodic
  validation and "latest"/"best" checkpoints, metrics history.
* :func:`evaluate` -- zero-filled vs network PSNR/SSIM of a trained model on given images.

The seeded batches (:class:`mrijax.data.pipeline.BatchSource`) live in
:mod:`mrijax.data.pipeline`; a whole run from a JSON config (checkpoints, ``metrics.json``,
a PNG) is ``experiments/training.py``'s ``run``, which the training scripts call.

Conventions (those of the rest of the library): images ``(..., H, W)``, centred boolean
masks, orthonormal centred FFT, images scaled to magnitude ``[0, 1]`` (the published
D5-C5 weights need that scaling and our own models are trained with it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import jax
import jax.numpy as jnp
import optax
from flax import struct

from mrijax import checkpoint as ckpt
from mrijax import fourier, models, operators
from mrijax import metrics as image_metrics
from mrijax._checks import check_int, is_number
from mrijax.data.pipeline import Batch, _normalise_max

__all__ = ["TrainState", "create_train_state", "OPTIMIZERS", "AUTOMAP_RMSPROP", "make_optimizer", "l1_loss",
           "mse_loss", "magnitude_l2_loss", "activation_l1", "LOSSES", "predictor", "make_train_step", "FitResult", "fit", "evaluate"]

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
    check_int(seed, "seed", 0)
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
        if not is_number(value) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number > 0, got {value!r}")
    for value, label in ((weight_decay, "weight_decay"), (momentum, "momentum"), (initial_scale, "initial_scale")):
        if not is_number(value) or not value >= 0 or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    for value, label in ((b1, "b1"), (b2, "b2"), (decay, "decay"), (final_lr_fraction, "final_lr_fraction")):
        if not is_number(value) or not 0 <= value <= 1:
            raise ValueError(f"{label} must be in [0, 1], got {value!r}")
    if clip_norm is not None and (not is_number(clip_norm) or not clip_norm > 0):
        raise ValueError(f"clip_norm must be None or a number > 0, got {clip_norm!r}")
    if decay_steps is not None:
        check_int(decay_steps, "decay_steps", 1)
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


# --------------------------------------------------------------------------- losses


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


# --------------------------------------------------------------------------- predictors


def predictor(model, noise_std: float = 0.0, fixed_mask=None) -> Callable:
    """``predict(params, batch, rng) -> (reconstruction, activations)`` for any registered model.

    From ``batch["target"]`` (complex or real ``(B, H, W)``) and ``batch["mask"]`` (``(H, W)``
    or one mask per image ``(B, H, W)``) it simulates the measurements ``y = A x`` of the
    Cartesian operator (plus, if ``noise_std > 0``, complex Gaussian noise of that standard
    deviation per real and imaginary part on the sampled entries, drawn from ``rng``) and
    applies the model through its :class:`mrijax.models.ModelSpec`.  ``activations`` are
    those the spec's ``apply_with_activations`` returns (AUTOMAP's, for
    :func:`activation_l1`), else ``None``.

    A model tied to one operator (``spec.static_operator``, e.g. AUTOMAP's fixed measurement
    vector) needs ``fixed_mask``, a concrete ``(H, W)`` mask; ``batch["mask"]`` is then ignored.
    """
    if not is_number(noise_std) or not noise_std >= 0:
        raise ValueError(f"noise_std must be a number >= 0, got {noise_std!r}")
    spec = models.spec_for(model)
    fixed_op = None
    if spec.static_operator:
        if fixed_mask is None:
            raise ValueError(f"model {spec.name!r} is tied to one mask: pass its fixed (H, W) mask")
        fixed_op = operators.cartesian(np.asarray(fixed_mask))
        spec.check_model_operator(model, fixed_op)
    if spec.apply_with_activations is not None:
        apply = spec.apply_with_activations
    else:
        apply = lambda m, v, op, y: (spec.apply(m, v, op, y), None)

    def predict(params, batch, rng):
        op = fixed_op if fixed_op is not None else operators.cartesian(batch["mask"])
        y = op.forward(batch["target"])
        if noise_std > 0:
            re_key, im_key = jax.random.split(rng)
            noise = jax.random.normal(re_key, y.shape) + 1j * jax.random.normal(im_key, y.shape)
            y = op.restrict(y + noise_std * noise.astype(y.dtype))
        return apply(model, params, op, y)

    return predict


# --------------------------------------------------------------------------- train step


def make_train_step(predict: Callable, optimizer: optax.GradientTransformation, loss: str = "mse",
                    activation_penalty: float = 0.0, jit: bool = True) -> Callable:
    """Build ``train_step(state, batch) -> (new_state, metrics)``.

    One optimiser step on ``loss(prediction, target) + activation_penalty *
    activation_l1(activations)``.  The step is pure: the new state depends only on
    ``(state, batch)`` (the PRNG key for measurement noise is split from ``state.rng``).

    Args:
      predict: ``predict(params, batch, rng) -> (prediction, activations)``, e.g. from
        :func:`predictor`.
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
    if not is_number(activation_penalty) or not activation_penalty >= 0:
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
        # PSNR of magnitudes: metrics.psnr keeps the sign of a real image, so a real prediction
        # (AUTOMAP's) is compared by its modulus explicitly.
        psnr = jnp.mean(image_metrics.psnr(jnp.abs(prediction), jnp.abs(target)))
        return total, (data_loss, penalty, psnr)

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
        arrays: Optional[Mapping[str, np.ndarray]] = None,
        resume_from: Optional[Mapping[str, Any]] = None) -> FitResult:
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
        receives ``metrics.json`` with the history (written after the checkpoint, which holds
        the history too: see ``resume_from``).  ``None``: no checkpoints.  At the end of a
        resumed run that had nothing left to do, the existing "latest" is not rewritten.
      ckpt_every: checkpoint period in steps (0: only at the end).
      config: the run's JSON config, stored with each checkpoint (required with ``ckpt_dir``).
      history: records of an earlier part of the run (on resume); later records are dropped.
        Default: those of ``resume_from``.
      best: best record of an earlier part of the run (on resume).  Default: that of ``resume_from``.
      log: where progress lines go (``None``: silent).
      arrays: extra arrays stored with every checkpoint (e.g. a fixed mask).
      resume_from: the ``meta`` of the checkpoint ``state`` was restored from
        (:func:`mrijax.checkpoint.restore`'s third result).  Its ``metrics`` hold the
        history and best record at that step, the metrics of the steps since the last record
        and the last step's loss, so the resumed run's records (and an early stop at
        ``min_loss``) are exactly those of an uninterrupted run (except ``steps_per_s``).

    Returns:
      A :class:`FitResult`.
    """
    check_int(steps, "steps", 0)
    check_int(log_every, "log_every", 1)
    check_int(validate_every, "validate_every", 0)
    check_int(ckpt_every, "ckpt_every", 0)
    if ckpt_dir is not None and config is None:
        raise ValueError("fit needs config (the run's JSON description) to write checkpoints")
    if min_loss is not None and not is_number(min_loss):
        raise ValueError(f"min_loss must be None or a number, got {min_loss!r}")
    start = int(state.step)
    saved: Mapping[str, Any] = {}
    if resume_from is not None:
        if int(resume_from.get("step", -1)) != start:
            raise ValueError(f"resume_from is the meta of a checkpoint at step {resume_from.get('step')}, "
                             f"but the state is at step {start}")
        saved = resume_from.get("metrics") or {}
    if history is None:
        history = saved.get("history")
    if best is None:
        best = saved.get("best")
    history = [dict(r) for r in (history or []) if int(r.get("step", 0)) <= start]
    best = dict(best) if best else None
    minimise = "loss" in best_metric
    # The per-step metrics since the last record (a checkpoint between two records keeps them).
    window: List[Dict[str, Any]] = [dict(m) for m in saved.get("window") or []]
    last_loss = saved.get("last_loss")
    # A run that stopped early at this state (its last loss reached min_loss) is finished.
    stopped_early = (start > 0 and min_loss is not None and last_loss is not None and last_loss <= min_loss)
    changed = False  # whether this call adds anything to the run (a step or a record)
    t_last, step_last = time.perf_counter(), start

    def is_better(record):
        if best_metric not in record:
            return False
        if best is None:
            return True
        return record[best_metric] < best[best_metric] if minimise else record[best_metric] > best[best_metric]

    def resume_record():
        # What a resumed run needs to continue the records exactly (stored in the checkpoint's meta).
        return {"best": best, "history": history, "window": window, "last_loss": last_loss}

    def write_metrics():
        ckpt.write_json_atomic(os.path.join(ckpt_dir, "metrics.json"), {"history": history, "best": best})

    def save_latest():
        if ckpt_dir is not None:
            ckpt.save(ckpt_dir, state, config, metrics=resume_record(), arrays=arrays)
            write_metrics()

    def run_validation(step):
        nonlocal best, changed
        changed = True
        record = {"step": step}
        record.update({f"val_{k}": float(v) for k, v in validate(state.params).items()})
        history.append(record)
        improved = is_better(record)
        if improved:
            best = dict(record)
            if ckpt_dir is not None:
                ckpt.save(ckpt_dir, state, config, best=True, metrics=resume_record(), arrays=arrays)
        if log is not None:
            vals = "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
            log(f"step {step:>6d}  validation  {vals}{'  (best)' if improved else ''}")

    step = start
    if stopped_early and log is not None:
        log(f"step {step}: the run already stopped early (loss {last_loss:.4e} <= min_loss {min_loss:g})")
    while step < steps and not stopped_early:
        state, metrics = train_step(state, batches(step))
        step += 1
        changed = True
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"training loss became {metrics['loss']} at step {step}; "
                                     "lower the learning rate or clip gradients (clip_norm)")
        window.append(metrics)
        last_loss = metrics["loss"]
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
    if ckpt_dir is not None:
        if changed or not _holds_latest_at(ckpt_dir, step):
            save_latest()
        elif _metrics_json_history(ckpt_dir) != history:  # (a kill before metrics.json was written)
            write_metrics()
        # else: a finished run resumed; its files stay as they are
    return FitResult(state=state, history=history, stopped_early=stopped_early, best=best)


def _holds_latest_at(ckpt_dir, step: int) -> bool:
    """Whether ``ckpt_dir/latest`` is a readable checkpoint of ``step``."""
    path = os.path.join(ckpt_dir, ckpt.LATEST)
    try:
        return os.path.isdir(path) and int(ckpt.read_meta(path).get("step", -1)) == step
    except (FileNotFoundError, ckpt.CheckpointError, TypeError, ValueError):
        return False


def _metrics_json_history(ckpt_dir):
    """The history in ``ckpt_dir/metrics.json`` (``None`` if missing or unreadable)."""
    try:
        with open(os.path.join(ckpt_dir, "metrics.json")) as f:
            return json.load(f).get("history")
    except (OSError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=32)
def _compiled_evaluation(model, mask_key):
    """One jitted function per (model, static mask of a model tied to one) computing
    reconstructions and metrics of a batch, compiled once and reused (Flax modules hash by
    their fields), so repeated validation neither recompiles nor dispatches op by op."""
    fixed_mask = None
    if mask_key is not None:
        shape, packed = mask_key
        fixed_mask = np.unpackbits(np.frombuffer(packed, np.uint8))[:shape[0] * shape[1]].reshape(shape).astype(bool)
    predict = predictor(model, fixed_mask=fixed_mask)

    def run_batch(params, batch):
        out, _ = predict(params, batch, jax.random.PRNGKey(0))  # the key is unused: noiseless
        ref = jnp.abs(batch["target"])
        zf = jnp.abs(fourier.adjoint(fourier.forward(batch["target"], batch["mask"]), batch["mask"]))
        net = jnp.abs(out)
        return dict(zero_filled=zf, network=net, psnr_zf=image_metrics.psnr(zf, ref),
                    psnr_net=image_metrics.psnr(net, ref), ssim_zf=image_metrics.ssim(zf, ref),
                    ssim_net=image_metrics.ssim(net, ref))

    return jax.jit(run_batch)


def evaluate(model, params, images, mask, *, batch_size: int = 8,
             return_images: bool = False) -> Dict[str, Any]:
    """Zero-filled vs network reconstruction quality on ``images``.

    Every image is scaled to max magnitude 1, sampled with its mask (``k0 = mask * F x``,
    noiseless) and reconstructed; PSNR and SSIM (:mod:`mrijax.metrics`, on magnitudes,
    peak / data range from the reference) are computed per image for the zero-filled
    image ``|A* k0|`` and for the network's output.

    Args:
      model: a registered model (:mod:`mrijax.models`).
      params: its variables.
      images: ``(N, H, W)`` real or complex (or one ``(H, W)`` image).
      mask: one ``(H, W)`` mask, ``(N, H, W)`` masks, or a callable ``i -> (H, W)`` mask.
        A model tied to one mask (AUTOMAP) needs one static ``(H, W)`` mask.
      batch_size: images per forward pass.
      return_images: also return the magnitude images ``"target"``, ``"zero_filled"`` and
        ``"network"`` (``(N, H, W)`` NumPy arrays).

    Returns:
      ``{"psnr_zf", "psnr_net", "ssim_zf", "ssim_net"}``: means (floats), and the same names
      with ``_all`` appended: per-image NumPy arrays; ``"count"``.

    Example (the numbers of ``checkpoints/README.md``)::

      model, params, _ = mrijax.models.load("checkpoints/cascade_gaussian33")
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
    check_int(batch_size, "batch_size", 1)
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

    if models.spec_for(model).static_operator:
        if not np.all(masks == masks[0]):
            raise ValueError(f"model {models.spec_for(model).name!r} is tied to one mask: evaluate it with "
                             "one fixed (H, W) mask")
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
