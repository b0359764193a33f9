"""One entry point for test images: phantoms, the MNI152 template, or the user's files.

:func:`load_images` is what every experiment's ``--images`` flag calls.  Whatever
the source, it returns ``(N, size, size)`` NumPy images, square, with each image's
magnitude scaled to ``[0, 1]`` and checked finite before anything else runs.

Two sources start from measured k-space rather than images:

* ``fastmri:FOLDER`` -- the slices of a folder of fastMRI volumes, as complex
  single-coil images (measured phase kept) or multi-coil root-sum-of-squares
  images; :class:`FastMRISlices` is the same source as a lazy pool that reads one
  slice per access (what :class:`mrijax.train.BatchSource` trains from).
* ``kspace:PATH`` -- a ``.npy``/``.npz``/``.mat`` array of centred k-space
  (``kspace_uncentred:PATH`` for the ``fft2(x, norm="ortho")`` layout), turned into
  images by :func:`images_from_kspace`.

:func:`load_multicoil_kspace` reads the same multi-coil sources without combining the
coils: ``(N, C, size, size)`` k-space for experiments with coil sensitivity maps.
"""

from __future__ import annotations

import functools
import logging
import pathlib
from typing import Callable

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier
from mrijax._checks import check_finite, check_finite_images
from mrijax.data import fastmri, mni, phantoms
from mrijax.data.io import load_array, load_dicom, load_nifti, resize_square, scale_unit

__all__ = ["FastMRISlices", "SPEC_OPTIONS", "fastmri_pool", "fastmri_slice_image", "image_generator",
           "images_from_kspace", "keeps_phase", "load_images", "load_multicoil_kspace"]

_PHANTOM_NAMES = ("shepp_logan", "shepp-logan", "phantom")
_ELLIPSE_NAMES = ("ellipses",)
_VARIANT_NAMES = ("shepp_logan_variants", "shepp-logan-variants")
_ARRAY_SUFFIXES = (".npy", ".npz", ".mat")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Spec prefixes of the sources that start from measured k-space.  The value says whether
# the phase of single-coil data is kept (fastmri) / whether the layout is uncentred (kspace).
_FASTMRI_PREFIXES = {"fastmri": True, "fastmri_magnitude": False}
_KSPACE_PREFIXES = {"kspace": False, "kspace_uncentred": True}
_KSPACE_SUFFIXES = (".npy", ".npz", ".mat")
SPEC_OPTIONS = ("shepp_logan", "phantom", "ellipses", "shepp_logan_variants", "mni", "mni:axial",
                "mni:coronal", "mni:sagittal", "PATH.npy", "PATH.npz[:KEY]", "PATH.mat[:KEY]", "PATH.h5",
                "PATH.nii", "PATH.nii.gz", "PATH.dcm", "DICOM_FOLDER", "fastmri:FOLDER",
                "fastmri_magnitude:FOLDER", "kspace:PATH.npy", "kspace:PATH.npz[:KEY]",
                "kspace:PATH.mat[:KEY]", "kspace_uncentred:PATH.npy|.npz[:KEY]|.mat[:KEY]")


def image_generator(spec):
    """The generator of a source that draws a fresh image per seed, or ``None``.

    ``ellipses`` gives :func:`mrijax.data.phantoms.random_ellipses` and
    ``shepp_logan_variants`` (or ``shepp-logan-variants``) gives
    :func:`mrijax.data.phantoms.shepp_logan_variant`, both called as ``f(size, seed)``
    with ``seed`` an int or a sequence of ints, returning one ``(size, size)`` float32
    image in ``[0, 1]``: sources of unlimited training data.  Every other spec (files,
    the fixed phantom, ``mni``, ``fastmri:``, ...) is a finite pool: ``None``.
    """
    name = str(spec).strip().lower()
    if name in _ELLIPSE_NAMES or name in _VARIANT_NAMES:

        return phantoms.random_ellipses if name in _ELLIPSE_NAMES else phantoms.shepp_logan_variant
    return None


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
    if a.size == 0:
        raise ValueError(f"{source}: the array is empty (shape {a.shape}): no image to load")
    if a.dtype.kind != "c":
        a = a.astype(np.float64)
    return a


def _fastmri_targets(path, count):

    with fastmri.read_volume(path) as vol:
        idx = _pick(len(vol), count, path)
        out = []
        for i in idx:
            s = vol[int(i)]
            # The stored target's size when there is one, else the header's recon size.
            out.append(np.asarray(fastmri.target_image(s.kspace, s.recon_size)))
    return np.stack(out)


