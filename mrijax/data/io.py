"""Readers for arrays and images that users hand us: ``.npy``, ``.npz``, ``.mat``, DICOM, NIfTI.

Everything here treats files as *data*: NumPy files are read with
``allow_pickle=False`` (an object array is refused, never unpickled), MATLAB files
through :func:`scipy.io.loadmat` (v5/v7) or HDF5 (v7.3, through h5py).  Every error
names the file and, where there is one, the key that was asked for.

Image readers (:func:`load_dicom`, :func:`load_nifti`) return magnitude images as
``float32`` arrays ``(N, H, W)`` with each slice scaled to ``[0, 1]`` by its own
minimum and maximum (:func:`scale_unit`), in radiological display orientation
(anterior or superior up, the patient's right on the image's left).

The optional dependencies (h5py, nibabel, pydicom; ``pip install mrijax[data]``) are
imported only when a reader needs them.
"""

from __future__ import annotations

import importlib
import os
import pathlib

import numpy as np
import jax
import jax.numpy as jnp
import scipy.io

__all__ = ["center_crop_square", "display_orientation", "load_array", "load_dicom", "load_nifti", "require",
           "resize_square", "scale_unit"]

_INSTALL_HINT = "in a checkout: pip install -e '.[data]'; otherwise: pip install mrijax[data]"


def require(module: str, purpose: str):
    """Import an optional dependency, or raise ``ImportError`` saying how to get it.

    Args:
      module: the module to import, e.g. ``"h5py"``.
      purpose: what it is needed for, put in the message (e.g. ``"reading fastMRI .h5 files"``).

    Returns:
      The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is needed for {purpose} but is not installed: {_INSTALL_HINT} "
            f"(or pip install {module})") from e


def scale_unit(images, axes=(-2, -1)):
    """Scale each image to ``[0, 1]`` by its own minimum and maximum over ``axes``.

    A constant image (max == min) becomes all zeros rather than NaN.

    Args:
      images: real array ``(..., H, W)``.
      axes: the axes that make up one image.

    Returns:
      ``float32`` array of the same shape.
    """
    x = np.asarray(images, dtype=np.float64)
    lo = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - lo
    # Constant slices (e.g. empty slices at the edge of a volume) map to 0, not 0/0.
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (x - lo) / safe, 0.0).astype(np.float32)


def _path(path) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return p


def _check_numeric(a, path, key):
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biufc":
        what = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(
            f"{path}: variable {key!r} is not a numeric array (got {what}); only plain numeric arrays "
            "can be loaded")
    return a


def _pick(arrays: dict, path, key, kind: str):
    """Return ``arrays[key]``, or the only array when ``key`` is None."""
    if key is None:
        if len(arrays) != 1:
            raise ValueError(
                f"{path}: holds {len(arrays)} {kind}s {sorted(arrays)}; pass key= to choose one")
        key = next(iter(arrays))
    if key not in arrays:
        raise KeyError(f"{path}: no {kind} {key!r}; it holds {sorted(arrays)}")
    return key, arrays[key]


def _load_npy(p, key):
    if key is not None:
        raise ValueError(f"{p}: a .npy file holds one array; key={key!r} does not apply")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        # NumPy refuses object arrays without allow_pickle; say so in our words, naming the file.
        raise ValueError(f"{p}: cannot be loaded without unpickling ({e}); mrijax never unpickles "
                         "files, save a plain numeric array instead") from e


def _load_npz(p, key):
    try:
        npz = np.load(p, allow_pickle=False)
    except (OSError, EOFError, ValueError) as e:
        # NumPy falls back to unpickling files it does not recognise; that is refused.
        raise ValueError(f"{p}: not a readable .npz file ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: holds a single .npy array, not an .npz archive; rename it to .npy")
    with npz:
        names = list(npz.files)
        key, _ = _pick(dict.fromkeys(names), p, key, "array")
        try:
            return npz[key]
        except ValueError as e:
            raise ValueError(f"{p}: array {key!r} cannot be loaded without unpickling ({e}); "
                             "mrijax never unpickles files") from e


def _mat73_arrays(p):
    """The numeric variables at the root of a MATLAB v7.3 (HDF5) file, in MATLAB's axis order."""
    h5py = require("h5py", "reading MATLAB v7.3 .mat files")
    arrays = {}
    with h5py.File(p, "r") as f:
        for name, obj in f.items():
            # '#refs#' and '#subsystem#' hold MATLAB's cell/object internals, groups are structs.
            if name.startswith("#") or not isinstance(obj, h5py.Dataset):
                continue
            a = obj[()]
            if a.dtype.names is not None and {"real", "imag"} <= set(a.dtype.names):
                a = a["real"] + 1j * a["imag"]
            if isinstance(a, np.ndarray) and a.dtype.kind in "biufc":
                # MATLAB is column-major; HDF5 stores the reversed shape.
                arrays[name] = np.ascontiguousarray(a.T)
            else:
                arrays[name] = a
    return arrays


