"""fastMRI HDF5 volumes: lazy slice reading, the reference target image, and a batch iterator.

The fastMRI layout (Zbontar et al. 2018; ``fastmri/data/mri_data.py``), one ``.h5``
file per volume:

=========================  ================================================================
``kspace``                 complex64 ``[slices, H, W]`` (single-coil) or
                           ``[slices, coils, H, W]`` (multi-coil); centred (DC at
                           ``(H//2, W//2)``), readout along H, phase encoding along W.
``reconstruction_esc``     float32 ``[slices, h, w]``, single-coil target (train/val).
``reconstruction_rss``     float32 ``[slices, h, w]``, multi-coil target (train/val).
``mask``                   ``[W]`` sampled phase-encode columns (test/challenge files, whose
                           k-space is already undersampled).
``ismrmrd_header``         scalar byte string, the ISMRMRD XML header.
attributes                 ``acquisition``, ``max``, ``norm``, ``patient_id``;
                           ``acceleration``, ``num_low_frequency`` in test files.
=========================  ================================================================

As in fastMRI, the target of a single-coil volume is ``reconstruction_esc`` and
that of a multi-coil volume ``reconstruction_rss`` (single-coil knee files also
carry a ``reconstruction_rss`` of the original multi-coil data, which is *not* the
image of their k-space).

Reading is lazy: :func:`read_slice` and :class:`FastMRIVolume` read one slice with
h5py hyperslab selection, never the whole dataset.  Every file is validated when it
is opened (keys, ranks, dtypes, shapes) and problems raise :class:`FastMRIFileError`
naming the file and the key before anything is computed.

h5py is an optional dependency (``pip install mrijax[data]``), imported on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import xml.etree.ElementTree as ElementTree
import zlib
from typing import Any, Callable, Iterator

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier
from mrijax._checks import check_image
from mrijax.data.io import require

__all__ = ["FastMRIFileError", "FastMRISlice", "FastMRIVolume", "HEADER_KEY", "KSPACE_KEY", "MASK_KEY",
           "MULTICOIL_TARGET_KEY", "SINGLECOIL_TARGET_KEY", "center_crop", "center_crop_or_pad",
           "iterate_slices", "mask_seed", "parse_ismrmrd_header", "read_slice", "read_volume", "target_image"]

KSPACE_KEY = "kspace"
SINGLECOIL_TARGET_KEY = "reconstruction_esc"
MULTICOIL_TARGET_KEY = "reconstruction_rss"
MASK_KEY = "mask"
HEADER_KEY = "ismrmrd_header"

_ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


class FastMRIFileError(ValueError):
    """A fastMRI file is unreadable or does not have the fastMRI layout.

    Attributes:
      path: the file.
      key: the HDF5 key at fault, or ``None`` when the file itself is.
    """

    def __init__(self, path, key: str | None, problem: str):
        self.path = str(path)
        self.key = key
        where = f"{self.path}" if key is None else f"{self.path} [{key!r}]"
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------- header


def _local(tag: str) -> str:
    """Element tag without its ``{namespace}`` prefix."""
    return tag.rsplit("}", 1)[-1]


def _child(element, name):
    if element is None:
        return None
    for c in element:
        if _local(c.tag) == name:
            return c
    return None


def _path_of(root, *names):
    e = root
    for n in names:
        e = _child(e, n)
    return e


def _xyz(element, cast):
    if element is None:
        return None
    values = [_child(element, a) for a in ("x", "y", "z")]
    if any(v is None or v.text is None for v in values):
        return None
    return tuple(cast(v.text) for v in values)


def parse_ismrmrd_header(xml) -> dict:
    """Parse the sizes and k-space limits fastMRI uses from an ISMRMRD XML header.

    Works with or without the ISMRMRD namespace.  Elements missing from the header
    are missing from the result (no key is invented); only the first ``encoding``
    element is read, as fastMRI does.

    Args:
      xml: the header as ``bytes`` or ``str`` (``hf["ismrmrd_header"][()]``).

    Returns:
      A dict with, where present:

      * ``encoded_size``, ``recon_size``: ``(x, y, z)`` ints, the encoded and
        reconstructed matrix sizes (``x`` = rows H of the target, ``y`` = columns W).
      * ``encoded_fov_mm``, ``recon_fov_mm``: ``(x, y, z)`` floats.
      * one entry per ``encodingLimits`` child, e.g. ``kspace_encoding_step_1``:
        ``{"minimum": int, "maximum": int, "center": int}``.
      * ``padding_left``, ``padding_right``: fastMRI's acquired column range in the
        (possibly zero-padded) k-space, ``encoded_size[1] // 2 - center`` and
        ``padding_left + maximum + 1`` of ``kspace_encoding_step_1``.
      * ``receiver_channels`` (int) and ``field_strength_T`` (float).

    Raises:
      ValueError: the text is not well-formed XML, or a number does not parse.
    """
    if isinstance(xml, np.ndarray):
        xml = xml.item()
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", errors="replace")
    if not isinstance(xml, str):
        raise TypeError(f"xml must be bytes or str, got {type(xml).__name__}")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        raise ValueError(f"ismrmrd_header is not well-formed XML: {e}") from e

    out: dict[str, Any] = {}
    encoding = _child(root, "encoding")
    try:
        for name, space in (("encoded", "encodedSpace"), ("recon", "reconSpace")):
            size = _xyz(_path_of(encoding, space, "matrixSize"), int)
            if size is not None:
                out[f"{name}_size"] = size
            fov = _xyz(_path_of(encoding, space, "fieldOfView_mm"), float)
            if fov is not None:
                out[f"{name}_fov_mm"] = fov
        limits = _child(encoding, "encodingLimits")
        for lim in (limits if limits is not None else []):
            values = {_local(c.tag): int(c.text) for c in lim if c.text is not None}
            out[_local(lim.tag)] = values
        step1 = out.get("kspace_encoding_step_1", {})
        if "encoded_size" in out and {"center", "maximum"} <= set(step1):
            out["padding_left"] = out["encoded_size"][1] // 2 - step1["center"]
            out["padding_right"] = out["padding_left"] + step1["maximum"] + 1
        channels = _path_of(root, "acquisitionSystemInformation", "receiverChannels")
        if channels is not None and channels.text:
            out["receiver_channels"] = int(channels.text)
        field = _path_of(root, "acquisitionSystemInformation", "systemFieldStrength_T")
        if field is not None and field.text:
            out["field_strength_T"] = float(field.text)
    except ValueError as e:
        raise ValueError(f"ismrmrd_header holds a value that is not a number: {e}") from e
    return out


# --------------------------------------------------------------------------- target image


def center_crop(x, shape):
    """Crop the trailing two axes of ``x`` to ``shape`` around the centre, as fastMRI does.

    The crop starts at ``(n - m) // 2`` along an axis of length ``n`` cropped to
    ``m``: fastMRI's ``center_crop``, so stored targets are reproduced exactly.
    Works on NumPy and JAX arrays.
    """
    h, w = (int(s) for s in shape)
    H, W = x.shape[-2:]
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"cannot centre-crop an image of shape {(H, W)} to {(h, w)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def center_crop_or_pad(x, shape):
    """Centre-crop or zero-pad the trailing two axes of a NumPy array to ``shape``.

    Cropping follows :func:`center_crop`; padding puts the input at offset
    ``(m - n) // 2``, so cropping back undoes padding exactly.
    """
    x = np.asarray(x)
    for axis, m in zip((-2, -1), shape):
        n = x.shape[axis]
        if m < n:
            start = (n - m) // 2
            x = np.take(x, np.arange(start, start + m), axis=axis)
        elif m > n:
            before = (m - n) // 2
            pad = [(0, 0)] * x.ndim
            pad[axis] = (before, m - n - before)
            x = np.pad(x, pad)
    return x


def target_image(kspace, recon_size=(320, 320), multicoil: bool | None = None):
    """The fastMRI target of fully sampled k-space: crop of ``|ifft2c(k)|``, or its RSS over coils.

    ``ifft2c`` is the centred orthonormal inverse DFT (:func:`mrijax.fourier.ifft2c`,
    fastMRI's convention), the crop is fastMRI's :func:`center_crop`, and the coils are
    combined by root-sum-of-squares, ``sqrt(sum_c |x_c|^2)``.  On fastMRI training and
    validation files this reproduces ``reconstruction_esc`` (single-coil) and
    ``reconstruction_rss`` (multi-coil) to float32 precision.

    Args:
      kspace: centred k-space, ``(H, W)`` or ``(C, H, W)`` as a slice is stored, or
        with leading batch axes when ``multicoil`` is given.
      recon_size: ``(rows, cols)`` of the target; 320x320 for fastMRI knee and brain.
      multicoil: whether axis -3 is the coil axis.  ``None`` decides by rank:
        2-D is single-coil, 3-D is multi-coil ``(C, H, W)``; higher ranks must say.

    Returns:
      Real array ``(..., rows, cols)`` (float32, or float64 for complex128 input under x64).
    """
    check_image(kspace, "kspace")
    if np.dtype(kspace.dtype).kind != "c":
        raise TypeError(f"kspace must be complex, got dtype {kspace.dtype}")
    if multicoil is None:
        if kspace.ndim > 3:
            raise ValueError(
                f"kspace of shape {tuple(kspace.shape)} is ambiguous: pass multicoil=True if axis -3 "
                "holds coils, multicoil=False if all leading axes are batch axes")
        multicoil = kspace.ndim == 3
    if multicoil and kspace.ndim < 3:
        raise ValueError(f"multicoil=True needs kspace (..., C, H, W), got shape {tuple(kspace.shape)}")
    if len(recon_size) != 2:
        raise ValueError(f"recon_size must be (rows, cols), got {recon_size!r}")
    return _target(kspace, tuple(int(s) for s in recon_size), bool(multicoil))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _target(kspace, recon_size, multicoil):
    image = center_crop(fourier.ifft2c(kspace), recon_size)
    if multicoil:
        return jnp.sqrt(jnp.sum(jnp.abs(image) ** 2, axis=-3))
    return jnp.abs(image)


# --------------------------------------------------------------------------- files


def _h5py():
    return require("h5py", "reading fastMRI .h5 files")


def _python_value(v):
    """HDF5 attribute -> plain Python value (bytes decoded, NumPy scalars unwrapped)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return _python_value(v.item())
    return v


@dataclasses.dataclass(frozen=True, eq=False)
class FastMRISlice:
    """One slice of a fastMRI volume.

    Attributes:
      kspace: complex64 ``(H, W)`` (single-coil) or ``(C, H, W)`` (multi-coil),
        centred; in test files already zero off ``mask``.
      target: float32 ``(h, w)``, the stored ``reconstruction_esc`` (single-coil) or
        ``reconstruction_rss`` (multi-coil) of this slice, or ``None`` (test files).
      mask: bool ``(H, W)`` centred sampling mask of a test file (the stored column
        mask broadcast over rows), or ``None`` when the file has none.
      attrs: the file's attributes as plain Python values (``acquisition``, ``max``,
        ``norm``, ``patient_id``, ``acceleration``, ``num_low_frequency``, ...).
      header: :func:`parse_ismrmrd_header` of the file's header (``{}`` if absent).
      path: the file.
      index: the slice index in the volume.
    """

    kspace: np.ndarray
    target: np.ndarray | None
    mask: np.ndarray | None
    attrs: dict
    header: dict
    path: str
    index: int

    @property
    def multicoil(self) -> bool:
        return self.kspace.ndim == 3

    @property
    def recon_size(self) -> tuple[int, int]:
        """``(rows, cols)`` of the target: the stored target's, else the header's, else 320x320."""
        if self.target is not None:
            return tuple(self.target.shape[-2:])
        if "recon_size" in self.header:
            return tuple(self.header["recon_size"][:2])
        return (320, 320)


def _open(path):
    h5py = _h5py()
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise FastMRIFileError(p, None, f"not a readable HDF5 file ({e})") from e


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What validation found out about a file (all static: shapes, dtypes, small datasets)."""

    num_slices: int
    slice_shape: tuple  # (H, W) or (C, H, W)
    target_key: str | None
    target_shape: tuple | None  # (h, w)
    mask: np.ndarray | None  # bool (H, W)
    attrs: dict
    header: dict

    @property
    def multicoil(self) -> bool:
        return len(self.slice_shape) == 3


def _validate(hf, path) -> _Layout:
    """Check a fastMRI file's layout; raise :class:`FastMRIFileError` naming the file and key."""
    h5py = _h5py()
    if KSPACE_KEY not in hf:
        raise FastMRIFileError(path, KSPACE_KEY, f"missing; the file holds {sorted(hf.keys())}")
    ks = hf[KSPACE_KEY]
    if not isinstance(ks, h5py.Dataset):
        raise FastMRIFileError(path, KSPACE_KEY, "is a group, expected a dataset")
    if ks.dtype.kind != "c":
        raise FastMRIFileError(path, KSPACE_KEY, f"has dtype {ks.dtype}, expected complex64")
    if ks.ndim not in (3, 4):
        raise FastMRIFileError(
            path, KSPACE_KEY,
            f"has shape {ks.shape} (rank {ks.ndim}); expected [slices, H, W] (single-coil) or "
            "[slices, coils, H, W] (multi-coil)")
    if ks.shape[0] == 0 or 0 in ks.shape:
        raise FastMRIFileError(path, KSPACE_KEY, f"is empty (shape {ks.shape})")
    num_slices, slice_shape = ks.shape[0], tuple(ks.shape[1:])
    H, W = slice_shape[-2:]

    target_key = MULTICOIL_TARGET_KEY if ks.ndim == 4 else SINGLECOIL_TARGET_KEY
    target_shape = None
    if target_key in hf:
        t = hf[target_key]
        if not isinstance(t, h5py.Dataset) or t.dtype.kind != "f":
            what = t.dtype if isinstance(t, h5py.Dataset) else "a group"
            raise FastMRIFileError(path, target_key, f"has dtype {what}, expected float32")
        if t.ndim != 3 or t.shape[0] != num_slices:
            raise FastMRIFileError(
                path, target_key,
                f"has shape {t.shape}; expected [{num_slices}, h, w] to match {KSPACE_KEY} {ks.shape}")
        target_shape = tuple(t.shape[1:])
        if target_shape[0] > H or target_shape[1] > W:
            raise FastMRIFileError(
                path, target_key,
                f"is {target_shape[0]}x{target_shape[1]}, larger than the {H}x{W} k-space: it cannot be "
                "the centre crop of the k-space's image")
    else:
        target_key = None

    mask = None
    if MASK_KEY in hf:
        m = hf[MASK_KEY]
        if not isinstance(m, h5py.Dataset) or m.dtype.kind not in "biuf":
            raise FastMRIFileError(path, MASK_KEY, "must be a boolean or 0/1 numeric dataset")
        m = np.asarray(m[()])
        if m.ndim == 1 and m.shape[0] == W:
            m = np.broadcast_to(m.astype(bool), (H, W))
        elif m.shape == (H, W):
            m = m.astype(bool)
        else:
            raise FastMRIFileError(
                path, MASK_KEY, f"has shape {m.shape}; expected [{W}] (columns) or [{H}, {W}]")
        if not np.all((m == 0) | (m == 1)):
            raise FastMRIFileError(path, MASK_KEY, "holds values other than 0 and 1")
        mask = np.array(m, dtype=bool)

    header = {}
    if HEADER_KEY in hf:
        try:
            header = parse_ismrmrd_header(hf[HEADER_KEY][()])
        except (ValueError, TypeError) as e:
            raise FastMRIFileError(path, HEADER_KEY, str(e)) from e

    attrs = {k: _python_value(v) for k, v in hf.attrs.items()}
    return _Layout(num_slices, slice_shape, target_key, target_shape, mask, attrs, header)


class FastMRIVolume:
    """A lazy, validated view of one fastMRI volume; indexing reads one slice.

    Use as a context manager (or call :meth:`close`)::

        with read_volume("file1000001.h5") as vol:
            print(len(vol), vol.multicoil, vol.header["recon_size"])
            s = vol[len(vol) // 2]          # reads only that slice
            x = target_image(s.kspace, s.recon_size)

    Attributes:
      path: the file.
      attrs, header, mask: as in :class:`FastMRISlice` (shared by all slices).
      slice_shape: ``(H, W)`` or ``(C, H, W)``.
      target_key: ``"reconstruction_esc"`` / ``"reconstruction_rss"``, or ``None``.
    """

    def __init__(self, path):
        self.path = str(path)
        self._file = _open(path)
        try:
            self._layout = _validate(self._file, self.path)
        except BaseException:
            self._file.close()
            raise

    # Static facts about the volume.
    def __len__(self) -> int:
        return self._layout.num_slices

    @property
    def slice_shape(self) -> tuple:
        return self._layout.slice_shape

    @property
    def multicoil(self) -> bool:
        return self._layout.multicoil

    @property
    def target_key(self) -> str | None:
        return self._layout.target_key

    @property
    def attrs(self) -> dict:
        return dict(self._layout.attrs)

    @property
    def header(self) -> dict:
        return dict(self._layout.header)

    @property
    def mask(self) -> np.ndarray | None:
        m = self._layout.mask
        return None if m is None else m.copy()

    def __getitem__(self, index) -> FastMRISlice:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"slice index must be an int, got {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.path}: slice {index} out of range for {n} slices")
        index = int(index) % n
        if not self._file:
            raise ValueError(f"{self.path}: the volume has been closed")
        # h5py hyperslab selection: only this slice is read from disk.
        kspace = np.asarray(self._file[KSPACE_KEY][index], dtype=np.complex64)
        target = None
        if self._layout.target_key is not None:
            target = np.asarray(self._file[self._layout.target_key][index], dtype=np.float32)
        return FastMRISlice(kspace=kspace, target=target, mask=self.mask, attrs=self.attrs,
                            header=self.header, path=self.path, index=index)

    def __iter__(self) -> Iterator[FastMRISlice]:
        for i in range(len(self)):
            yield self[i]

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        kind = "multi-coil" if self.multicoil else "single-coil"
        return f"FastMRIVolume({self.path!r}, {len(self)} slices of {self.slice_shape}, {kind})"


