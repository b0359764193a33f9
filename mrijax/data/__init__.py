"""Data without downloads (phantoms, the MNI152 template) and readers for users' files.

:mod:`~mrijax.data.images` (``load_images``: every image source behind ``--images``),
:mod:`~mrijax.data.phantoms`, :mod:`~mrijax.data.mni`, :mod:`~mrijax.data.symbols`,
:mod:`~mrijax.data.io` (NumPy/MATLAB/NIfTI/DICOM readers), :mod:`~mrijax.data.fastmri`,
:mod:`~mrijax.data.sensitivity` (coil maps) and :mod:`~mrijax.data.pipeline` (seeded training batches).
"""

from mrijax.data import fastmri, images, io, mni, phantoms, pipeline, sensitivity, symbols

__all__ = ["fastmri", "images", "io", "mni", "phantoms", "pipeline", "sensitivity", "symbols"]
