"""Train AUTOMAP (``mrijax.models.Automap``) on embedded or user images.

AUTOMAP maps the measurement vector ``y = P_Omega F x`` (length ``m``, from one fixed mask)
to the magnitude image.  The loss is Antun et al.'s (SI 2.1.2): the squared l2 norm of the
magnitude error plus ``--activation_penalty`` (1e-4) times the l1 norm of the second
convolution's activations.  ``--optimizer=automap_rmsprop`` gives the paper's RMSProp
settings (lr 2e-5, decay 0.9, momentum 0; they need the paper's 100 epochs of 50,000
images); the default Adam at 1e-3 learns a small problem in a few thousand steps.

Writes into ``--ckpt_dir`` what ``train_cascade.py`` writes; the fixed mask is stored with
the checkpoints (``mrijax.checkpoint.load_arrays(ckpt_dir)["mask"]``).

Example::

    python experiments/train_automap.py --ckpt_dir=/tmp/automap --images=ellipses --size=32 \\
        --mask=poisson_disc --acceleration=1.67 --hidden=512 --steps=3000
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

from absl import flags

from mrijax import train


def _load_cascade_script():
    # The flags shared with train_cascade.py live there (the experiments folder is no package).
    spec = importlib.util.spec_from_file_location(
        "_mrijax_train_cascade_script", pathlib.Path(__file__).resolve().with_name("train_cascade.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cascade = _load_cascade_script()

FLAGS = flags.FlagValues()
_cascade.define_common_flags(FLAGS, loss="magnitude_l2", mask_mode="fixed", activation_penalty=1e-4)
flags.DEFINE_integer("hidden", 64, "Width of the first fully connected layer (25000 in the paper).",
                     flag_values=FLAGS)
flags.DEFINE_integer("conv_features", 64, "Channels of the two 5x5 convolutions.", flag_values=FLAGS)


def main(argv=None) -> int:
    """Parse ``argv`` (``sys.argv`` style) and train; returns the exit code."""
    code = _cascade.parse(FLAGS, sys.argv if argv is None else list(argv))
    if code is not None:
        return code
    if FLAGS.mask_mode != "fixed":
        sys.stderr.write("AUTOMAP's input length is fixed by its mask: --mask_mode must be 'fixed'\n")
        return 2
    if FLAGS.val_size not in (None, FLAGS.size):
        sys.stderr.write("AUTOMAP is not convolutional in k-space: --val_size must equal --size\n")
        return 2
    # n and m are filled in by train.run from the image size and the drawn mask.
    model = {"class": "Automap", "kwargs": dict(hidden=FLAGS.hidden, conv_features=FLAGS.conv_features)}
    train.run(_cascade.common_config(FLAGS, model), FLAGS.ckpt_dir, resume=FLAGS.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