def read_volume(path) -> FastMRIVolume:
    """Open and validate a fastMRI ``.h5`` volume for lazy slice access (see :class:`FastMRIVolume`).

    Raises:
      FileNotFoundError: no such file.
      FastMRIFileError: not HDF5, or a key is missing or has the wrong rank/dtype/shape
        (the message names the file and the key).
      ImportError: h5py is not installed (``pip install mrijax[data]``).
    """
    return FastMRIVolume(path)


def read_slice(path, index: int) -> FastMRISlice:
    """Read slice ``index`` of a fastMRI ``.h5`` volume, reading only that slice's data.

    Args:
      path: the file.
      index: slice index (negative counts from the end).

    Returns:
      A :class:`FastMRISlice`.  ``target_image(s.kspace, s.recon_size)`` reproduces
      ``s.target`` on training/validation files.
    """
    with read_volume(path) as vol:
        return vol[index]


# --------------------------------------------------------------------------- iterator


def mask_seed(fname: str, seed: int) -> int:
    """The mask seed of one file: ``crc32(f"{seed}/{basename}")``, in ``[0, 2**32)``.

    fastMRI seeds each file's mask from its name so all slices of a volume share a
    mask and runs agree; this is the same idea, deterministic on every platform
    and independent of the folder the file sits in.  The masks are *not* fastMRI's
    own: fastMRI seeds NumPy's legacy ``RandomState`` with the name's character codes,
    and :mod:`mrijax.masks` draws from ``default_rng``; the mask *law* is the same.
    """
    name = os.path.basename(str(fname))
    return zlib.crc32(f"{int(seed)}/{name}".encode("utf-8"))