def _load_array(path, key):
    """:func:`mrijax.data.io.load_array`, a missing key raised as ``ValueError`` (a bad ``--images``
    value, like every other) with the reader's message."""

    try:
        return load_array(path, key)
    except KeyError as e:
        raise ValueError(e.args[0] if e.args else str(e)) from e


def _split_key(spec: str):
    """``"data.npz:images"`` -> (Path("data.npz"), "images") when the part before ':' is a file."""
    if ":" in spec and not pathlib.Path(spec).exists():
        head, key = spec.rsplit(":", 1)
        if pathlib.Path(head).is_file() and head.lower().endswith((".npz", ".mat")):
            return pathlib.Path(head), key
    return pathlib.Path(spec), None


def _load_path(spec: str, count):
    """``(images, indices)``: the chosen images of a file or folder and their indices in it."""
    path, key = _split_key(spec)
    name = path.name.lower()
    known = name.endswith(_ARRAY_SUFFIXES + _NIFTI_SUFFIXES + (".h5", ".dcm"))
    if not path.exists():
        if known:
            raise FileNotFoundError(f"--images {spec!r}: no such file {path}")
        raise ValueError(f"unknown image spec {spec!r}: expected one of {', '.join(SPEC_OPTIONS)}")
    if path.is_dir():

        images = load_dicom(path)
    elif name.endswith(_ARRAY_SUFFIXES):
        images = _as_stack(_load_array(path, key), path)
    elif name.endswith(".h5"):
        return _fastmri_targets(path, count), None
    elif name.endswith(_NIFTI_SUFFIXES):

        images = load_nifti(path, axis=2)
    elif name.endswith(".dcm"):

        images = load_dicom(path)
    else:
        raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(SPEC_OPTIONS)}")
    idx = _pick(images.shape[0], count, path)
    return images[idx], idx


# --------------------------------------------------------------------------- k-space sources


def _prefixed(spec, prefixes):
    """``"fastmri:/data/knee"`` -> ``("fastmri", "/data/knee")`` for a known prefix, else ``None``.

    The prefix is case-insensitive; the rest (a path, maybe with ``:KEY``) is kept as given.
    """
    head, sep, rest = str(spec).strip().partition(":")
    if sep and head.lower() in prefixes:
        return head.lower(), rest.strip()
    return None


def keeps_phase(spec) -> bool:
    """Whether the images of ``spec`` carry a *measured* phase that training should keep.

    True for the sources that start from k-space, ``fastmri:...``, ``kspace:...`` and
    ``kspace_uncentred:...``: their single-coil images are complex and their phase is data.
    (Multi-coil data of these sources gives real root-sum-of-squares images anyway.)
    False for everything else, including complex image arrays (``PATH.npy``), which
    :class:`mrijax.train.BatchSource` uses as magnitudes, as it always has.
    ``fastmri_magnitude:...`` is False: it asks for magnitudes.
    """
    found = _prefixed(spec, {**_FASTMRI_PREFIXES, **_KSPACE_PREFIXES})
    return found is not None and found[0] != "fastmri_magnitude"


def _check_kspace(kspace, source) -> np.ndarray:
    """``kspace`` as a complex ``(N, H, W)`` or ``(N, C, H, W)`` NumPy array, or a ValueError."""
    k = np.asarray(kspace)
    if k.dtype.kind != "c":
        raise ValueError(
            f"{source}: k-space must be complex, got dtype {k.dtype} (an array of images "
            "goes without the kspace: prefix)")
    if k.ndim not in (2, 3, 4):
        raise ValueError(
            f"{source}: k-space must have shape (H, W) or (N, H, W) (single-coil) or (N, C, H, W) "
            f"(multi-coil), got shape {k.shape} (rank {k.ndim})")
    if 0 in k.shape:
        raise ValueError(f"{source}: k-space is empty (shape {k.shape})")
    return k[None] if k.ndim == 2 else k


@functools.partial(jax.jit, static_argnums=(1, 2))
def _kspace_to_image(kspace, uncentred: bool, multicoil: bool):

    if uncentred:
        kspace = fourier.from_uncentred_kspace(kspace)
    image = fourier.ifft2c(kspace)
    if multicoil:
        return jnp.sqrt(jnp.sum(jnp.abs(image) ** 2, axis=-3))
    return image


