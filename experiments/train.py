"""Train any registered reconstruction model: ``python -m experiments.train --model=cascade --out_dir=DIR``.

Writes into ``--out_dir``: orbax checkpoints ``latest/`` and ``best/`` (each with the run's
config, so ``mrijax.models.load(out_dir)`` rebuilds the model), ``metrics.json`` (training
and validation history, final validation) and ``reconstructions.png`` (target / zero-filled /
network with PSNR on validation images).  Every file is written atomically.  The model's own
flags (``--n_cascades``, ``--hidden``, ...) come from its entry in the model registry
(:class:`mrijax.models.ModelSpec`), and so do its training defaults (loss, mask mode).

Example (the shipped checkpoint's exact command is in ``checkpoints/README.md``)::

    python -m experiments.train --model=cascade --out_dir=/tmp/cascade --images=ellipses \
        --size=64 --steps=2000 --mask=gaussian_lines --acceleration=3 --sample_n=4

An interrupted run continues exactly where it stopped with the same flags plus ``--resume``.
``--steps`` (and the logging/checkpoint periods, ``--min_loss``) may be changed on resume --
with ``--lr_decay`` a new ``--steps`` stretches the cosine schedule from the restored step on --
other changed flags are refused, naming the stored and the requested value.

Images (``--images``): comma-separated sources with optional ``:weight``, e.g.
``ellipses:0.5,mni:coronal:0.25,mni:sagittal:0.25`` (see ``mrijax.data.images.load_images``);
``fastmri:FOLDER`` trains on the slices of a folder of fastMRI volumes, read lazily.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from experiments import common, training
from mrijax import models, train
from mrijax.data import pipeline

_GLOBAL_DEFAULTS = {"loss": "mse", "mask_mode": "per_batch", "activation_penalty": 0.0}


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    trained = models.names(trained=True)
    flags.DEFINE_enum("model", None, list(trained), "The model to train (a registered model).", **d)
    flags.DEFINE_string("out_dir", None, "Output folder (checkpoints, metrics.json, PNG).", **d)
    flags.DEFINE_bool("resume", False, "Continue the run in --out_dir (same flags; --steps may grow).", **d)
    _define_training_flags(fv)
    # Every registered model's own flags; each defaults to None, read as that model's default.
    owners = {}
    for name in trained:
        for h in models.get(name).hyperparameters:
            if h.name in owners:
                owners[h.name].append(name)
                continue
            owners[h.name] = [name]
            help_ = f"[{name}] {h.help} (default {h.default!r})"
            kind = h.value_type
            if h.choices:
                flags.DEFINE_enum(h.name, None, list(h.choices), help_, **d)
            elif kind is bool:
                flags.DEFINE_bool(h.name, None, help_, **d)
            elif kind is int:
                flags.DEFINE_integer(h.name, None, help_, **d)
            elif kind is float:
                flags.DEFINE_float(h.name, None, help_, **d)
            else:
                flags.DEFINE_string(h.name, None, help_, **d)
    return fv


def model_entry(fv, spec) -> dict:
    """``{"class": name, "kwargs": ...}`` from the model's flags; flags of other models are refused."""
    own = {h.name for h in spec.hyperparameters}
    others = sorted({h.name for n in models.names(trained=True) for h in models.get(n).hyperparameters} - own)
    given = [n for n in others if fv[n].value is not None]
    if given:
        raise ValueError(f"--{given[0]} is not a flag of --model={spec.name} (its flags: "
                         f"{', '.join('--' + n for n in sorted(own)) or 'none'})")
    kwargs = {h.argument: (h.default if fv[h.name].value is None else fv[h.name].value)
              for h in spec.hyperparameters}
    return {"class": spec.name, "kwargs": kwargs}