def _ifft1c_np(k, axis):
    return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=axis), axis=axis, norm="ortho"), axes=axis)


def _fft1c_np(x, axis):
    return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(x, axes=axis), axis=axis, norm="ortho"), axes=axis)


def _ifft2c_np(k):
    return _ifft1c_np(_ifft1c_np(k, -1), -2)


def _prepare_slice(kspace, shape):
    """Crop/pad one slice to ``shape`` in the image domain; return (k-space, magnitude/RSS target)."""
    for axis, size in ((-2, shape[0]), (-1, shape[1])):
        if kspace.shape[axis] != size:
            # Cropping in the image domain removes readout oversampling (fastMRI's 640 rows
            # hold a 2x field of view) instead of discarding high frequencies.  The crop is
            # done with 1-D transforms along the changed axis only, so the other axis is
            # untouched: unsampled columns of a test file stay exactly zero.
            image = _ifft1c_np(kspace, axis)
            target_shape = list(image.shape[-2:])
            target_shape[axis] = size
            kspace = _fft1c_np(center_crop_or_pad(image, target_shape), axis)
    magnitude = np.abs(_ifft2c_np(kspace))
    if kspace.ndim == 3:
        magnitude = np.sqrt(np.sum(magnitude ** 2, axis=0))
    return kspace.astype(np.complex64), magnitude.astype(np.float32)