def images_from_kspace(kspace, *, uncentred: bool = False, source: str = "kspace") -> np.ndarray:
    """The images of fully sampled Cartesian k-space, one slice at a time.

    * Single-coil, ``(H, W)`` or ``(N, H, W)``: the complex images ``ifft2c(k)``
      (:func:`mrijax.fourier.ifft2c`, centred orthonormal), phase kept.
    * Multi-coil, ``(N, C, H, W)``: the root-sum-of-squares magnitude
      ``sqrt(sum_c |ifft2c(k_c)|^2)``, fastMRI's multi-coil target.  It needs no coil
      maps, but it is real: the phase is lost and the image is weighted by the coils'
      combined sensitivity ``sqrt(sum_c |S_c|^2)`` (close to flat for a head/knee array).
      A single multi-coil slice must be stored as ``(1, C, H, W)``.

    Args:
      kspace: complex array as above, centred (DC at ``(H//2, W//2)``).
      uncentred: the k-space is in the uncentred layout ``fft2(x, norm="ortho")`` (DC at
        ``[0, 0]``, Deep-MRI-Reconstruction / Invfool); it is converted with
        :func:`mrijax.fourier.from_uncentred_kspace` first.
      source: names the data in error messages (e.g. the file).

    Returns:
      ``complex64`` ``(N, H, W)`` images (single-coil) or ``float32`` ``(N, H, W)`` RSS
      images (multi-coil); ``complex128``/``float64`` for complex128 input under x64.

    Raises:
      ValueError: rank other than 2, 3 or 4, a real (non-complex) array, or an empty axis.
    """
    k = _check_kspace(kspace, source)
    multicoil = k.ndim == 4
    # Slice by slice: bounded memory for big multi-coil arrays, one compilation per shape.
    return np.stack([np.asarray(_kspace_to_image(k[n], bool(uncentred), multicoil)) for n in range(k.shape[0])])