def _is_hdf5(p) -> bool:
    # MATLAB v7.3 files are HDF5 with a 512-byte user block; the HDF5 signature sits at
    # offset 0, 512, 1024, ... so look there instead of importing h5py just to ask.
    sig = b"\x89HDF\r\n\x1a\n"
    with open(p, "rb") as f:
        for offset in (0, 512, 1024, 2048):
            f.seek(offset)
            if f.read(8) == sig:
                return True
    return False


def _load_mat(p, key):
    if _is_hdf5(p):
        arrays = _mat73_arrays(p)
    else:
        try:
            raw = scipy.io.loadmat(p)
        except NotImplementedError:  # v7.3 not recognised by the signature scan
            arrays = _mat73_arrays(p)
        except Exception as e:
            raise ValueError(f"{p}: not a readable .mat file ({e})") from e
        else:
            arrays = {k: v for k, v in raw.items() if not k.startswith("__")}
    key, a = _pick(arrays, p, key, "variable")
    return _check_numeric(a, p, key)


def load_array(path, key: str | None = None) -> np.ndarray:
    """Load one numeric array from ``.npy``, ``.npz`` or ``.mat`` (v5/v7 and v7.3).

    No pickle is ever executed: ``np.load(..., allow_pickle=False)`` refuses object
    arrays with a ``ValueError`` naming the file.

    Args:
      path: the file.  The format is chosen by the suffix.
      key: the array's name inside ``.npz`` (the ``np.savez`` keyword) or ``.mat``
        (the MATLAB variable name).  ``None`` picks the only array present and is an
        error when there are several.  Must be ``None`` for ``.npy``.

    Returns:
      The array as stored (dtype and shape unchanged; v7.3 ``.mat`` arrays are
      transposed to MATLAB's axis order so they match what ``scipy.io.loadmat`` gives
      for the same variable in a v7 file, and complex compounds become complex).

    Raises:
      FileNotFoundError: the path does not exist.
      KeyError: ``key`` is not in the file (the message lists what is).
      ValueError: unsupported suffix, unreadable file, object/struct/cell data, or
        several arrays and no ``key``.
    """
    p = _path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _load_npy(p, key)
    if suffix == ".npz":
        return _load_npz(p, key)
    if suffix == ".mat":
        return _load_mat(p, key)
    raise ValueError(f"{p}: unsupported suffix {suffix!r}; load_array reads .npy, .npz and .mat")


def display_orientation(slices_xy):
    """RAS+ voxel slices ``(..., a, b)`` -> display images ``(..., b, a)``, radiological convention.

    For an axial slice of a RAS+ volume (``a`` = x towards the patient's right,
    ``b`` = y towards anterior) this puts anterior at the top and the patient's right
    on the image's left.  The same flip gives superior-up coronal and sagittal
    slices (anterior on the left for sagittal).
    """
    s = np.swapaxes(np.asarray(slices_xy), -1, -2)
    return s[..., ::-1, ::-1]


