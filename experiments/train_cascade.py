"""Train a Deep Cascade (``mrijax.models.Cascade``) on embedded or user images.

Writes into ``--ckpt_dir``: orbax checkpoints ``latest/`` and ``best/`` (each with the run's
config, so ``mrijax.models.load(ckpt_dir)`` rebuilds the model), ``metrics.json`` (training
and validation history, final validation) and ``reconstructions.png`` (target /
zero-filled / network with PSNR on validation images).  Every file is written atomically.

Example (the shipped checkpoint's exact command is in ``checkpoints/README.md``)::

    python experiments/train_cascade.py --ckpt_dir=/tmp/cascade --images=ellipses \\
        --size=64 --steps=2000 --mask=gaussian_lines --acceleration=3 --sample_n=4

An interrupted run continues exactly where it stopped with the same flags plus
``--resume``.  ``--steps`` (and the logging/checkpoint periods, ``--min_loss``) may be
changed on resume -- with ``--lr_decay`` a new ``--steps`` stretches the cosine schedule from
the restored step on -- other changed flags are refused.

Images (``--images``): comma-separated sources with optional ``:weight``: ``ellipses``
(fresh random ellipses every draw), ``shepp_logan``, ``mni[:axial|:coronal|:sagittal]``
(MNI152 template slices from nilearn's wheel) or a ``.npy``/``.npz``/``.mat``/NIfTI path
(see ``mrijax.data.images.load_images``), e.g. ``ellipses:0.5,mni:coronal:0.25,mni:sagittal:0.25``;
``fastmri:FOLDER`` trains on the slices of a folder of fastMRI volumes, read lazily (single-coil:
complex images with their measured phase; ``fastmri_magnitude:FOLDER`` for magnitudes), and
``kspace:FILE.npy|.npz:KEY|.mat:KEY`` on the images of a fully sampled k-space array.
"""

from __future__ import annotations

import sys

from absl import flags

from mrijax import train


def define_common_flags(fv: flags.FlagValues, *, loss: str, mask_mode: str, activation_penalty: float):
    """The flags shared by the training scripts (data, mask, optimiser, loop, validation)."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("ckpt_dir", None, "Output directory (checkpoints, metrics.json, PNG).", **d)
    flags.DEFINE_bool("resume", False, "Continue the run in --ckpt_dir (same flags; --steps may grow).", **d)
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
    flags.DEFINE_enum("mask_mode", mask_mode, list(train.MASK_MODES),
                      "A new mask per image, per batch, one fixed mask, or one per fastMRI volume (per_file).", **d)
    flags.DEFINE_integer("mask_seed", None, "Seed of the fixed / per-file masks (default: --seed).", **d)
    # optimisation
    flags.DEFINE_enum("optimizer", "adam", list(train.OPTIMIZERS),
                      "adam, rmsprop, or automap_rmsprop (Antun et al.'s AUTOMAP settings).", **d)
    flags.DEFINE_float("lr", None, "Peak learning rate (default: the optimiser's).", **d)
    flags.DEFINE_float("weight_decay", 0.0, "Weight decay (decoupled for adam).", **d)
    flags.DEFINE_float("clip_norm", 1.0, "Clip gradients to this global norm (0: no clipping).", **d)
    flags.DEFINE_bool("lr_decay", True, "Cosine decay of the learning rate to 10% over --steps.", **d)
    flags.DEFINE_enum("loss", loss, list(train.LOSSES), "Training loss.", **d)
    flags.DEFINE_float("activation_penalty", activation_penalty,
                       "Weight of the l1 penalty on sown activations (AUTOMAP: 1e-4).", **d)
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


def common_config(f: flags.FlagValues, model: dict) -> dict:
    """The :func:`mrijax.train.run` config from parsed common flags and a model entry."""
    mask_kwargs = {"acceleration": f.acceleration}
    if f.sample_n is not None:
        mask_kwargs["sample_n"] = f.sample_n
    if f.center_fraction is not None:
        mask_kwargs["center_fraction"] = f.center_fraction
    return {
        "model": model,
        "data": dict(images=f.images, size=f.size, batch_size=f.batch_size, seed=f.seed, augment=f.augment,
                     max_phase=f.max_phase, pool_count=f.pool_count),
        "mask": dict(kind=f.mask, kwargs=mask_kwargs, mode=f.mask_mode, seed=f.mask_seed),
        "train": dict(optimizer=f.optimizer, lr=f.lr, weight_decay=f.weight_decay,
                      clip_norm=f.clip_norm if f.clip_norm > 0 else None, lr_decay=f.lr_decay, loss=f.loss,
                      activation_penalty=f.activation_penalty, noise_std=f.noise_std, steps=f.steps,
                      min_loss=f.min_loss, log_every=f.log_every, ckpt_every=f.ckpt_every,
                      validate_every=f.validate_every, init_seed=f.init_seed),
        "validation": dict(images=f.val_images, size=f.val_size, count=f.val_count, seed=f.val_seed,
                           plot_count=f.plot_count),
    }


def parse(fv: flags.FlagValues, argv):
    """Parse ``argv`` (program name first) into ``fv``; print help for ``--help``.

    Returns ``None`` after parsing, or an exit code when the script should stop.
    """
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(fv.get_help())
        return 0
    fv.unparse_flags()  # back to the defaults, so main() can be called again in one process
    try:
        fv(argv)
    except flags.Error as e:
        sys.stderr.write(f"{e}\nPass --help for the flags.\n")
        return 2
    if not fv.ckpt_dir:
        sys.stderr.write("--ckpt_dir is required\n")
        return 2
    return None


FLAGS = flags.FlagValues()
define_common_flags(FLAGS, loss="l1", mask_mode="per_image", activation_penalty=0.0)
flags.DEFINE_integer("n_cascades", 5, "Number of CNN + data-consistency blocks (C).", flag_values=FLAGS)
flags.DEFINE_integer("n_convs", 5, "Convolutions per block (D).", flag_values=FLAGS)
flags.DEFINE_integer("features", 32, "Channels of the hidden convolutions (64 in D5-C5).", flag_values=FLAGS)
flags.DEFINE_integer("kernel_size", 3, "Convolution kernel size (odd).", flag_values=FLAGS)
flags.DEFINE_float("dc_noise_level", None,
                   "Data-consistency weight lambda (default: exact replacement of the sampled k-space).",
                   flag_values=FLAGS)
flags.DEFINE_bool("learn_noise_level", False, "Learn one DC weight per cascade (needs --dc_noise_level > 0).",
                  flag_values=FLAGS)
flags.DEFINE_bool("remat", False, "Recompute each block in the backward pass (less memory, slower on CPU).",
                  flag_values=FLAGS)
flags.DEFINE_enum("conv_impl", "auto", ["auto", "xla", "winograd", "winograd4"],
                  "How the hidden convolutions are computed (same function; mrijax.models.cascade).",
                  flag_values=FLAGS)


def main(argv=None) -> int:
    """Parse ``argv`` (``sys.argv`` style) and train; returns the exit code."""
    code = parse(FLAGS, sys.argv if argv is None else list(argv))
    if code is not None:
        return code
    model = {"class": "Cascade", "kwargs": dict(
        n_cascades=FLAGS.n_cascades, n_convs=FLAGS.n_convs, features=FLAGS.features,
        kernel_size=FLAGS.kernel_size, noise_level=FLAGS.dc_noise_level,
        learn_noise_level=FLAGS.learn_noise_level, remat=FLAGS.remat, conv_impl=FLAGS.conv_impl)}
    train.run(common_config(FLAGS, model), FLAGS.ckpt_dir, resume=FLAGS.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