def _read_kspace_file(spec: str, prefix: str):
    """The checked array of a ``kspace:`` / ``kspace_uncentred:`` spec and its name for messages."""
    if not spec:
        raise ValueError(f"--images {prefix}: needs a file, e.g. {prefix}:PATH.npy or {prefix}:PATH.mat:KEY")
    path, key = _split_key(spec)
    if key is None and not path.exists() and ":" in spec:
        head = spec.rsplit(":", 1)[0]
        if head.lower().endswith(_KSPACE_SUFFIXES):  # 'missing.mat:KEY'
            raise FileNotFoundError(f"--images {prefix}:{spec}: no such file {head}")
    if not path.name.lower().endswith(_KSPACE_SUFFIXES):
        raise ValueError(f"--images {prefix}:{spec}: k-space is read from {', '.join(_KSPACE_SUFFIXES)} "
                         f"files, got {path.name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"--images {prefix}:{spec}: no such file {path}")
    where = f"{path}" if key is None else f"{path} [{key!r}]"
    return _check_kspace(_load_array(path, key), where), where


def _load_kspace(spec: str, prefix: str, count):
    """``(images, indices)`` of a ``kspace:`` / ``kspace_uncentred:`` spec (only the chosen slices
    are transformed)."""
    k, where = _read_kspace_file(spec, prefix)
    idx = _pick(k.shape[0], count, where)
    k = k[idx]  # transform only the chosen slices
    return images_from_kspace(k, uncentred=_KSPACE_PREFIXES[prefix], source=where), idx


def fastmri_slice_image(kspace, recon_size, keep_phase: bool = True) -> np.ndarray:
    """One fastMRI slice's image over the reconstructed field of view.

    ``ifft2c(kspace)`` centre-cropped to ``recon_size`` (fastMRI's crop; each side is
    clipped to the k-space's, as fastMRI does for its few brain files narrower than
    320 columns), then:

    * single-coil with ``keep_phase``: that complex image (its magnitude is the stored
      ``reconstruction_esc``);
    * single-coil without ``keep_phase``: its magnitude,
      :func:`mrijax.data.fastmri.target_image`;
    * multi-coil: the root-sum-of-squares over coils, ``target_image`` (the stored
      ``reconstruction_rss``), whatever ``keep_phase`` says.

    Args:
      kspace: centred ``(H, W)`` or ``(C, H, W)`` complex k-space of one slice.
      recon_size: ``(rows, cols)``, e.g. :attr:`mrijax.data.fastmri.FastMRISlice.recon_size`.
      keep_phase: see above.

    Returns:
      ``complex64`` (single-coil, ``keep_phase``) or ``float32`` NumPy ``(rows, cols)``.
    """

    kspace = np.asarray(kspace)
    if kspace.ndim not in (2, 3):
        raise ValueError(f"kspace must be one slice (H, W) or (C, H, W), got shape {kspace.shape}")
    crop = tuple(min(int(r), n) for r, n in zip(recon_size, kspace.shape[-2:]))
    if kspace.ndim == 2 and keep_phase:
        return np.asarray(fastmri.center_crop(fourier.ifft2c(kspace), crop)).astype(np.complex64)
    return np.asarray(fastmri.target_image(kspace, crop)).astype(np.float32)


def _fastmri_files(folder, spec):
    root = pathlib.Path(folder)
    if root.is_file():
        if root.suffix.lower() != ".h5":
            raise ValueError(f"{spec}: {root} is not a fastMRI .h5 file or a folder of them")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{spec}: no such folder {root}")
    files = sorted(root.glob("*.h5"))
    if not files:
        raise ValueError(f"{spec}: {root} holds no .h5 files")
    return files


class FastMRISlices:
    """A lazy pool of training images from a folder of fastMRI volumes.

    Opening the pool validates every ``*.h5`` file of the folder (not recursive; or the
    one file given) with :func:`mrijax.data.fastmri.read_volume` -- layout, keys,
    dtypes -- and lists its slices, without reading any k-space.  ``pool[k]`` then reads
    the one slice it needs (:func:`mrijax.data.fastmri.read_slice`, h5py hyperslab) and
    returns what :func:`load_images` would return for it: :func:`fastmri_slice_image`
    over the slice's reconstructed field of view (``FastMRISlice.recon_size``: the stored
    target's size, else the header's), centre-cropped to a square, resized to
    ``(size, size)`` (:func:`resize_square`, Lanczos-3 on real and imaginary parts) and
    scaled (complex: divided by the largest modulus, phase kept; real: to ``[0, 1]``).
    The last ``cache_size`` images are kept in memory (an LRU cache).

    Pool index ``k`` is the ``k``-th kept slice in file-name then slice order, so a pool
    is a pure function of the folder's contents and the arguments.

    Undersampled test/challenge files (those with a ``mask``) are refused: their
    aliased images are not training targets.  A folder must be all single-coil or all
    multi-coil.

    What training does with these images differs from fastMRI's own pipeline: the
    training scripts simulate k-space from the (resized) image with the masks of
    :mod:`mrijax.train` (a new mask per image or per batch), whereas
    :func:`mrijax.data.fastmri.iterate_slices` yields the measured k-space with one
    seeded mask per file, as fastMRI does.  Use the iterator for experiments on the
    raw k-space; the ``--images=fastmri:`` flag takes every slice (``slice_filter``
    is a Python-API option).

    Example::

        pool = FastMRISlices("knee/singlecoil_train", 128,
                             slice_filter=lambda f, i, n: n // 4 <= i < n - n // 4)
        image = pool[0]                       # complex64 (128, 128), reads one slice
        path, index = pool.locate(0)

    Attributes:
      size: output side.
      keep_phase: whether items are complex (single-coil with ``keep_phase=True``).
      multicoil: whether the volumes are multi-coil (items are RSS images).
      shape, dtype, ndim: as of the array the pool stands for, ``(len, size, size)``.
      files: the volumes, sorted.
    """

    def __init__(self, folder, size: int, *, keep_phase: bool = True, count: int | None = None,
                 slice_filter: Callable[[str, int, int], bool] | None = None, cache_size: int = 256):
        """Args:
          folder: a folder of fastMRI ``.h5`` volumes, or one ``.h5`` file.
          size: output side length.
          keep_phase: single-coil items are the complex images (True) or their magnitudes.
          count: keep this many slices evenly spread over all kept slices (``None``: all).
          slice_filter: ``slice_filter(fname, index, num_slices) -> bool`` keeps a slice
            when true, e.g. without the edge slices (mostly noise in fastMRI knee volumes):
            ``lambda f, i, n: n // 4 <= i < n - n // 4``.
          cache_size: images kept in memory (0: none).
        """

        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if count is not None and (not isinstance(count, (int, np.integer)) or count < 1):
            raise ValueError(f"count must be a positive int or None, got {count!r}")
        if not isinstance(cache_size, (int, np.integer)) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {cache_size!r}")
        self.folder = str(folder)
        source = f"fastMRI source {self.folder!r}"
        self.files = _fastmri_files(folder, source)
        entries, kinds = [], {}
        for f in self.files:
            with fastmri.read_volume(f) as vol:  # validates the layout; reads no k-space
                if vol.mask is not None:
                    raise fastmri.FastMRIFileError(
                        f, fastmri.MASK_KEY, "is an undersampled test/challenge volume; training "
                        "images need fully sampled k-space")
                kinds[f] = vol.multicoil
                n = len(vol)
            entries += [(f, i) for i in range(n) if slice_filter is None or slice_filter(f.name, i, n)]
        if len(set(kinds.values())) > 1:
            detail = ", ".join(f"{f.name}: {'multi' if m else 'single'}-coil" for f, m in list(kinds.items())[:8])
            raise ValueError(f"{source}: mixes single-coil and multi-coil volumes ({detail})")
        if not entries:
            raise ValueError(f"{source}: slice_filter kept no slice of {len(self.files)} volume(s)")
        self._entries = [entries[k] for k in _pick(len(entries), count, source)]
        self.size = int(size)
        self.multicoil = bool(next(iter(kinds.values())))
        self.keep_phase = bool(keep_phase) and not self.multicoil
        self.dtype = np.dtype(np.complex64 if self.keep_phase else np.float32)
        self.ndim = 3
        self._load = functools.lru_cache(maxsize=cache_size)(self._read) if cache_size else self._read

    @property
    def shape(self) -> tuple:
        return (len(self._entries), self.size, self.size)

    def __len__(self) -> int:
        return len(self._entries)

    def _index(self, k) -> int:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"pool index must be an int, got {type(k).__name__}")
        n = len(self._entries)
        if not -n <= k < n:
            raise IndexError(f"pool index {k} out of range for {n} slices")
        return int(k) % n

    def locate(self, k) -> tuple:
        """``(path, slice index)`` of item ``k``."""
        f, i = self._entries[self._index(k)]
        return str(f), int(i)

    def _read(self, k: int) -> np.ndarray:

        f, i = self._entries[k]
        s = fastmri.read_slice(f, i)
        try:
            image = fastmri_slice_image(s.kspace, s.recon_size, self.keep_phase)
        except ValueError as e:  # e.g. a header recon size larger than the k-space
            raise ValueError(f"{f} slice {i}: {e}") from e
        check_finite(image, f"{f} slice {i}")
        return _scale(resize_square(image, self.size))

    def __getitem__(self, k) -> np.ndarray:
        """Item ``k``: ``(size, size)`` complex64 or float32 (a fresh copy)."""
        return np.array(self._load(self._index(k)))

    def load(self) -> np.ndarray:
        """All items at once, ``(len, size, size)``: reads every kept slice."""
        return np.stack([self[k] for k in range(len(self))])

    def __repr__(self):
        kind = "multi-coil RSS" if self.multicoil else ("complex" if self.keep_phase else "magnitude")
        return (f"FastMRISlices({self.folder!r}, {len(self)} slices of {len(self.files)} volume(s), "
                f"{kind}, {self.size}x{self.size})")


