"""Learned reconstruction maps (Flax Linen): parameters are plain pytrees and ``apply`` is pure.

* :class:`Cascade`: the Deep Cascade of CNNs with data consistency (Schlemper et al. 2017),
  the "Deep MRI" / D5-C5 network of Antun et al. 2020.
* :class:`Automap`: AUTOMAP (Zhu et al. 2018) as described in Antun et al.'s SI 2.1.
* :func:`load_deepmri_npz`: the published pretrained D5-C5 weights -> ``(Cascade, params)``.
* :func:`reconstruction_map`: any model as a pure ``f(masked centred k-space) -> image``.
* :func:`load`: a model trained by :mod:`mrijax.train` from its checkpoint directory.
"""

from mrijax.models.automap import Automap
from mrijax.models.cascade import Cascade, count_params
from mrijax.models.deepmri import load_deepmri_npz
from mrijax.models.recon import reconstruction_map


def load(checkpoint_dir, which=None):
    """Rebuild a trained model from an orbax checkpoint: ``(model, params, config)``.

    The model class and its keyword arguments come from the config stored beside the
    parameters.  ``which`` is ``"latest"``, ``"best"`` or ``None`` (best if present, else
    latest).  See :func:`mrijax.checkpoint.load_model`, which this calls.
    """
    # Imported here: mrijax.checkpoint looks model classes up in this package.
    from mrijax.checkpoint import load_model

    return load_model(checkpoint_dir, which)


__all__ = ["Automap", "Cascade", "count_params", "load", "load_deepmri_npz", "reconstruction_map"]
