"""A whole training run from a JSON config: what ``experiments/train.py`` calls.

:func:`run` builds the model (:func:`mrijax.models.build`), the seeded batches
(:class:`mrijax.data.pipeline.BatchSource`), the optimiser and train step
(:mod:`mrijax.train`), trains with :func:`mrijax.train.fit` and writes into one directory the
checkpoints, ``metrics.json`` and a PNG of reconstructions
(:func:`save_reconstructions_png`), refusing to overwrite a run or resume a different one.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Mapping, Optional

import numpy as np
import jax

from mrijax import checkpoint as ckpt
from mrijax import models, operators
from mrijax.data.pipeline import _STREAM_MASK, BatchSource, _seed_int, make_mask, validation_images
from mrijax.train import (FitResult, create_train_state, evaluate, fit, make_optimizer, make_train_step,
                          predictor)

__all__ = ["DEFAULT_TRAIN", "DEFAULT_VALIDATION", "save_reconstructions_png", "run"]

DEFAULT_TRAIN = dict(optimizer="adam", lr=None, weight_decay=0.0, clip_norm=1.0, lr_decay=True,
                     loss="mse", activation_penalty=0.0, noise_std=0.0, steps=1000, min_loss=None,
                     log_every=10, ckpt_every=200, validate_every=200, init_seed=0)
DEFAULT_VALIDATION = dict(images="ellipses", size=None, count=8, seed=1_000_003, plot_count=4)


def save_reconstructions_png(path, targets, zero_filled, network, psnr_zf, psnr_net, title: str = "") -> None:
    """A grid PNG, one row per image: target | zero-filled | network, PSNRs in the titles.

    Magnitudes, grey scale ``[0, max|target|]``; written atomically (:func:`mrijax.checkpoint.write_atomically`).
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
    try:
        ckpt.write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=80))
    finally:
        plt.close(fig)


# The temporary PNG of an earlier version of save_reconstructions_png.
_OLD_PNG_TMP = re.compile(r"^reconstructions\.png\.tmp-\d+\.png$")


def _remove_stale_temporaries(ckpt_dir) -> None:
    """Remove what killed processes left in ``ckpt_dir`` (only our own temporaries, see
    :func:`mrijax.checkpoint.remove_stale_temporaries`)."""
    ckpt.remove_stale_temporaries(ckpt_dir, extra=(_OLD_PNG_TMP,))


