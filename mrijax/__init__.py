"""mrijax: testing deep-learning MRI reconstruction for instabilities and hallucinations.

The public modules: :mod:`~mrijax.operators` (measurement operators ``A``),
:mod:`~mrijax.fourier` (the centred DFT and the Cartesian sampling operator), :mod:`~mrijax.masks`,
:mod:`~mrijax.dc` (data consistency), :mod:`~mrijax.metrics`, :mod:`~mrijax.wavelets`,
:mod:`~mrijax.cs` (compressed sensing), :mod:`~mrijax.attacks` (worst-case perturbations),
:mod:`~mrijax.hallucination` (kernel and range, detail transfer), :mod:`~mrijax.models` (the
model registry and the networks), :mod:`~mrijax.train`, :mod:`~mrijax.pair_training`,
:mod:`~mrijax.checkpoint` and :mod:`~mrijax.data` (images, phantoms, readers, the pipeline).
"""

from mrijax import (attacks, checkpoint, cs, data, dc, fourier, hallucination, masks, metrics, models, operators,
                    pair_training, train, wavelets)

__version__ = "0.1.0"

__all__ = ["attacks", "checkpoint", "cs", "data", "dc", "fourier", "hallucination", "masks", "metrics", "models",
           "operators", "pair_training", "train", "wavelets"]
