"""One entry point for test images: phantoms, the MNI152 template, or the user's files.

:func:`load_images` is what every experiment's ``--images`` flag calls.  Whatever
the source, it returns ``(N, size, size)`` NumPy images, square, with each image's
magnitude scaled to ``[0, 1]`` and checked finite before anything else runs.
"""

from __future__ import annotations

import pathlib

import numpy as np
import jax
import jax.numpy as jnp

from mrijax._checks import check_finite
from mrijax.data.io import scale_unit

_PHANTOM_NAMES = ("shepp_logan", "shepp-logan", "phantom")
_ELLIPSE_NAMES = ("ellipses",)
_ARRAY_SUFFIXES = (".npy", ".npz", ".mat")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
SPEC_OPTIONS = ("shepp_logan", "phantom", "ellipses", "mni", "mni:axial", "mni:coronal",
                "mni:sagittal", "PATH.npy", "PATH.npz[:KEY]", "PATH.mat[:KEY]", "PATH.h5",
                "PATH.nii", "PATH.nii.gz", "PATH.dcm", "DICOM_FOLDER")


def center_crop_square(images):
    """Centre-crop the trailing two axes to a square of side ``min(H, W)``.

    The crop starts at ``(n - m) // 2`` (fastMRI's ``center_crop`` convention).
    """
    images = np.asarray(images)
    H, W = images.shape[-2:]
    n = min(H, W)
    top, left = (H - n) // 2, (W - n) // 2
    return images[..., top:top + n, left:left + n]


def _resize_real(x, size):
    out = jax.image.resize(jnp.asarray(x, jnp.float32), x.shape[:-2] + (size, size),
                           method="lanczos3", antialias=True)
    return np.asarray(out)