def fastmri_pool(spec, size: int, count: int | None = None, cache_size: int = 256):
    """The lazy :class:`FastMRISlices` of a ``fastmri:`` / ``fastmri_magnitude:`` spec, else ``None``."""
    found = _prefixed(spec, _FASTMRI_PREFIXES)
    if found is None:
        return None
    prefix, folder = found
    if not folder:
        raise ValueError(f"--images {prefix}: needs a folder of fastMRI .h5 volumes, e.g. {prefix}:/data/knee")
    return FastMRISlices(folder, size, keep_phase=_FASTMRI_PREFIXES[prefix], count=count, cache_size=cache_size)


def _check_load_args(spec, size, count):
    """The argument checks shared by :func:`load_images` and :func:`load_multicoil_kspace`."""
    if not isinstance(spec, (str, pathlib.PurePath)):
        raise TypeError(f"spec must be a str or path, got {type(spec).__name__}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if count is not None and (not isinstance(count, (int, np.integer)) or count < 1):
        raise ValueError(f"count must be a positive int or None, got {count!r}")


def _preparation_line(source, raw, size, resized) -> str | None:
    """One line saying what :func:`load_images` did to a user's images, or ``None`` if nothing."""
    n, (h, w) = raw.shape[0], raw.shape[-2:]
    side = min(h, w)
    steps = []
    if (h, w) != (side, side):
        steps.append(f"centre-cropped to {side}x{side}")
    if side != size:
        steps.append(f"resized to {size}x{size} (antialiased Lanczos-3)")
    flat = resized.reshape(n, -1)
    if np.iscomplexobj(resized):
        peak = np.abs(flat).max(axis=1)
        if not np.allclose(peak, 1.0, rtol=1e-6):
            steps.append(f"{'each ' if n > 1 else ''}divided by its largest modulus "
                         f"({_span(peak)}), phase kept")
    else:
        lo, hi = flat.min(axis=1), flat.max(axis=1)
        if not (np.allclose(lo, 0.0, atol=1e-7) and np.allclose(hi, 1.0, rtol=1e-6)):
            steps.append(f"{'each ' if n > 1 else ''}scaled to [0, 1] from its own [min, max] "
                         f"(min {_span(lo)}, max {_span(hi)})")
    if not steps:
        return None
    return f"{source}: {n} image(s) of {h}x{w}, " + ", ".join(steps)


def _span(values) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g} to {hi:.4g}"


