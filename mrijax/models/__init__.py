"""Reconstruction models and the one protocol through which the library uses them.

* :mod:`mrijax.models.registry`: :class:`ModelSpec`, :func:`register`, :func:`reconstruction_map`
  (any registered model as a pure ``f(y) -> image`` for a measurement operator),
  :func:`build` / :func:`model_config` (JSON configs) and :func:`load` (a checkpoint).
* :class:`Cascade`: the Deep Cascade of CNNs with data consistency (Schlemper et al. 2017),
  the "Deep MRI" / D5-C5 network of Antun et al. 2020 (registry name ``"cascade"``).
* :class:`Automap`: AUTOMAP (Zhu et al. 2018) as described in Antun et al.'s SI 2.1
  (``"automap"``).
* :func:`load_deepmri_npz`: the published pretrained D5-C5 weights -> ``(Cascade, params)``.
"""

from mrijax.models.registry import (ModelSpec, build, get, load, model_config, names, reconstruction_map,
                                    register, spec_for)
from mrijax.models.automap import Automap
from mrijax.models.cascade import Cascade, count_params
from mrijax.models.deepmri import load_deepmri_npz
from mrijax.models.unet import NormUnet, Unet, UnetRecon

__all__ = ["Automap", "Cascade", "ModelSpec", "NormUnet", "Unet", "UnetRecon", "build", "count_params", "get", "load",
           "load_deepmri_npz", "model_config", "names", "reconstruction_map", "register", "spec_for"]
