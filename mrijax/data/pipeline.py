"""The seeded data pipeline of training: image sources, masks, augmentation, :class:`BatchSource`.

* :func:`parse_image_spec` -- ``"ellipses:0.5,mni:coronal:0.25,..."`` into weighted sources;
  :func:`load_image_pool` loads the finite pool of one source (lazy for ``fastmri:`` folders).
* :func:`validation_images` -- held-out images for a spec, seeded apart from training.
* :func:`make_mask` -- a boolean mask from :mod:`mrijax.masks` by kind and seed.
* :func:`augment_dihedral` -- the 8 symmetries of the square.
* :class:`BatchSource` -- seeded batches: batch ``i`` is a pure function of ``(seed, i)``
  (images, augmentation, phase, masks; one mask per run, batch, image or fastMRI volume
  (:data:`MASK_MODES`)), so a resumed run sees exactly the batches the uninterrupted run
  would have seen.

Conventions (those of the rest of the library): images ``(..., H, W)``, centred boolean
masks, images scaled to magnitude ``[0, 1]``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from mrijax import masks as mask_library
from mrijax._checks import check_int, is_number
from mrijax.data import fastmri, phantoms
from mrijax.data import images as image_sources

__all__ = ["Batch", "MASK_MODES", "parse_image_spec", "load_image_pool", "validation_images", "make_mask",
           "augment_dihedral", "BatchSource"]

Batch = Dict[str, Any]  # {"target": complex64 (B, H, W), "mask": bool (B, H, W)}


def _seed_int(*words: int) -> int:
    """A 32-bit seed that is a pure function of the words (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


# Streams of randomness per batch, so changing e.g. augmentation does not change the masks.
_STREAM_IMAGES, _STREAM_AUGMENT, _STREAM_PHASE, _STREAM_MASK = 1, 2, 3, 4

MASK_MODES = ("fixed", "per_batch", "per_image", "per_file")


def parse_image_spec(spec: str) -> List[Tuple[str, float]]:
    """``"ellipses:0.5,mni:coronal:0.25,mni:sagittal:0.25"`` -> ``[(source, weight), ...]``.

    Comma-separated sources, each with an optional ``:weight`` suffix (default 1; weights
    are normalised).  A source is ``ellipses`` or ``shepp_logan_variants`` (a fresh
    random-ellipse image or Shepp-Logan variant for every draw: unlimited data) or
    anything :func:`mrijax.data.images.load_images` reads (``shepp_logan``, ``mni``, ``mni:axial``, ``mni:coronal``, ``mni:sagittal``, a
    ``.npy``/``.npz``/``.mat``/... path, ``kspace:PATH``), which is loaded once as a
    finite pool, or ``fastmri:FOLDER`` / ``fastmri_magnitude:FOLDER``, a lazy pool of the
    slices of a folder of fastMRI volumes (:class:`mrijax.data.images.FastMRISlices`),
    e.g. ``"fastmri:/data/knee/singlecoil_train:3,ellipses:1"``.  (A source whose last
    ``:``-part parses as a number takes it as its weight, so a folder or key named like
    a number needs an explicit weight after it.)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"images spec must be a non-empty string, got {spec!r}")
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"images spec {spec!r} has an empty entry")
        name, weight = part, 1.0
        head, sep, tail = part.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
                name = head
            except ValueError:
                pass  # 'mni:axial' or 'file.npz:key', not a weight
        if not weight > 0 or not math.isfinite(weight):
            raise ValueError(f"weight of {name!r} in images spec must be > 0, got {weight}")
        out.append((name, weight))
    return out


def load_image_pool(source: str, size: int, count: Optional[int] = None, seed: int = 0):
    """The finite pool of images of a source other than a generator (``ellipses``,
    ``shepp_logan_variants``); ``count=None``: all it has.

    ``fastmri:FOLDER`` / ``fastmri_magnitude:FOLDER`` give a lazy
    :class:`mrijax.data.images.FastMRISlices` (``len``, ``pool[k]`` reads one slice,
    ``shape``/``dtype`` of the ``(N, size, size)`` array it stands for), so a folder of
    volumes is never loaded into memory.  Every other source is loaded at once by
    :func:`mrijax.data.images.load_images` into an ``(N, size, size)`` array.
    """
    pool = image_sources.fastmri_pool(source, size, count=count)
    if pool is not None:
        return pool
    return np.asarray(image_sources.load_images(source, size, count=count, seed=seed))


def validation_images(spec: str, size: int, count: int, seed: int) -> np.ndarray:
    """``count`` held-out images ``(count, size, size)`` for a spec of :func:`parse_image_spec`.

    The count is split over the sources by weight (at least one each).  ``ellipses`` gives
    ``random_ellipses(size, [seed, j])``: two-word seeds, which no training batch uses
    (:class:`BatchSource` seeds its ellipses with three words), so they are never training
    images.  Other sources give ``count_i`` images evenly spread over what they hold; pick a
    source not used for training (e.g. ``mni:axial`` for a run trained on coronal and
    sagittal slices, or ``fastmri:`` on a validation folder) for truly unseen images.

    Images are magnitudes (``float32``), except those of sources that keep a measured
    phase (:func:`mrijax.data.images.keeps_phase`: ``fastmri:``, ``kspace:``), which stay
    complex as in training; the result is then ``complex64``.
    """
    check_int(count, "count", 1)
    parsed = parse_image_spec(spec)
    weights = np.array([w for _, w in parsed])
    counts = np.maximum(1, np.floor(count * weights / weights.sum()).astype(int))
    counts[0] += count - counts.sum()
    if counts[0] < 1:
        raise ValueError(f"count {count} is too small for the {len(parsed)} sources of {spec!r}")
    parts = []
    for (name, _), c in zip(parsed, counts):
        part = np.asarray(image_sources.load_images(name, size, count=int(c), seed=seed))
        parts.append(part if image_sources.keeps_phase(name) else np.abs(part))
    out = np.concatenate(parts)
    return out.astype(np.complex64 if np.iscomplexobj(out) else np.float32)


def make_mask(kind: str, shape: Tuple[int, int], seed: int, kwargs: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """``mrijax.masks.make(kind, shape, seed=seed, **kwargs)`` as a boolean ``(H, W)`` array;
    ``seed`` is dropped for deterministic kinds that take none (e.g. ``radial``)."""
    kwargs = dict(kwargs or {})
    if _accepts(getattr(mask_library, kind, None), "seed"):
        kwargs["seed"] = seed
    mask = np.asarray(mask_library.make(kind, shape, **kwargs))
    if mask.shape != tuple(shape):
        raise ValueError(f"mask kind {kind!r} gave shape {mask.shape}, expected {tuple(shape)}")
    return mask.astype(bool)


def augment_dihedral(image: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 symmetries of the square: ``rot90`` by ``code % 4`` then a left-right flip if
    ``code >= 4``.  ``code`` in ``0..7``; 0 is the identity."""
    out = np.rot90(image, int(code) % 4, axes=(-2, -1))
    if code >= 4:
        out = out[..., :, ::-1]
    return np.ascontiguousarray(out)


def _normalise_max(images: np.ndarray) -> np.ndarray:
    """Scale each image to max magnitude 1 (all-zero images stay zero)."""
    peak = np.max(np.abs(images), axis=(-2, -1), keepdims=True)
    return images / np.where(peak > 0, peak, 1)


@dataclasses.dataclass
class BatchSource:
    """Seeded training batches: ``source(i)`` is a pure function of ``(seed, i)``.

    ``source(i)`` returns ``{"target": complex64 (B, H, W), "mask": bool (B, H, W)}``.  Each
    image is drawn from one of the ``images`` sources (weighted), put through a random
    symmetry of the square if ``augment``, scaled to max magnitude 1, optionally given a
    smooth random phase (``max_phase > 0``), and paired with a mask:

    * ``mask_mode="fixed"``: one mask for the whole run, drawn with ``mask_seed``;
    * ``"per_batch"``: a new mask every batch (same for its images);
    * ``"per_image"``: a new mask for every image;
    * ``"per_file"``: as fastMRI does, one mask per volume: an image read from a
      ``fastmri:`` folder gets the mask seeded by
      :func:`mrijax.data.fastmri.mask_seed` ``(file, mask_seed)``, so every slice of a
      volume shares it; images of other sources get a new mask each (as ``per_image``).

    Masks come from ``mask_fn(shape, seed)`` if given, else
    ``mrijax.masks.make(mask_kind, shape, seed=seed, **mask_kwargs)``.

    Because nothing depends on earlier batches, resuming at step ``k`` reproduces the
    batches ``k, k+1, ...`` of an uninterrupted run exactly.

    Images are used as magnitudes, except those of sources with a *measured* phase
    (:func:`mrijax.data.images.keeps_phase`): ``fastmri:FOLDER`` single-coil slices and
    ``kspace:PATH`` single-coil k-space stay complex, because a cascade trained on
    single-coil data must see k-space like the scanner's -- the k-space of a magnitude
    image is conjugate-symmetric, real k-space is not.  They are scaled to max modulus 1
    (phase kept), augmented like the rest, and never given a synthetic phase
    (``max_phase`` applies to the magnitude images only).  The simulated measurement is
    then ``mask * F target`` of that complex image, i.e. the centre of the slice's
    measured k-space up to the field-of-view crop and resize.  ``fastmri_magnitude:``
    (and multi-coil volumes, whose RSS target is real) give magnitudes.

    ``fastmri:`` sources are lazy: each draw reads one slice from disk
    (:class:`mrijax.data.images.FastMRISlices`, the last 256 processed images cached),
    so a whole training folder is never held in memory; other sources are loaded once.

    Attributes:
      images: a spec for :func:`parse_image_spec`, or an array ``(N, H, W)`` of images
        (used as magnitudes).
      size: image side (square images).
      batch_size: images per batch.
      seed: the data seed.
      augment: apply random flips/rotations.
      max_phase: maximum smooth phase in radians (0: real images).
      mask_kind, mask_kwargs: passed to ``mrijax.masks.make``.
      mask_mode: one of :data:`MASK_MODES`.
      mask_seed: seed of the fixed mask (default ``seed``).
      pool_count: images to load for a finite (non-generator) source (``None``: all it has).
      mask_fn: optional ``mask_fn((H, W), seed) -> bool (H, W)`` replacing ``mrijax.masks``.
    """

    images: Union[str, np.ndarray]
    size: int
    batch_size: int
    seed: int = 0
    augment: bool = True
    max_phase: float = 0.0
    mask_kind: str = "gaussian_lines"
    mask_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    mask_mode: str = "per_batch"
    mask_seed: Optional[int] = None
    pool_count: Optional[int] = None
    mask_fn: Optional[Callable] = None

    def __post_init__(self):
        check_int(self.size, "size", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.seed, "seed", 0)
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if not is_number(self.max_phase) or not self.max_phase >= 0:
            raise ValueError(f"max_phase must be a number >= 0, got {self.max_phase!r}")
        self.mask_kwargs = dict(self.mask_kwargs)
        if self.mask_seed is None:
            self.mask_seed = self.seed
        # (name, pool or None for a generator); a pool is an array or a lazy FastMRISlices.
        self._sources: List[Tuple[str, Any]] = []
        self._generators: List[Optional[Callable]] = []  # per source: f(size, seed) or None
        self._keep_phase: List[bool] = []  # per source: keep its measured complex images
        if isinstance(self.images, str):
            parsed = parse_image_spec(self.images)
            for name, _ in parsed:
                pool, keep = None, False
                generator = image_sources.image_generator(name)
                if generator is None:
                    pool = load_image_pool(name, self.size, self.pool_count, self.seed)
                    if not isinstance(pool, image_sources.FastMRISlices):
                        pool = np.asarray(pool)
                    if len(pool.shape) != 3 or tuple(pool.shape[1:]) != (self.size, self.size) or len(pool) == 0:
                        raise ValueError(f"image source {name!r} gave shape {tuple(pool.shape)}, expected "
                                         f"(N>0, {self.size}, {self.size})")
                    keep = image_sources.keeps_phase(name) and np.dtype(pool.dtype).kind == "c"
                self._sources.append((name, pool))
                self._generators.append(generator)
                self._keep_phase.append(keep)
            weights = np.array([w for _, w in parsed], np.float64)
        else:
            pool = np.asarray(self.images)
            if pool.ndim != 3 or pool.shape[1:] != (self.size, self.size) or len(pool) == 0:
                raise ValueError(f"images must be a spec string or an array (N>0, {self.size}, {self.size}), "
                                 f"got shape {pool.shape}")
            self._sources.append(("array", pool))
            self._generators.append(None)
            self._keep_phase.append(False)
            weights = np.ones(1)
        self._weights = weights / weights.sum()
        self._fixed_mask = None
        self._file_masks = {}  # per_file: mask seed -> mask (every slice of a volume asks for the same one)
        if self.mask_mode == "fixed":
            self._fixed_mask = self._make_mask(self.mask_seed)

    def _make_mask(self, seed: int) -> np.ndarray:
        shape = (self.size, self.size)
        if self.mask_fn is not None:
            mask = np.asarray(self.mask_fn(shape, seed))
            if mask.shape != shape:
                raise ValueError(f"mask_fn gave shape {mask.shape}, expected {shape}")
            return mask.astype(bool)
        return make_mask(self.mask_kind, shape, seed, self.mask_kwargs)

    @property
    def fixed_mask(self) -> Optional[np.ndarray]:
        """The run's mask for ``mask_mode="fixed"``, else ``None``."""
        return self._fixed_mask

    def picks(self, i: int) -> List[Tuple[int, int]]:
        """Where the images of batch ``i`` come from: ``(source index, pool index)`` per image.

        The source index counts the entries of the ``images`` spec (0 for an array); the
        pool index is ``-1`` for ``ellipses`` / ``shepp_logan_variants`` (a fresh image seeded
        by ``(seed, i, j)``).
        For a ``fastmri:`` source, ``self.pool(s).locate(k)`` gives the file and slice.
        """
        check_int(i, "batch index", 0)
        rng = np.random.default_rng(_seed_int(self.seed, i, _STREAM_IMAGES))
        which = rng.choice(len(self._sources), size=self.batch_size, p=self._weights)
        # The draws are made in this order (source choices, then one index per pool image),
        # so batches of existing specs are unchanged.
        return [(int(s), -1 if self._sources[s][1] is None else int(rng.integers(len(self._sources[s][1]))))
                for s in which]

    def pool(self, s: int):
        """The pool of source ``s`` (an array or a lazy ``FastMRISlices``; ``None`` for a generator
        such as ``ellipses``)."""
        return self._sources[s][1]

    def _draw(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(images, measured)``: the augmented, max-1 images of batch ``i`` and, per image,
        whether it keeps a measured phase."""
        picks = self.picks(i)
        dtype = np.complex64 if any(self._keep_phase) else np.float32
        out = np.empty((self.batch_size, self.size, self.size), dtype)
        measured = np.zeros(self.batch_size, bool)
        for j, (s, k) in enumerate(picks):
            name, pool = self._sources[s]
            if pool is None:  # ellipses / Shepp-Logan variants: a fresh image, seeded by (seed, i, j)
                out[j] = self._generators[s](self.size, [self.seed, i, j])
            elif self._keep_phase[s]:
                out[j] = pool[k]
                measured[j] = True
            else:
                out[j] = np.abs(pool[k])
        if self.augment:
            codes = np.random.default_rng(_seed_int(self.seed, i, _STREAM_AUGMENT)).integers(
                0, 8, self.batch_size)
            out = np.stack([augment_dihedral(im, c) for im, c in zip(out, codes)])
        return _normalise_max(out).astype(dtype), measured

    def images_for(self, i: int) -> np.ndarray:
        """The augmented, max-1 images of batch ``i`` (before synthetic phase), ``(B, H, W)``.

        ``float32`` magnitudes; ``complex64`` when a source keeps its measured phase
        (``fastmri:``, ``kspace:``), whose images are then complex and the rest real-valued.
        """
        return self._draw(i)[0]

    def masks_for(self, i: int) -> np.ndarray:
        """The masks of batch ``i``, ``bool (B, H, W)``."""
        if self.mask_mode == "fixed":
            masks = [self._fixed_mask] * self.batch_size
        elif self.mask_mode == "per_batch":
            masks = [self._make_mask(_seed_int(self.seed, i, _STREAM_MASK))] * self.batch_size
        elif self.mask_mode == "per_file":
            masks = []
            for j, (s, k) in enumerate(self.picks(i)):
                pool = self._sources[s][1]
                if isinstance(pool, image_sources.FastMRISlices):
                    masks.append(self._file_mask(fastmri.mask_seed(pool.locate(k)[0], self.mask_seed)))
                else:
                    masks.append(self._make_mask(_seed_int(self.seed, i, _STREAM_MASK, j)))
        else:
            masks = [self._make_mask(_seed_int(self.seed, i, _STREAM_MASK, j)) for j in range(self.batch_size)]
        return np.stack(masks)

    def _file_mask(self, seed: int) -> np.ndarray:
        if seed not in self._file_masks:
            self._file_masks[seed] = self._make_mask(seed)
        return self._file_masks[seed]

    def iterate(self, start: int = 0):
        """Yield batches ``start, start + 1, ...`` without end (resume with ``start = step``)."""
        check_int(start, "start", 0)
        i = start
        while True:
            yield self(i)
            i += 1

    def __call__(self, i: int) -> Batch:
        images, measured = self._draw(i)
        if self.max_phase > 0:
            # Measured images keep their own phase; the others (real-valued) get a synthetic one.
            target = np.stack([im if measured[j] else
                               phantoms.with_smooth_phase(im.real, [self.seed, i, j, _STREAM_PHASE], self.max_phase)
                               for j, im in enumerate(images)])
        else:
            target = images.astype(np.complex64)
        return {"target": target.astype(np.complex64), "mask": self.masks_for(i)}

    def config(self) -> Dict[str, Any]:
        """JSON-able description (what :mod:`mrijax.checkpoint` stores and compares on resume)."""
        images = self.images if isinstance(self.images, str) else f"<array {tuple(np.shape(self.images))}>"
        return {"data": dict(images=images, size=self.size, batch_size=self.batch_size, seed=self.seed,
                             augment=bool(self.augment), max_phase=float(self.max_phase),
                             pool_count=self.pool_count),
                "mask": dict(kind=self.mask_kind if self.mask_fn is None else getattr(
                    self.mask_fn, "__name__", "custom"), kwargs=self.mask_kwargs,
                    mode=self.mask_mode, seed=self.mask_seed)}


# --------------------------------------------------------------------------- helpers


def _accepts(fn, name: str) -> bool:
    """Whether callable ``fn`` takes a keyword argument ``name``."""
    if fn is None:
        return True  # let masks.make raise its own error for an unknown kind
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