def load_images(spec, size: int, count: int | None = 1, seed: int = 0,
                log: Callable[[str], None] | None = None) -> np.ndarray:
    """Load ``count`` square test images of side ``size`` from a spec string.

    Spec grammar (case-insensitive names; paths as given):

    * ``shepp_logan`` | ``shepp-logan`` | ``phantom``: the modified Shepp-Logan
      phantom (:func:`mrijax.data.phantoms.shepp_logan`), repeated ``count`` times.
    * ``ellipses``: ``count`` random-ellipse images
      (:func:`mrijax.data.phantoms.random_ellipses_batch`) drawn with ``seed``.
    * ``shepp_logan_variants`` | ``shepp-logan-variants``: ``count`` randomly perturbed
      Shepp-Logan phantoms (:func:`mrijax.data.phantoms.shepp_logan_variants`, default
      jitter: every ellipse moved, resized, turned and re-weighted a little) drawn with
      ``seed``: the phantom's anatomy without one fixed image.
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
    * ``fastmri:FOLDER``: the slices of every fastMRI ``.h5`` volume in ``FOLDER`` (or of
      one ``.h5`` file), in file-name then slice order (:class:`FastMRISlices`).
      Single-coil volumes give *complex* images: ``ifft2c`` of the slice's k-space
      cropped to its reconstructed field of view (the stored target's size, e.g.
      320x320), phase kept -- what a cascade trained on single-coil data needs, since
      the measured k-space of a magnitude image would be conjugate-symmetric, which
      real k-space is not.  Multi-coil volumes give the real root-sum-of-squares
      target.  Undersampled test files are refused.
    * ``fastmri_magnitude:FOLDER``: the same slices as magnitudes (the fastMRI targets,
      equal to ``reconstruction_esc`` / ``_rss``).
    * ``kspace:PATH.npy`` | ``kspace:PATH.npz[:KEY]`` | ``kspace:PATH.mat[:KEY]``: fully
      sampled centred k-space (DC at ``(H//2, W//2)``), ``(N, H, W)`` or ``(H, W)``
      single-coil, giving the complex images ``ifft2c(k)``, or ``(N, C, H, W)``
      multi-coil, giving root-sum-of-squares magnitudes (:func:`images_from_kspace`).
    * ``kspace_uncentred:PATH...``: the same for uncentred k-space ``fft2(x,
      norm="ortho")`` (DC at ``[0, 0]``), converted with
      :func:`mrijax.fourier.from_uncentred_kspace`.

    Prefixes (``mni``, ``fastmri``, ``kspace``, ...) are case-insensitive; paths are
    taken as given.  From a file, a folder or the template, ``count`` images are taken
    evenly spread over those available (``count=1`` is the middle one; ``None`` takes
    all); for k-space and fastMRI sources only those slices are read and transformed.

    Every image is centre-cropped to a square, resized to ``(size, size)`` with an
    antialiased Lanczos-3 filter (:func:`resize_square`) unless it already has that
    size, and scaled: real images to ``[0, 1]`` by their own min and max, complex
    images divided by their largest modulus (phase kept).

    Args:
      spec: the source, as above.
      size: output side length.
      count: number of images; ``None`` for all of a file's (1 for generated ones).
      seed: seeds ``ellipses`` and ``shepp_logan_variants`` (image ``j`` from the
        seed ``[seed, j]``); unused by other sources (they are deterministic).
      log: called once with one line saying what was done to a user's images (files,
        k-space and fastMRI sources): the shape they had, the crop, the resize and the
        scaling; not called when nothing changed, nor for the embedded phantoms and the MNI
        template.  Default: ``logging.getLogger("mrijax.data.images").info``.

    Returns:
      ``float32`` (real sources) or ``complex64`` (complex arrays, single-coil k-space)
      NumPy array ``(N, size, size)``.

    Raises:
      ValueError: unknown spec (the message lists the options), bad count/size,
        unreadable file or a missing ``KEY``, k-space of the wrong rank or not complex, non-finite values
        (the message names the spec and the image's index in its file; a
        :class:`mrijax.data.fastmri.FastMRIFileError`, a ValueError, names the file
        and key of a bad fastMRI volume).
      FileNotFoundError: a path with a known suffix, or a fastMRI folder, that does not exist.
      ImportError: an optional reader (h5py, nibabel, pydicom, nilearn) is missing.
    """
    _check_load_args(spec, size, count)
    text = str(spec).strip()
    name = text.lower()
    source = f"--images {text!r}"
    if log is None:
        log = logging.getLogger(__name__).info
    indices = None
    user = True   # a user's data (file, k-space, fastMRI): what the loader does to it is logged

    if name in _PHANTOM_NAMES:

        images = np.repeat(np.asarray(phantoms.shepp_logan(size))[None], count or 1, axis=0)
        user = False
    elif name in _ELLIPSE_NAMES:

        images = np.asarray(phantoms.random_ellipses_batch(count or 1, size, seed))
        user = False
    elif name in _VARIANT_NAMES:

        images = np.asarray(phantoms.shepp_logan_variants(count or 1, size, seed))
        user = False
    elif name == "mni" or name.startswith("mni:"):

        plane = name.split(":", 1)[1] if ":" in name else "axial"
        images = mni.mni_slices(size=size, plane=plane, count=count)
        user = False
    elif _prefixed(text, _FASTMRI_PREFIXES) is not None:
        images = fastmri_pool(text, size, count=count, cache_size=0).load()
        check_finite_images(images, source)
        log(f"{source}: {images.shape[0]} slice(s), each cropped to its reconstructed field of view, "
            f"centre-cropped to a square, resized to {size}x{size} where needed and scaled "
            + ("(largest modulus 1, phase kept)" if np.iscomplexobj(images) else "to [0, 1]"))
        return images
    elif _prefixed(text, _KSPACE_PREFIXES) is not None:
        prefix, rest = _prefixed(text, _KSPACE_PREFIXES)
        images, indices = _load_kspace(rest, prefix, count)
    else:
        images, indices = _load_path(text, count)

    images = np.asarray(images)
    check_finite_images(images, source, indices)
    resized = resize_square(images, size)
    scaled = _scale(resized)
    check_finite_images(scaled, source, indices)
    if user:
        line = _preparation_line(source, images, size, resized)
        if line is not None:
            log(line)
    return scaled