def _check_shape(shape):
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape)):
        raise ValueError(f"shape must be (H, W) with positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def iterate_slices(folder, shape, batch_size: int, seed: int,
                   mask_fn: Callable | None = None,
                   slice_filter: Callable[[str, int, int], bool] | None = None,
                   shuffle: bool = True, drop_remainder: bool = True) -> Iterator[dict]:
    """One pass over the slices of a folder of fastMRI volumes, in fixed-shape NumPy batches.

    Every ``*.h5`` file in ``folder`` (not recursive) is opened and validated first,
    so a bad file raises :class:`FastMRIFileError` before any batch is made.  Each
    slice is then cropped or zero-padded to ``shape`` *in the image domain* and
    transformed back, so ``kspace`` is the centred k-space of the cropped image and
    ``target`` is exactly its magnitude (single-coil) or RSS (multi-coil); with
    ``shape`` equal to the stored ``recon_size`` this target equals the stored one.

    Masks are drawn once per file, so every slice of a volume shares one:
    ``mask_fn(shape, seed=mask_seed(fname, seed))`` (e.g.
    ``functools.partial(mrijax.masks.random_lines, acceleration=4,
    center_fraction=0.08)``), the same on every run.  Test files carry their own
    ``mask``; it is used as is (``mask_fn=None``) or intersected with ``mask_fn``'s,
    since their k-space holds nothing outside it.  Without either the mask is all
    ``True``.  The k-space is returned *unmasked*; apply the mask with
    :func:`mrijax.fourier.apply_mask`.

    Args:
      folder: directory of fastMRI ``.h5`` files; all single-coil, or all multi-coil
        with one coil count (so batches stack).
      shape: ``(H, W)`` of every output slice.
      batch_size: slices per batch.
      seed: shuffles the slice order (``np.random.default_rng(seed)``) and, with
        the file name, seeds the masks.
      mask_fn: ``mask_fn(shape, seed=int) -> bool (H, W)`` centred mask, or ``None``.
      slice_filter: ``slice_filter(fname, index, num_slices) -> bool`` keeps a slice
        when true (e.g. drop the edge slices: ``lambda f, i, n: n // 4 <= i < n - n // 4``).
      shuffle: shuffle slices across all files; ``False`` keeps file then slice order.
      drop_remainder: drop the last incomplete batch (fixed shapes for ``jit``).

    Yields:
      dicts of NumPy arrays: ``kspace`` complex64 ``(B, H, W)`` or ``(B, C, H, W)``,
      ``target`` float32 ``(B, H, W)``, ``mask`` bool ``(B, H, W)``, ``fname``
      ``(B,)`` str (file base names), ``slice`` int32 ``(B,)``.
    """
    shape = _check_shape(shape)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    files = sorted(root.glob("*.h5"))
    if not files:
        raise ValueError(f"{root}: no .h5 files")

    # Validate every file (and build its mask) before any slice is read.
    layouts, masks = {}, {}
    for f in files:
        with _open(f) as hf:
            layout = _validate(hf, f)
        layouts[f] = layout
        mask = np.ones(shape, bool)
        if layout.mask is not None:
            stored = layout.mask
            if stored.shape == shape:
                mask = stored.copy()
            elif stored.shape[1] == shape[1] and np.all(stored == stored[:1]):
                # A column mask survives an image-domain crop/pad along H: each k-space
                # column of the result depends only on the same column of the input.
                mask = np.broadcast_to(stored[:1], shape).copy()
            else:
                raise FastMRIFileError(
                    f, MASK_KEY,
                    f"the stored mask of shape {stored.shape} does not carry over to shape {shape}: "
                    "an image-domain crop changes the k-space grid along W (keep W, or use "
                    "shape == the file's k-space shape)")
        if mask_fn is not None:
            drawn = np.asarray(mask_fn(shape, seed=mask_seed(f.name, seed)))
            if drawn.shape != shape or drawn.dtype.kind not in "biu":
                raise ValueError(
                    f"mask_fn returned shape {drawn.shape} dtype {drawn.dtype}; expected bool {shape}")
            mask = mask & drawn.astype(bool)
        masks[f] = mask
    kinds = {layouts[f].slice_shape[:-2] for f in files}
    if len(kinds) != 1:
        detail = ", ".join(f"{f.name}: {layouts[f].slice_shape}" for f in files[:8])
        raise ValueError(f"{root}: files mix single-coil and multi-coil or coil counts, "
                         f"so slices cannot be batched ({detail})")

    examples = []
    for f in files:
        n = layouts[f].num_slices
        for i in range(n):
            if slice_filter is None or slice_filter(f.name, i, n):
                examples.append((f, i))
    order = np.arange(len(examples))
    if shuffle:
        order = np.random.default_rng(int(seed)).permutation(len(examples))

    def batches():
        for start in range(0, len(order), batch_size):
            chosen = [examples[j] for j in order[start:start + batch_size]]
            if len(chosen) < batch_size and drop_remainder:
                return
            kspaces, targets = [], []
            for f, i in chosen:
                with _open(f) as hf:
                    k = np.asarray(hf[KSPACE_KEY][i], dtype=np.complex64)
                k, t = _prepare_slice(k, shape)
                kspaces.append(k)
                targets.append(t)
            yield {
                "kspace": np.stack(kspaces),
                "target": np.stack(targets),
                "mask": np.stack([masks[f] for f, _ in chosen]),
                "fname": np.array([f.name for f, _ in chosen]),
                "slice": np.array([i for _, i in chosen], dtype=np.int32),
            }

    return batches()