def load_nifti(path, axis: int = 2, scale: bool = True) -> np.ndarray:
    """Read a NIfTI image (``.nii`` / ``.nii.gz``) as display-oriented 2-D slices.

    The volume is first reoriented to the closest canonical RAS+ orientation
    (``nibabel.as_closest_canonical``), so ``axis=2`` gives axial, ``axis=1``
    coronal and ``axis=0`` sagittal slices whatever the file's voxel order; each
    slice is then turned by :func:`display_orientation`.

    Args:
      path: the file.
      axis: the RAS+ axis to slice along (0, 1 or 2).
      scale: scale each slice to ``[0, 1]`` (:func:`scale_unit`); ``False`` keeps the
        stored intensities (after NIfTI's scl_slope/scl_inter).

    Returns:
      ``float32`` array ``(N, H, W)``.  A 2-D image gives ``N = 1``; a 4-D image is
      accepted only when its fourth axis has length 1.
    """
    nib = require("nibabel", "reading NIfTI files")
    p = _path(path)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    try:
        img = nib.load(str(p))
        if img.ndim == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if img.ndim == 2:
            # A single image: one slice, the axis argument does not apply.
            data, axis = np.asarray(img.get_fdata(dtype=np.float32))[..., None], 2
        elif img.ndim == 3:
            data = np.asarray(nib.as_closest_canonical(img).get_fdata(dtype=np.float32))
        else:
            data = None
    except Exception as e:
        raise ValueError(f"{p}: not a readable NIfTI file ({e})") from e
    if data is None:
        raise ValueError(f"{p}: a NIfTI image of shape {img.shape} is neither 2-D nor 3-D")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{p}: holds NaN or infinite voxels")
    slices = np.moveaxis(data, axis, 0)
    images = np.ascontiguousarray(display_orientation(slices))
    return scale_unit(images) if scale else images.astype(np.float32)


def _dicom_files(p):
    if p.is_file():
        return [p]
    files = sorted(q for q in p.iterdir() if q.is_file())
    if not files:
        raise ValueError(f"{p}: the folder holds no files")
    return files


def _slice_position(ds):
    """Distance of a slice along its normal, or None when the geometry tags are missing."""
    ipp = getattr(ds, "ImagePositionPatient", None)
    iop = getattr(ds, "ImageOrientationPatient", None)
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return float(np.dot(np.cross(row, col), np.asarray(ipp, float)))


def load_dicom(path_or_folder, scale: bool = True) -> np.ndarray:
    """Read a DICOM file or a folder of single-slice DICOM files as magnitude images.

    Files in a folder that are not DICOM, or DICOM without pixel data (e.g. a
    DICOMDIR), are skipped.  Slices are sorted by their position along the slice
    normal (``ImagePositionPatient`` projected on the normal of
    ``ImageOrientationPatient``) when every slice has those tags, else by
    ``InstanceNumber`` when every slice has one, else by file name.  Stored values
    go through ``RescaleSlope`` / ``RescaleIntercept``.  A multi-frame file gives
    one image per frame.

    Args:
      path_or_folder: a DICOM file, or a folder of them (not searched recursively).
      scale: scale each slice to ``[0, 1]`` (:func:`scale_unit`).

    Returns:
      ``float32`` array ``(N, H, W)``.

    Raises:
      ValueError: no readable image, colour images, slices of different sizes, or
        pixel data that cannot be decoded (the message names the file).
    """
    pydicom = require("pydicom", "reading DICOM files")
    from pydicom.errors import InvalidDicomError

    p = _path(path_or_folder)
    entries = []
    for f in _dicom_files(p):
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError) as e:
            if p.is_file():
                raise ValueError(f"{f}: not a readable DICOM file ({e})") from e
            continue
        if "PixelData" not in ds:
            if p.is_file():
                raise ValueError(f"{f}: the DICOM file holds no pixel data")
            continue
        if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
            raise ValueError(f"{f}: colour DICOM ({ds.SamplesPerPixel} samples per pixel) is not a "
                             "magnitude image")
        try:
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception as e:
            raise ValueError(f"{f}: the pixel data cannot be decoded ({e})") from e
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        pixels = pixels * slope + intercept
        frames = pixels[None] if pixels.ndim == 2 else pixels
        entries.append((f, ds, frames))
    if not entries:
        raise ValueError(f"{p}: no DICOM image found")

    positions = [_slice_position(ds) for _, ds, _ in entries]
    numbers = [getattr(ds, "InstanceNumber", None) for _, ds, _ in entries]
    if all(q is not None for q in positions):
        order = np.argsort(positions, kind="stable")
    elif all(n is not None for n in numbers):
        order = np.argsort([int(n) for n in numbers], kind="stable")
    else:
        order = np.arange(len(entries))  # already sorted by file name
    shapes = {e[2].shape[1:] for e in entries}
    if len(shapes) != 1:
        raise ValueError(f"{p}: the slices have different sizes {sorted(shapes)}")
    images = np.concatenate([entries[i][2] for i in order], axis=0)
    return scale_unit(images) if scale else images.astype(np.float32)


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