# --------------------------------------------------------------------------- multi-coil k-space


@functools.partial(jax.jit, static_argnums=1)
def _coil_images(kspace, uncentred: bool):

    if uncentred:
        kspace = fourier.from_uncentred_kspace(kspace)
    return fourier.ifft2c(kspace)


def _multicoil_slice(coil_images, size: int, where: str) -> np.ndarray:
    """``(C, H, W)`` coil images -> ``(C, size, size)`` centred k-space whose RSS image has max 1."""

    coil_images = np.asarray(coil_images)
    check_finite(coil_images, where)
    x = resize_square(coil_images.astype(np.complex64), size)  # centre square crop, Lanczos-3 per part
    peak = float(np.sqrt(np.sum(np.abs(x).astype(np.float64) ** 2, axis=0)).max())
    if not peak > 0:
        raise ValueError(f"{where}: the coil images are all zero")
    return np.asarray(fourier.fft2c(x / np.float32(peak))).astype(np.complex64)


def _single_coil_error(spec, shape, what):
    return ValueError(
        f"--images {spec!r}: {what} is single-coil k-space of shape {tuple(shape)}; multi-coil k-space "
        "(coil maps) needs a coil axis, (N, C, H, W)")


def load_multicoil_kspace(spec, size: int, count: int | None = None) -> np.ndarray:
    """Fully sampled multi-coil centred k-space ``(N, C, size, size)`` from a k-space source.

    Where :func:`load_images` combines the coils of multi-coil data into a real
    root-sum-of-squares image, this keeps them, for experiments that use coil
    sensitivity maps (the SENSE operator of :mod:`mrijax.fourier`).

    Spec grammar (the k-space sources of :func:`load_images`):

    * ``kspace:PATH.npy`` | ``kspace:PATH.npz[:KEY]`` | ``kspace:PATH.mat[:KEY]``: a complex
      array ``(N, C, H, W)`` of fully sampled centred k-space (DC at ``(H//2, W//2)``).
    * ``kspace_uncentred:PATH...``: the same in the uncentred layout ``fft2(x, norm="ortho")``,
      converted with :func:`mrijax.fourier.from_uncentred_kspace`.
    * ``fastmri:FOLDER`` | ``fastmri:FILE.h5`` (or ``fastmri_magnitude:``): the slices of
      multi-coil fastMRI volumes, in file-name then slice order, each cropped first to its
      reconstructed field of view (the stored target's size, else the header's; as
      :func:`fastmri_slice_image` does).  Undersampled test files are refused.

    ``count`` slices evenly spread over those available are read (``None``: all), and
    only those are transformed.  Each slice is processed on its own:

    1. coil images ``ifft2c(k_c)``;
    2. centre-cropped to a square and resized to ``(size, size)`` (:func:`resize_square`:
       antialiased Lanczos-3 on real and imaginary parts, each coil alike);
    3. all coils divided by one factor so that the root-sum-of-squares image
       ``sqrt(sum_c |x_c|^2)`` has maximum 1 (relative coil sensitivities and phases kept);
    4. back to k-space with ``fft2c``.

    Args:
      spec: the source, as above.
      size: output side length.
      count: number of slices, or ``None`` for all.

    Returns:
      ``complex64`` NumPy array ``(N, C, size, size)``, centred.

    Raises:
      ValueError: a spec that is not a k-space source, single-coil data (the message names the
        spec and the shape), k-space that is not complex, non-finite or all-zero coil images,
        bad ``size``/``count``.
      FileNotFoundError: a missing file or folder.
    """
    _check_load_args(spec, size, count)
    text = str(spec).strip()
    size = int(size)

    found = _prefixed(text, _KSPACE_PREFIXES)
    if found is not None:
        prefix, rest = found
        k, where = _read_kspace_file(rest, prefix)
        if k.ndim != 4:
            raise _single_coil_error(text, k.shape, where)
        k = k[_pick(k.shape[0], count, where)]
        uncentred = _KSPACE_PREFIXES[prefix]
        return np.stack([_multicoil_slice(_coil_images(k[n], uncentred), size, f"{where} slice {n}")
                         for n in range(k.shape[0])])

    found = _prefixed(text, _FASTMRI_PREFIXES)
    if found is not None:

        prefix, folder = found
        if not folder:
            raise ValueError(f"--images {prefix}: needs a folder of fastMRI .h5 volumes, e.g. {prefix}:/data/knee")
        pool = FastMRISlices(folder, size, count=count, cache_size=0)  # validates; reads no k-space
        if not pool.multicoil:
            with fastmri.read_volume(pool.files[0]) as vol:
                shape = (len(vol),) + tuple(vol.slice_shape)
            raise _single_coil_error(text, shape, f"{pool.files[0]}")
        out = []
        for j in range(len(pool)):
            path, i = pool.locate(j)
            s = fastmri.read_slice(path, i)
            crop = tuple(min(int(r), n) for r, n in zip(s.recon_size, s.kspace.shape[-2:]))
            coil_images = fastmri.center_crop(np.asarray(fourier.ifft2c(s.kspace)), crop)
            out.append(_multicoil_slice(coil_images, size, f"{path} slice {i}"))
        return np.stack(out)

    raise ValueError(
        f"--images {text!r} is not a multi-coil k-space source: coil maps need kspace:PATH.npy|.npz[:KEY]|"
        ".mat[:KEY] (N, C, H, W), kspace_uncentred:PATH... or fastmri:FOLDER_OR_FILE of multi-coil volumes")