def resize_square(images, size: int):
    """Centre-crop ``(..., H, W)`` images to a square and resize them to ``(size, size)``.

    The resize is JAX's antialiased Lanczos-3 (``jax.image.resize(method="lanczos3",
    antialias=True)``), so downsizing low-passes first instead of aliasing.  Real
    images are clipped to each image's original ``[min, max]`` afterwards (Lanczos
    overshoots at edges); complex images are resized part by part and not clipped.
    An image that already has the requested size is returned unchanged.

    Returns:
      ``float32`` or ``complex64`` NumPy array ``(..., size, size)``.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    x = center_crop_square(images)
    is_complex = np.iscomplexobj(x)
    if x.shape[-1] == size:
        return x.astype(np.complex64 if is_complex else np.float32)
    if is_complex:
        return (_resize_real(x.real, size) + 1j * _resize_real(x.imag, size)).astype(np.complex64)
    lo = x.min(axis=(-2, -1), keepdims=True)
    hi = x.max(axis=(-2, -1), keepdims=True)
    return np.clip(_resize_real(x, size), lo, hi).astype(np.float32)


def _scale(images):
    """Real: each image to ``[0, 1]`` by min/max.  Complex: divide by max modulus, phase kept."""
    if np.iscomplexobj(images):
        peak = np.abs(images).max(axis=(-2, -1), keepdims=True)
        return np.where(peak > 0, images / np.where(peak > 0, peak, 1), 0).astype(np.complex64)
    return scale_unit(images)


def _pick(n_available: int, count, source) -> np.ndarray:
    """``count`` indices spread evenly over ``n_available`` (the middle one for ``count=1``)."""
    if count is None:
        return np.arange(n_available)
    if count > n_available:
        raise ValueError(f"count={count} but {source} holds only {n_available} image(s)")
    return ((np.arange(count) + 0.5) * n_available / count).astype(int)


def _as_stack(a, source):
    a = np.asarray(a)
    if a.dtype.kind not in "biufc":
        raise ValueError(f"{source}: images must be numeric, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{source}: images must have shape (N, H, W) or (H, W), got {a.shape}")
    if a.dtype.kind != "c":
        a = a.astype(np.float64)
    return a


def _fastmri_targets(path, count):
    from mrijax.data import fastmri

    with fastmri.read_volume(path) as vol:
        idx = _pick(len(vol), count, path)
        out = []
        for i in idx:
            s = vol[int(i)]
            # The stored target's size when there is one, else the header's recon size.
            out.append(np.asarray(fastmri.target_image(s.kspace, s.recon_size)))
    return np.stack(out)


def _split_key(spec: str):
    """``"data.npz:images"`` -> (Path("data.npz"), "images") when the part before ':' is a file."""
    if ":" in spec and not pathlib.Path(spec).exists():
        head, key = spec.rsplit(":", 1)
        if pathlib.Path(head).is_file() and head.lower().endswith((".npz", ".mat")):
            return pathlib.Path(head), key
    return pathlib.Path(spec), None


def _load_path(spec: str, count):
    path, key = _split_key(spec)
    name = path.name.lower()
    known = name.endswith(_ARRAY_SUFFIXES + _NIFTI_SUFFIXES + (".h5", ".dcm"))
    if not path.exists():
        if known:
            raise FileNotFoundError(f"--images {spec!r}: no such file {path}")
        raise ValueError(f"unknown image spec {spec!r}: expected one of {', '.join(SPEC_OPTIONS)}")
    if path.is_dir():
        from mrijax.data.io import load_dicom

        images = load_dicom(path)
    elif name.endswith(_ARRAY_SUFFIXES):
        from mrijax.data.io import load_array

        images = _as_stack(load_array(path, key), path)
    elif name.endswith(".h5"):
        return _fastmri_targets(path, count)
    elif name.endswith(_NIFTI_SUFFIXES):
        from mrijax.data.io import load_nifti

        images = load_nifti(path, axis=2)
    elif name.endswith(".dcm"):
        from mrijax.data.io import load_dicom

        images = load_dicom(path)
    else:
        raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(SPEC_OPTIONS)}")
    return images[_pick(images.shape[0], count, path)]


def load_images(spec, size: int, count: int | None = 1, seed: int = 0) -> np.ndarray:
    """Load ``count`` square test images of side ``size`` from a spec string.

    Spec grammar (case-insensitive names; paths as given):

    * ``shepp_logan`` | ``shepp-logan`` | ``phantom``: the modified Shepp-Logan
      phantom (:func:`mrijax.data.phantoms.shepp_logan`), repeated ``count`` times.
    * ``ellipses``: ``count`` random-ellipse images
      (:func:`mrijax.data.phantoms.random_ellipses_batch`) drawn with ``seed``.
    * ``mni`` | ``mni:axial`` | ``mni:coronal`` | ``mni:sagittal``: slices of the
      MNI152 T1 template shipped in nilearn's wheel (:func:`mrijax.data.mni.mni_slices`),
      ``count`` of them evenly spread over the central part of the brain.
    * ``PATH.npy`` | ``PATH.npz[:KEY]`` | ``PATH.mat[:KEY]``: an array of images
      ``(N, H, W)`` or ``(H, W)``, real or complex (a complex array is taken as
      complex images, not k-space); ``KEY`` names the ``.npz`` array or MATLAB
      variable (optional when the file holds one).
    * ``PATH.h5``: a fastMRI volume; the images are the targets
      (:func:`mrijax.data.fastmri.target_image`) of the chosen slices.
    * ``PATH.nii`` | ``PATH.nii.gz``: axial slices of a NIfTI volume.
    * ``PATH.dcm`` | ``FOLDER``: a DICOM file or a folder of DICOM slices.

    From a file or the template, ``count`` images are taken evenly spread over those
    available (``count=1`` is the middle one; ``None`` takes all).

    Every image is centre-cropped to a square, resized to ``(size, size)`` with an
    antialiased Lanczos-3 filter (:func:`resize_square`) unless it already has that
    size, and scaled: real images to ``[0, 1]`` by their own min and max, complex
    images divided by their largest modulus (phase kept).

    Args:
      spec: the source, as above.
      size: output side length.
      count: number of images; ``None`` for all of a file's (1 for generated ones).
      seed: seeds ``ellipses``; unused by other sources (they are deterministic).

    Returns:
      ``float32`` (real sources) or ``complex64`` (complex arrays) NumPy array
      ``(N, size, size)``.

    Raises:
      ValueError: unknown spec (the message lists the options), bad count/size,
        unreadable file, non-finite values.
      FileNotFoundError: a path with a known suffix that does not exist.
      ImportError: an optional reader (h5py, nibabel, pydicom, nilearn) is missing.
    """
    if not isinstance(spec, (str, pathlib.PurePath)):
        raise TypeError(f"spec must be a str or path, got {type(spec).__name__}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if count is not None and (not isinstance(count, (int, np.integer)) or count < 1):
        raise ValueError(f"count must be a positive int or None, got {count!r}")
    text = str(spec).strip()
    name = text.lower()
    source = f"--images {text!r}"

    if name in _PHANTOM_NAMES:
        from mrijax.data import phantoms

        images = np.repeat(np.asarray(phantoms.shepp_logan(size))[None], count or 1, axis=0)
    elif name in _ELLIPSE_NAMES:
        from mrijax.data import phantoms

        images = np.asarray(phantoms.random_ellipses_batch(count or 1, size, seed))
    elif name == "mni" or name.startswith("mni:"):
        from mrijax.data import mni

        plane = name.split(":", 1)[1] if ":" in name else "axial"
        images = mni.mni_slices(size=size, plane=plane, count=count)
    else:
        images = _load_path(text, count)

    images = np.asarray(images)
    check_finite(images, source)
    images = _scale(resize_square(images, size))
    check_finite(images, source)
    return images
