"""Real anatomy without a download: slices of the MNI152 T1 template inside nilearn's wheel.

nilearn ships the ICBM 2009a nonlinear symmetric MNI152 T1 template (skull-stripped,
1 mm, 197 x 233 x 189 voxels, uint8 intensities) as
``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``.  This
module finds that file with ``importlib.util.find_spec("nilearn")``, *without*
importing nilearn (which takes seconds), and reads it with nibabel.

Licence: the MNI ICBM 2009 templates are free to use and redistribute with the
copyright notice of the McConnell Brain Imaging Centre (see nilearn's licence files).
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import numpy as np

from mrijax.data.io import display_orientation, require, resize_square, scale_unit

__all__ = ["MNI_T1_FILENAME", "PLANES", "brain_slice_indices", "mni_slices", "mni_template_path"]

MNI_T1_FILENAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}  # the RAS+ axis each plane is normal to

# The template's background is exactly 0; 5 % of the maximum separates brain from it.
_BRAIN_LEVEL = 0.05
# Background kept around the brain's bounding box, as a fraction of its longer side: images
# look like MRI slices (which have a border) and the resize filter does not clip the brain.
_MARGIN = 0.06


def mni_template_path() -> pathlib.Path:
    """Path of the MNI152 T1 template inside the installed nilearn package (nilearn not imported).

    Raises:
      ImportError: nilearn is not installed, or its wheel lacks the template file.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nilearn is needed for the MNI152 template images but is not installed: "
                          "pip install mrijax[data] (or pip install nilearn)")
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location) / "datasets" / "data" / MNI_T1_FILENAME
        if path.is_file():
            return path
    raise ImportError(f"the installed nilearn ({list(spec.submodule_search_locations)}) has no "
                      f"datasets/data/{MNI_T1_FILENAME}; reinstall nilearn>=0.10")


@functools.lru_cache(maxsize=1)
def _template() -> np.ndarray:
    """The template as a read-only float32 RAS+ volume (cached: loading takes a fraction of a second)."""
    nib = require("nibabel", "reading the MNI152 template")
    img = nib.as_closest_canonical(nib.load(str(mni_template_path())))
    volume = np.asarray(img.get_fdata(dtype=np.float32))
    volume.setflags(write=False)
    return volume


def _square_box(support_2d: np.ndarray):
    """(top, left, side) of a square around the True pixels, centred on their bounding box."""
    rows = np.flatnonzero(support_2d.any(axis=1))
    cols = np.flatnonzero(support_2d.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    extent = max(r1 - r0, c1 - c0)
    side = extent + 2 * int(round(_MARGIN * extent))
    top = (r0 + r1) // 2 - side // 2
    left = (c0 + c1) // 2 - side // 2
    return top, left, side


def _crop_padded(images, top, left, side):
    """Crop ``(N, H, W)`` to ``[top:top+side, left:left+side]``, zero-padding outside the array."""
    n, H, W = images.shape
    out = np.zeros((n, side, side), images.dtype)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + side, H), min(left + side, W)
    out[:, r0 - top:r1 - top, c0 - left:c1 - left] = images[:, r0:r1, c0:c1]
    return out


def brain_slice_indices(plane: str = "axial", min_brain_fraction: float = 0.5) -> np.ndarray:
    """Voxel indices (along the plane's RAS+ axis) of slices with enough brain in them.

    A slice qualifies when its brain area is at least ``min_brain_fraction`` of the
    largest slice's, which keeps the central part of the brain.
    """
    axis = _plane_axis(plane)
    if not 0.0 < min_brain_fraction <= 1.0:
        raise ValueError(f"min_brain_fraction must be in (0, 1], got {min_brain_fraction!r}")
    volume = _template()
    brain = volume > _BRAIN_LEVEL * volume.max()
    area = brain.sum(axis=tuple(a for a in range(3) if a != axis))
    return np.flatnonzero(area >= min_brain_fraction * area.max())


def _plane_axis(plane) -> int:
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    return PLANES[plane]


def mni_slices(size: int = 128, plane: str = "axial", indices=None, count: int | None = None,
               min_brain_fraction: float = 0.5) -> np.ndarray:
    """2-D slices of the MNI152 T1 template, square, resized, scaled to ``[0, 1]``.

    Slices are taken along ``plane``, cropped to the square around the brain's
    bounding box in that plane (the same box for every slice, so all share one
    scale), resized to ``(size, size)`` with an antialiased Lanczos-3 filter
    (:func:`mrijax.data.io.resize_square`), shown in radiological orientation
    (axial: anterior up, patient's right on the left; coronal/sagittal: superior up)
    and scaled to ``[0, 1]`` per slice.  Deterministic.

    Args:
      size: output side length.
      plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
      indices: explicit voxel indices along the plane's RAS+ axis (0..196 sagittal,
        0..232 coronal, 0..188 axial); excludes ``count``.
      count: how many slices, evenly spread over :func:`brain_slice_indices`
        (``count=1`` is the middle one).  ``None`` (and no ``indices``) returns all
        of them, one per voxel.
      min_brain_fraction: see :func:`brain_slice_indices`.

    Returns:
      ``float32`` array ``(N, size, size)`` in ``[0, 1]``.

    Raises:
      ImportError: nilearn (for the file) or nibabel (to read it) is missing.
      ValueError: bad ``plane``, ``indices``, ``count`` or ``size``.
    """
    axis = _plane_axis(plane)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    volume = _template()
    if indices is not None:
        if count is not None:
            raise ValueError("give indices or count, not both")
        idx = np.atleast_1d(np.asarray(indices))
        n_axis = volume.shape[axis]
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n_axis:
            raise ValueError(f"indices must be ints in [0, {n_axis}) for the {plane} plane, got {indices!r}")
    else:
        candidates = brain_slice_indices(plane, min_brain_fraction)
        if count is None:
            idx = candidates
        else:
            if not isinstance(count, (int, np.integer)) or not 1 <= count <= candidates.size:
                raise ValueError(
                    f"count must be an int in [1, {candidates.size}] for the {plane} plane, got {count!r}")
            idx = candidates[((np.arange(count) + 0.5) * candidates.size / count).astype(int)]


    slices = display_orientation(np.moveaxis(np.take(volume, idx, axis=axis), axis, 0))
    support = display_orientation((volume > _BRAIN_LEVEL * volume.max()).any(axis=axis))
    slices = _crop_padded(np.ascontiguousarray(slices), *_square_box(support))
    return scale_unit(resize_square(slices, size))