def _define_training_flags(fv: flags.FlagValues):
    """The flags every model shares (data, mask, optimiser, loop, validation)."""
    d = dict(flag_values=fv)
    # data
    flags.DEFINE_string("images", "ellipses",
                        "Training images: comma-separated sources with optional :weight, e.g. "
                        "'ellipses:0.5,mni:coronal:0.5' or 'fastmri:/data/knee/singlecoil_train' (lazy; "
                        "single-coil slices as complex images, phase kept; fastmri_magnitude: for magnitudes) "
                        "or 'kspace:FILE.npy' (see mrijax.data.images.load_images).", **d)
    flags.DEFINE_integer("size", 64, "Image side in pixels.", **d)
    flags.DEFINE_integer("batch_size", 8, "Images per step.", **d)
    flags.DEFINE_integer("seed", 0, "Data seed: batch i is a pure function of (seed, i).", **d)
    flags.DEFINE_bool("augment", True, "Random flips / 90-degree rotations.", **d)
    flags.DEFINE_float("max_phase", 0.0, "Smooth random phase up to this many radians (0: real images).", **d)
    flags.DEFINE_integer("pool_count", None, "Images to load from a non-ellipses source (default: all).", **d)
    # mask
    flags.DEFINE_string("mask", "gaussian_lines", "Mask kind (mrijax.masks.KINDS).", **d)
    flags.DEFINE_float("acceleration", 3.0, "Acceleration factor R of the mask.", **d)
    flags.DEFINE_integer("sample_n", None, "gaussian_lines: always-sampled centre lines (default: the mask's).",
                         **d)
    flags.DEFINE_float("center_fraction", None, "random/equispaced lines: fully sampled centre fraction.", **d)
    flags.DEFINE_enum("mask_mode", None, list(pipeline.MASK_MODES),
                      "A new mask per image, per batch, one fixed mask, or one per fastMRI volume (per_file); "
                      "default: the model's (cascade: per_image, automap: fixed).", **d)
    flags.DEFINE_integer("mask_seed", None, "Seed of the fixed / per-file masks (default: --seed).", **d)
    # optimisation
    flags.DEFINE_enum("optimizer", "adam", list(train.OPTIMIZERS),
                      "adam, rmsprop, or automap_rmsprop (Antun et al.'s AUTOMAP settings).", **d)
    flags.DEFINE_float("lr", None, "Peak learning rate (default: the optimiser's).", **d)
    flags.DEFINE_float("weight_decay", 0.0, "Weight decay (decoupled for adam).", **d)
    flags.DEFINE_float("clip_norm", 1.0, "Clip gradients to this global norm (0: no clipping).", **d)
    flags.DEFINE_bool("lr_decay", True, "Cosine decay of the learning rate to 10% over --steps.", **d)
    flags.DEFINE_enum("loss", None, list(train.LOSSES),
                      "Training loss (default: the model's; cascade: l1, automap: magnitude_l2).", **d)
    flags.DEFINE_float("activation_penalty", None,
                       "Weight of the l1 penalty on sown activations (default: the model's; automap: 1e-4).", **d)
    flags.DEFINE_float("noise_std", 0.0, "Std of complex Gaussian noise added to the measurements.", **d)
    flags.DEFINE_integer("steps", 1000, "Total optimiser steps.", **d)
    flags.DEFINE_float("min_loss", None, "Stop early once the training loss is <= this.", **d)
    flags.DEFINE_integer("init_seed", 0, "Seed of the parameter initialisation.", **d)
    flags.DEFINE_integer("log_every", 10, "Progress line every this many steps.", **d)
    flags.DEFINE_integer("ckpt_every", 200, "Save 'latest' every this many steps (0: at the end only).", **d)
    flags.DEFINE_integer("validate_every", 200, "Validate (and maybe save 'best') every this many steps.", **d)
    # validation
    flags.DEFINE_string("val_images", "ellipses", "Held-out validation images (same grammar as --images).", **d)
    flags.DEFINE_integer("val_size", None, "Validation image side (default: --size).", **d)
    flags.DEFINE_integer("val_count", 8, "Number of validation images.", **d)
    flags.DEFINE_integer("val_seed", 1_000_003, "Seed of validation images and masks.", **d)
    flags.DEFINE_integer("plot_count", 4, "Validation images shown in reconstructions.png.", **d)


def _config(f: flags.FlagValues, model: dict, defaults) -> dict:
    """The :func:`experiments.training.run` config from the parsed flags and a model entry."""
    mask_kwargs = {"acceleration": f.acceleration}
    if f.sample_n is not None:
        mask_kwargs["sample_n"] = f.sample_n
    if f.center_fraction is not None:
        mask_kwargs["center_fraction"] = f.center_fraction
    return {
        "model": model,
        "data": dict(images=f.images, size=f.size, batch_size=f.batch_size, seed=f.seed, augment=f.augment,
                     max_phase=f.max_phase, pool_count=f.pool_count),
        "mask": dict(kind=f.mask, kwargs=mask_kwargs, mode=defaults("mask_mode"), seed=f.mask_seed),
        "train": dict(optimizer=f.optimizer, lr=f.lr, weight_decay=f.weight_decay,
                      clip_norm=f.clip_norm if f.clip_norm > 0 else None, lr_decay=f.lr_decay, loss=defaults("loss"),
                      activation_penalty=defaults("activation_penalty"), noise_std=f.noise_std, steps=f.steps,
                      min_loss=f.min_loss, log_every=f.log_every, ckpt_every=f.ckpt_every,
                      validate_every=f.validate_every, init_seed=f.init_seed),
        "validation": dict(images=f.val_images, size=f.val_size, count=f.val_count, seed=f.val_seed,
                           plot_count=f.plot_count),
    }


def run(fv) -> None:
    if not fv.model:
        raise ValueError("--model is required (one of: " + ", ".join(models.names(trained=True)) + ")")
    if not fv.out_dir:
        raise ValueError("--out_dir is required")
    if os.path.exists(fv.out_dir) and not os.path.isdir(fv.out_dir):
        raise ValueError(f"--out_dir={fv.out_dir!r} exists and is not a folder")
    spec = models.get(fv.model)

    def defaults(name):
        value = fv[name].value
        return value if value is not None else spec.train_defaults.get(name, _GLOBAL_DEFAULTS[name])

    training.run(_config(fv, model_entry(fv, spec), defaults), fv.out_dir, resume=fv.resume)


def main(argv=None) -> int:
    """Parse ``argv`` (``sys.argv`` style) and train; returns the exit code."""
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