def _metrics_json_history(ckpt_dir) -> list:
    """The history of ``metrics.json`` (``[]`` if absent or unreadable)."""
    try:
        with open(os.path.join(ckpt_dir, "metrics.json")) as f:
            return list(json.load(f).get("history", []))
    except (OSError, ValueError, AttributeError):
        return []


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

    This is what ``experiments/train.py`` calls after
    turning their flags into a config.  The config::

        {"model": {"class": a registered model name, "kwargs": {...}},
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
      resume: continue from ``ckpt_dir/latest`` (or what :func:`mrijax.checkpoint.resumable_path`
        falls back to: ``latest.old`` after a crash inside a save, a ``best`` with optimiser
        state), with the history stored in that checkpoint, so the run's records are those of
        an uninterrupted one; the config must match the stored one, except e.g.
        ``train.steps``.  Stale temporaries of killed processes are removed first.  Without it
        an existing checkpoint is an error, so a run is never overwritten by accident.
      log: progress output (``None``: silent).

    Returns:
      The :class:`mrijax.train.FitResult`.
    """
    config = json.loads(json.dumps(ckpt.to_jsonable(config, strict=False)))  # a JSON-clean deep copy
    for key in ("model", "data", "mask"):
        if key not in config:
            raise ValueError(f"config needs a {key!r} entry")
    tcfg = _merged(DEFAULT_TRAIN, config.get("train"), "train")
    vcfg = _merged(DEFAULT_VALIDATION, config.get("validation"), "validation")
    data, mcfg = dict(config["data"]), dict(config["mask"])
    if vcfg["size"] is None:
        vcfg["size"] = data["size"]
    spec = models.get(config["model"].get("class"))
    if spec.static_operator and mcfg.get("mode", "fixed") != "fixed":
        raise ValueError(f"model {spec.name!r} is tied to one mask (its input is fixed by it): use mask mode 'fixed'")
    if spec.static_operator and vcfg["size"] != data["size"]:
        raise ValueError(f"model {spec.name!r} is tied to one mask: validation size must equal the image size")

    source = BatchSource(images=data["images"], size=data["size"], batch_size=data["batch_size"],
                         seed=data.get("seed", 0), augment=data.get("augment", True),
                         max_phase=data.get("max_phase", 0.0), pool_count=data.get("pool_count"),
                         mask_kind=mcfg["kind"], mask_kwargs=mcfg.get("kwargs", {}),
                         mask_mode=mcfg.get("mode", "per_batch"), mask_seed=mcfg.get("seed"))
    stored = source.config()
    config["data"], config["mask"] = stored["data"], stored["mask"]
    fixed_mask = source.fixed_mask
    fixed_op = operators.cartesian(fixed_mask) if fixed_mask is not None else None
    if spec.complete_kwargs is not None:
        config["model"]["kwargs"] = spec.complete_kwargs(config["model"].get("kwargs", {}), data["size"], fixed_op)
    config["train"], config["validation"] = tcfg, vcfg
    model = models.build(config)

    # Refuse to overwrite a run, or to resume a different one, before any long computation.  The
    # checkpoint resumed from is the one checkpoint.restore picks (resumable_path: latest, else
    # latest.old after a crash inside checkpoint.save, else a best holding an optimiser state).
    resume_path = ckpt.resumable_path(ckpt_dir) if resume else None
    if resume_path is not None:
        diffs = ckpt.config_differences(ckpt.read_config(resume_path), config)
        if diffs:
            lines = "\n".join(f"  {k}: stored {a!r}, requested {b!r}" for k, (a, b) in diffs.items())
            raise ckpt.ConfigMismatchError(f"cannot resume from {resume_path}: its config differs from this "
                                           f"run's:\n{lines}\nUse another directory, or the stored settings.")
    elif resume and ckpt.holds_checkpoint(ckpt_dir):
        raise FileExistsError(f"{ckpt_dir} holds no checkpoint to resume from (only a parameters-only or "
                              "unreadable 'best'); choose another directory")
    elif not resume and ckpt.holds_checkpoint(ckpt_dir):
        raise FileExistsError(f"{ckpt_dir} already holds a checkpoint; pass resume=True (--resume) to "
                              "continue it, or choose another directory")
    resuming = resume_path is not None
    if resume and os.path.isdir(ckpt_dir):
        _remove_stale_temporaries(ckpt_dir)

    optimizer = make_optimizer(tcfg["optimizer"], tcfg["lr"], tcfg["weight_decay"], clip_norm=tcfg["clip_norm"],
                               decay_steps=tcfg["steps"] if tcfg["lr_decay"] else None)
    predict = predictor(model, tcfg["noise_std"], fixed_mask if spec.static_operator else None)
    first = source(0)
    init_key = jax.random.PRNGKey(tcfg["init_seed"])
    # The initial values depend on the key and the shapes only.  jit: one compilation instead of
    # op-by-op dispatch (identical values, much faster).
    op0 = fixed_op if spec.static_operator else operators.cartesian(first["mask"][:1])
    params = jax.jit(lambda key, y: spec.init(model, key, op0, y))(init_key, op0.forward(first["target"][:1]))
    state = create_train_state(params, optimizer, seed=data.get("seed", 0))
    step_fn = make_train_step(predict, optimizer, tcfg["loss"], tcfg["activation_penalty"])

    history, meta = None, None
    if resuming:
        state, _, meta = ckpt.restore(ckpt_dir, state, config=config)
        if "history" not in (meta.get("metrics") or {}):
            history = _metrics_json_history(ckpt_dir)  # a checkpoint written before meta held the history
        if log is not None:
            where = os.path.basename(resume_path)
            log(f"resumed {ckpt_dir} at step {int(state.step)}"
                + ("" if where == ckpt.LATEST else f" (from {where})"))

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
                 history=history, log=log, arrays=arrays, resume_from=meta)

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
