"""k-space sampling masks.

Every mask is a boolean NumPy array of the image shape ``(H, W)``, *centred* like
the k-space of :func:`mrijax.fourier.fft2c` (DC at ``(H//2, W//2)``).  Line masks
select phase-encode *columns* (indices along ``W``), the same columns in every row.

Randomness.  Every random mask takes a non-negative integer ``seed`` (0 when omitted) and
draws from ``np.random.default_rng(seed)`` (PCG64) using only
``Generator.random`` (uniform doubles in ``[0, 1)``): random permutations are
``argsort`` of uniforms and random integers are ``floor(u * n)``.  That is the
best-documented and most stable corner of NumPy's random API, so a seed gives the
same mask on every platform.  (NumPy's stream-compatibility policy, NEP 19, does
not formally promise identical ``Generator`` streams across NumPy versions, but
``random()`` on PCG64 has not changed since it was introduced.)

Families:

* Cartesian line masks: :func:`random_lines` (fastMRI ``RandomMaskFunc``),
  :func:`equispaced_lines` (fastMRI ``EquiSpacedMaskFunc`` /
  ``EquispacedMaskFractionFunc``), :func:`exact_count_lines` (exactly
  ``W // acceleration`` lines) and :func:`gaussian_lines` (the ``cartesian_mask``
  rule of Schlemper et al.'s Deep-MRI-Reconstruction code).
* 2-D point masks: :func:`poisson_disc` (variable-density Poisson disc, SigPy
  style) and :func:`variable_density_2d` (Gaussian or multilevel density, exact
  point count).
* :func:`radial`: golden-angle or uniform spokes rasterised to the grid.
* :func:`nested`: masks for increasing sampling rates where each lower-rate mask
  is a subset of every higher-rate one (the "more samples" experiment of Antun et
  al. 2020), and :func:`make`, a dispatcher by name for experiment flags.

Impossible requests (acceleration below 1, a centre larger than the line budget,
rates outside ``(0, 1]``, ...) raise ``ValueError`` naming the parameter before any
work is done.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "KINDS",
    "NESTED_KINDS",
    "random_lines",
    "equispaced_lines",
    "exact_count_lines",
    "gaussian_lines",
    "poisson_disc",
    "variable_density_2d",
    "radial",
    "nested",
    "sampling_rate",
    "make",
]

# Golden angle for full diameters (spokes through the centre, period pi):
# pi / golden ratio = pi * (sqrt(5) - 1) / 2, about 111.25 degrees (Winkelmann et al., TMI 2007).
_GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _check_shape(shape) -> tuple[int, int]:
    """Return ``shape`` as ``(H, W)`` of positive Python ints, or raise."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of two ints (H, W), got {shape!r}") from None
    if len(dims) != 2:
        raise ValueError(f"shape must be 2-D (H, W), got {len(dims)} axes: {dims}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"shape must hold ints, got {dims}")
        if d < 1:
            raise ValueError(f"shape must be positive, got {dims}")
    return int(dims[0]), int(dims[1])


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_acceleration(acceleration) -> float:
    acceleration = _check_real(acceleration, "acceleration")
    if acceleration < 1.0:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    return acceleration


def _check_center_fraction(center_fraction) -> float:
    center_fraction = _check_real(center_fraction, "center_fraction")
    if not 0.0 < center_fraction < 1.0:
        raise ValueError(f"center_fraction must lie in (0, 1), got {center_fraction}")
    return center_fraction


def _check_rate(rate, name: str = "rate") -> float:
    rate = _check_real(rate, name)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {rate}")
    return rate


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _uniforms(seed: int, size: int) -> np.ndarray:
    """``size`` uniforms in [0, 1) from ``default_rng(seed)``: the one source of randomness."""
    return np.random.default_rng(seed).random(size)


def _line_budget(width: int, acceleration: float) -> int:
    """``W // acceleration`` lines.

    A relative slack of 1e-9 makes ``acceleration = 1 / rate`` round-trip (e.g.
    ``100 / (1 / 0.3)`` is 29.999999999999996 in floating point but means 30 lines).
    """
    return int(math.floor(width / acceleration * (1.0 + 1e-9)))


def _num_low_frequencies(width: int, center_fraction: float) -> int:
    # Python's round (half to even), exactly as fastMRI's ``round(num_cols * center_fraction)``.
    return int(round(width * center_fraction))


def _center_block(width: int, num_low: int) -> slice:
    """fastMRI's centre block: ``pad = (W - num_low + 1) // 2``.

    For every parity of ``W`` and ``num_low`` this block contains ``W // 2`` (the
    DC column of centred k-space) and is as symmetric about it as parity allows.
    """
    pad = (width - num_low + 1) // 2
    return slice(pad, pad + num_low)


def _columns_to_mask(columns: np.ndarray, height: int) -> np.ndarray:
    return np.repeat(columns[None, :].astype(bool), height, axis=0)


def _top_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Boolean array marking the ``k`` largest keys (ties broken by lower flat index)."""
    flat = keys.reshape(-1)
    chosen = np.zeros(flat.shape, bool)
    if k > 0:
        chosen[np.argsort(-flat, kind="stable")[:k]] = True
    return chosen.reshape(keys.shape)


def _weighted_order_keys(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Efraimidis-Spirakis keys ``log(u) / w`` (larger is earlier).

    Taking the ``k`` largest keys is a draw of ``k`` items without replacement,
    each successive item chosen with probability proportional to its weight among
    those left: the law of ``Generator.choice(n, k, replace=False, p=w/sum(w))``.
    Because one set of keys orders *all* items, the draws for different ``k`` are
    prefixes of one order, hence nested.  Zero weight gives key ``-inf`` (never
    chosen while a positive weight is left).
    """
    keys = np.full(weights.shape, -np.inf)
    positive = weights > 0
    with np.errstate(divide="ignore"):
        keys[positive] = np.log(uniforms[positive]) / weights[positive]
    return keys


def _check_line_budget(num_center: int, budget: float, what: str) -> None:
    if num_center > budget:
        raise ValueError(
            f"{what}: the fully sampled centre has {num_center} lines but the line budget "
            f"W / acceleration is only {budget:g}; lower center_fraction (or sample_n) or "
            f"the acceleration")


# --------------------------------------------------------------------------------------
# Cartesian line masks
# --------------------------------------------------------------------------------------


def random_lines(shape, acceleration, center_fraction=0.08, seed=0) -> np.ndarray:
    """Random phase-encode lines with a fully sampled centre (fastMRI ``RandomMaskFunc``).

    With ``W`` columns the mask keeps

    1. ``num_low = round(W * center_fraction)`` centre columns, the block starting
       at ``pad = (W - num_low + 1) // 2`` exactly as in fastMRI (this block holds
       the DC column ``W // 2``), and
    2. every other column independently with probability
       ``(W / acceleration - num_low) / (W - num_low)``,

    so the *expected* number of columns is ``W / acceleration``; the realised count
    is random.  The columns use ``u = default_rng(seed).random(W)`` and keep column
    ``j`` when ``u[j] < probability``, so for a fixed seed a higher-rate mask
    contains every lower-rate mask (with the same ``num_low``).

    Args:
      shape: ``(H, W)``.
      acceleration: nominal acceleration ``R >= 1``; ``W / R`` lines expected.
      center_fraction: fraction of columns in the fully sampled centre, in (0, 1).
      seed: non-negative int.

    Returns:
      Boolean mask of shape ``(H, W)``, constant along ``H``.

    Raises:
      ValueError: on a bad ``shape``/``acceleration``/``center_fraction``/``seed``
        or when the centre exceeds the line budget ``W / acceleration``.
    """
    height, width = _check_shape(shape)
    acceleration = _check_acceleration(acceleration)
    center_fraction = _check_center_fraction(center_fraction)
    seed = _check_seed(seed)
    num_low = _num_low_frequencies(width, center_fraction)
    budget = width / acceleration
    _check_line_budget(num_low, budget * (1.0 + 1e-9), "random_lines")
    probability = 0.0 if num_low == width else (budget - num_low) / (width - num_low)
    columns = _uniforms(seed, width) < probability
    columns[_center_block(width, num_low)] = True
    return _columns_to_mask(columns, height)


def equispaced_lines(shape, acceleration, center_fraction=0.08, seed=0, fraction=False) -> np.ndarray:
    """Equispaced phase-encode lines plus a fully sampled centre (fastMRI).

    The centre block is the one of :func:`random_lines`.  Outside it:

    * ``fraction=False`` (fastMRI ``EquiSpacedMaskFunc``): every
      ``acceleration``-th column starting at a random offset in
      ``[0, acceleration)``.  The spacing is exact, so together with the centre the
      realised acceleration is *below* ``acceleration``.  ``acceleration`` must be
      an integer here.
    * ``fraction=True`` (fastMRI ``EquispacedMaskFractionFunc``): the spacing is
      the adjusted acceleration
      ``acceleration * (num_low - W) / (num_low * acceleration - W)``, the columns
      are ``around(arange(offset, W - 1, adjusted))`` with a random offset in
      ``[0, round(adjusted))``, so the expected total is close to
      ``W / acceleration`` (lines that fall in the centre are not re-drawn, and
      the rounding can make the spacing uneven, as in fastMRI).

    The offset is ``floor(u * n)`` with ``u = default_rng(seed).random()``.

    Args:
      shape: ``(H, W)``.
      acceleration: ``R >= 1`` (an integer when ``fraction`` is False).
      center_fraction: fraction of columns in the fully sampled centre, in (0, 1).
      seed: non-negative int.
      fraction: use the adjusted spacing of ``EquispacedMaskFractionFunc``.

    Returns:
      Boolean mask of shape ``(H, W)``, constant along ``H``.
    """
    height, width = _check_shape(shape)
    acceleration = _check_acceleration(acceleration)
    center_fraction = _check_center_fraction(center_fraction)
    seed = _check_seed(seed)
    num_low = _num_low_frequencies(width, center_fraction)
    _check_line_budget(num_low, width / acceleration * (1.0 + 1e-9), "equispaced_lines")
    u = float(_uniforms(seed, 1)[0])
    columns = np.zeros(width, bool)
    if not fraction:
        if acceleration != int(acceleration):
            raise ValueError(
                f"acceleration must be an integer for equispaced_lines with fraction=False, "
                f"got {acceleration}; pass fraction=True for a fractional spacing")
        step = int(acceleration)
        offset = int(math.floor(u * step))
        columns[offset::step] = True
    else:
        denominator = num_low * acceleration - width
        if denominator < 0:  # == 0 means the centre alone fills the budget
            adjusted = acceleration * (num_low - width) / denominator
            offset = int(math.floor(u * round(adjusted)))
            picks = np.around(np.arange(offset, width - 1, adjusted)).astype(np.int64)
            columns[picks[picks < width]] = True
    columns[_center_block(width, num_low)] = True
    return _columns_to_mask(columns, height)


def exact_count_lines(shape, acceleration, center_fraction=0.08, seed=0) -> np.ndarray:
    """Exactly ``W // acceleration`` lines: the centre block plus uniform random others.

    The variant of the DL4IA tutorial: ``num_low = round(W * center_fraction)``
    centre columns (placed as in :func:`random_lines`), and the remaining
    ``W // acceleration - num_low`` columns drawn uniformly without replacement
    from the others.  The draw orders the non-centre columns by
    ``u = default_rng(seed).random(W)`` (smallest first), so for a fixed seed a
    higher-rate mask contains every lower-rate one.

    Args:
      shape: ``(H, W)``.
      acceleration: ``R >= 1``; the mask has ``floor(W / R)`` columns.
      center_fraction: fraction of columns in the fully sampled centre, in (0, 1).
      seed: non-negative int.

    Returns:
      Boolean mask of shape ``(H, W)``, constant along ``H``.
    """
    height, width = _check_shape(shape)
    acceleration = _check_acceleration(acceleration)
    center_fraction = _check_center_fraction(center_fraction)
    seed = _check_seed(seed)
    num_low = _num_low_frequencies(width, center_fraction)
    num_lines = _line_budget(width, acceleration)
    _check_line_budget(num_low, num_lines, "exact_count_lines")
    keys = -_uniforms(seed, width)
    center = _center_block(width, num_low)
    keys[center] = np.inf
    return _columns_to_mask(_top_k(keys, num_lines), height)


def _gaussian_line_density(width: int, acceleration: float, sample_n: int) -> np.ndarray:
    """Schlemper's ``cartesian_mask`` density over columns, centre block zeroed.

    ``exp(-(j - c)^2 / (2 (W/10)^2)) + 1 / (2 R)``: a Gaussian of standard deviation
    ``W / 10`` columns plus the uniform floor ``lmda / W`` with
    ``lmda = W / (2 R)``.  The original centres it at ``W / 2``; we use the DC
    column ``c = W // 2`` (the same for even ``W``).
    """
    j = np.arange(width, dtype=np.float64)
    density = np.exp(-0.5 * ((j - width // 2) / (width / 10.0)) ** 2) + 1.0 / (2.0 * acceleration)
    density[_gaussian_center(width, sample_n)] = 0.0
    return density


def _gaussian_center(width: int, sample_n: int) -> slice:
    # The original samples [W//2 - n//2, W//2 + n//2): n lines for even n, n - 1 for odd n.
    # We always take n lines starting at W//2 - n//2 (identical for even n, symmetric for odd n).
    start = width // 2 - sample_n // 2
    return slice(start, start + sample_n)


def gaussian_lines(shape, acceleration, sample_n=10, seed=0) -> np.ndarray:
    """Gaussian-density random lines (Deep-MRI-Reconstruction ``cartesian_mask``).

    The rule of Schlemper et al. (``utils/compressed_sensing.py``), along columns:

    * ``W // acceleration`` lines in total;
    * the ``sample_n`` centre columns ``[W//2 - sample_n//2, ... + sample_n)`` are
      always sampled;
    * the other ``W // acceleration - sample_n`` columns are drawn without
      replacement with probabilities proportional to
      ``exp(-(j - W//2)^2 / (2 (W/10)^2)) + 1 / (2 * acceleration)``.

    The weighted draw uses Efraimidis-Spirakis keys ``log(u) / p`` with
    ``u = default_rng(seed).random(W)``: the same law as the original's
    ``np.random.choice(W, n, replace=False, p)``, but a different stream.

    Orientation: the original draws indices along axis -2 and repeats them along the
    last axis, so it samples *rows*; we sample *columns* (phase encoding along the last
    axis, as the fastMRI masks here do).  ``gaussian_lines(...).T`` is the original's
    orientation for a square image.  The published D5-C5 gains 5-8 dB over zero filling
    in either orientation (4 MNI slices x 3 seeds, measured).

    Args:
      shape: ``(H, W)``.
      acceleration: ``R >= 1`` (need not be an integer).
      sample_n: number of always-sampled centre lines, ``0 <= sample_n <= W // R``.
      seed: non-negative int.

    Returns:
      Boolean mask of shape ``(H, W)`` with exactly ``W // acceleration`` columns.
    """
    height, width = _check_shape(shape)
    acceleration = _check_acceleration(acceleration)
    sample_n = _check_int(sample_n, "sample_n", 0)
    seed = _check_seed(seed)
    num_lines = _line_budget(width, acceleration)
    _check_line_budget(sample_n, num_lines, "gaussian_lines (sample_n)")
    density = _gaussian_line_density(width, acceleration, sample_n)
    keys = _weighted_order_keys(density, _uniforms(seed, width))
    keys[_gaussian_center(width, sample_n)] = np.inf
    return _columns_to_mask(_top_k(keys, num_lines), height)


# --------------------------------------------------------------------------------------
# 2-D point masks
# --------------------------------------------------------------------------------------


def _poisson_radius_profile(height: int, width: int, calib: tuple[int, int]):
    """SigPy's normalised distance outside the calibration box, in [0, sqrt(2)]."""
    y, x = np.mgrid[:height, :width].astype(np.float64)
    dx = np.maximum(np.abs(x - width // 2) - calib[1] / 2.0, 0.0)
    dy = np.maximum(np.abs(y - height // 2) - calib[0] / 2.0, 0.0)
    dx /= max(dx.max(), 1e-12)
    dy /= max(dy.max(), 1e-12)
    return np.sqrt(dx**2 + dy**2)


def _calibration_box(height: int, width: int, calib: tuple[int, int]) -> tuple[slice, slice]:
    return _center_block(height, calib[0]), _center_block(width, calib[1])


# Exclusion radii are rounded up to a multiple of this (in pixels) so that the exclusion
# ellipses can be built once per distinct radius and reused.
_RADIUS_QUANTUM = 1.0 / 64.0


def _poisson_disc_sample(order: list, radius: np.ndarray, scale: tuple[float, float],
                         allowed: np.ndarray) -> np.ndarray:
    """Greedy Poisson-disc selection on the grid (random sequential adsorption).

    Visit pixels in ``order``; take a pixel unless an earlier taken pixel ``p`` has
    it inside ``p``'s exclusion ellipse ``(dy / ry(p))^2 + (dx / rx(p))^2 < 1``
    (``ry = max(1, radius * scale[0])``, ``rx = max(1, radius * scale[1])``), then
    exclude that ellipse around it.  Every pixel is visited, so the result is
    maximal: each allowed pixel is taken or lies in a taken pixel's ellipse (what
    Bridson's algorithm approximates with its ``max_attempts``).
    """
    height, width = allowed.shape
    available = allowed.copy()
    taken = np.zeros_like(allowed)
    available_flat = available.reshape(-1)
    taken_flat = taken.reshape(-1)
    steps = np.ceil(radius.reshape(-1) / _RADIUS_QUANTUM - 1e-9).astype(np.int64).tolist()
    templates: dict[int, tuple[int, int, np.ndarray | None]] = {}
    for index in order:
        if not available_flat[index]:
            continue
        taken_flat[index] = True
        step = steps[index]
        template = templates.get(step)
        if template is None:
            quantised = step * _RADIUS_QUANTUM
            ry = max(quantised * scale[0], 1.0)
            rx = max(quantised * scale[1], 1.0)
            hy, hx = int(ry), int(rx)
            if ry <= 1.0 and rx <= 1.0:  # the ellipse holds only the pixel itself
                template = (0, 0, None)
            else:
                dy = np.arange(-hy, hy + 1) / ry
                dx = np.arange(-hx, hx + 1) / rx
                template = (hy, hx, dy[:, None] ** 2 + dx[None, :] ** 2 >= 1.0)
            templates[step] = template
        hy, hx, keep = template
        if keep is None:
            available_flat[index] = False
            continue
        y, x = divmod(index, width)
        y0, y1 = max(y - hy, 0), min(y + hy + 1, height)
        x0, x1 = max(x - hx, 0), min(x + hx + 1, width)
        available[y0:y1, x0:x1] &= keep[y0 - y + hy:y1 - y + hy, x0 - x + hx:x1 - x + hx]
    return taken


def poisson_disc(shape, acceleration, seed=0, calib=(16, 16), crop_corner=True, tol=0.02,
                 max_iter=40) -> np.ndarray:
    """Variable-density Poisson-disc point mask (SigPy ``poisson`` style), pure NumPy.

    As in SigPy, with ``r`` the normalised distance outside the calibration box
    (0 inside it, 1 at the edge midpoints, ``sqrt(2)`` at the corners), the
    exclusion radius in pixels is ``max(1, (1 + slope * r) * H / max(H, W))``
    along rows and the same with ``W`` along columns, so the density falls off
    like ``1 / (1 + slope * r)^2``.  The points are a greedy Poisson-disc set:
    pixels visited in a random order (``argsort`` of
    ``default_rng(seed).random(H * W)``), each taken unless it lies inside the
    exclusion ellipse of an earlier taken point.  Radii are rounded up to a
    multiple of 1/64 pixel so each exclusion ellipse is built once and reused.
    With ``crop_corner`` only pixels with ``r < 1`` may be taken (SigPy's corner
    crop; SigPy applies it afterwards, we before, so cropped pixels exclude
    nothing).  The ``calib`` box is then fully sampled.

    ``slope`` is found by the Illinois (regula falsi) method on ``log slope`` so
    that the realised acceleration ``H * W / count`` is within ``tol`` (relative)
    of the request; the visiting order is fixed, so the search is deterministic.

    Low accelerations.  On a grid any radius above one pixel excludes the four
    neighbours, which already drops the density to about 0.36, so no slope
    gives accelerations between the fully sampled disc (about 1.3 with the
    corner crop) and about 3.  Below what the smallest slope (``1e-3``) gives,
    the radius becomes ``1 + 1e-3 * max(r - r_full, 0)``: a fully sampled disc
    ``r < r_full`` surrounded by nearest-neighbour-excluded Poisson points, with
    ``r_full`` searched the same way.  (A 60 % undersampled Poisson-disc mask, as
    for AUTOMAP in Antun et al. 2020, is acceleration 2.5 and lands here.)

    Args:
      shape: ``(H, W)``.
      acceleration: target ``R >= 1``.
      seed: non-negative int.
      calib: ``(h, w)`` fully sampled calibration box, centred like the line
        masks' centre block; ``(0, 0)`` for none.
      crop_corner: forbid samples where ``r >= 1`` (the k-space corners).
      tol: relative tolerance on the realised acceleration.
      max_iter: maximum number of regula-falsi steps after the bracketing
        (which itself takes at most about a dozen evaluations).

    Returns:
      Boolean mask of shape ``(H, W)``.

    Raises:
      ValueError: on bad arguments, when the calibration box alone exceeds the
        budget ``H * W / acceleration``, or when the request is out of reach
        within ``tol`` (below the fully sampled allowed region, e.g. under about
        1.3 with ``crop_corner``, or above a handful of points).
    """
    height, width = _check_shape(shape)
    acceleration = _check_acceleration(acceleration)
    seed = _check_seed(seed)
    try:
        calib = tuple(calib)
    except TypeError:
        raise TypeError(f"calib must be a pair of ints (h, w), got {calib!r}") from None
    if len(calib) != 2:
        raise ValueError(f"calib must be a pair of ints (h, w), got {calib}")
    calib = (_check_int(calib[0], "calib[0]", 0), _check_int(calib[1], "calib[1]", 0))
    if calib[0] > height or calib[1] > width:
        raise ValueError(f"calib {calib} does not fit in shape {(height, width)}")
    tol = _check_real(tol, "tol")
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    max_iter = _check_int(max_iter, "max_iter", 2)
    total = height * width
    if calib[0] * calib[1] > total / acceleration:
        raise ValueError(
            f"acceleration {acceleration:g}: the calibration box calib={calib} has "
            f"{calib[0] * calib[1]} points but the budget H*W/acceleration is only "
            f"{total / acceleration:g}; shrink calib or lower the acceleration")

    profile = _poisson_radius_profile(height, width, calib)
    allowed = profile < 1.0 if crop_corner else np.ones((height, width), bool)
    order = np.argsort(_uniforms(seed, total), kind="stable").tolist()
    box = _calibration_box(height, width, calib)
    scale_y = height / max(height, width)
    scale_x = width / max(height, width)
    cache: dict[tuple[float, float], np.ndarray] = {}

    def sample(slope: float, full_radius: float) -> np.ndarray:
        key = (slope, full_radius)
        if key not in cache:
            radius = 1.0 + slope * np.maximum(profile - full_radius, 0.0)
            mask = _poisson_disc_sample(order, radius, (scale_y, scale_x), allowed)
            mask[box] = True
            cache[key] = mask
        return cache[key]

    def realised(slope: float, full_radius: float) -> float:
        return total / np.count_nonzero(sample(slope, full_radius))

    def error_at_log_slope(log_slope: float) -> float:
        return math.log(realised(math.exp(log_slope), 0.0) / acceleration)

    def error_at_full_radius(full_radius: float) -> float:
        return math.log(realised(min_slope, full_radius) / acceleration)

    log_tol = math.log1p(tol)
    min_slope, max_slope = 1e-3, float(2 * max(height, width))
    top_radius = float(profile[allowed].max()) + 1e-9 if allowed.any() else 0.0
    # Bracket log(slope) from slope 1 in factors of 4 (the realised acceleration grows
    # roughly linearly with the slope), then refine by regula falsi.
    log_min, log_max, log_step = math.log(min_slope), math.log(max_slope), math.log(4.0)
    x, f_x = 0.0, error_at_log_slope(0.0)
    direction = -1.0 if f_x > 0.0 else 1.0
    bracket = None
    while abs(f_x) > log_tol:
        x_next = min(max(x + direction * log_step, log_min), log_max)
        f_next = error_at_log_slope(x_next)
        if f_next * f_x <= 0.0:
            bracket = (min(x, x_next), max(x, x_next))
            values = (f_x, f_next) if x < x_next else (f_next, f_x)
            break
        x, f_x = x_next, f_next
        if x in (log_min, log_max):
            break
    if abs(f_x) <= log_tol:
        mask = sample(math.exp(x), 0.0)
    elif bracket is not None:
        best = _illinois(error_at_log_slope, *bracket, *values, log_tol, max_iter)
        mask = sample(math.exp(best), 0.0)
    elif x == log_min:
        # Even the smallest slope under-accelerates: grow a fully sampled centre instead.
        # (On a grid any radius above one pixel excludes the 4-neighbours, so slopes
        # alone cannot reach accelerations between the fully sampled disc and about 3.)
        best = _illinois(error_at_full_radius, 0.0, top_radius, f_x,
                         error_at_full_radius(top_radius), log_tol, max_iter)
        mask = sample(min_slope, best)
    else:
        mask = sample(max_slope, 0.0)
    achieved = total / np.count_nonzero(mask)
    if abs(math.log(achieved / acceleration)) > log_tol:
        extremes = (realised(min_slope, top_radius), realised(max_slope, 0.0))
        raise ValueError(
            f"poisson_disc could not reach acceleration {acceleration:g} within tol={tol:g} "
            f"(closest {achieved:.4g}; this shape, calib and crop_corner reach about "
            f"{extremes[0]:.3g} to {extremes[1]:.3g})")
    return mask.copy()


def _illinois(function, lower: float, upper: float, f_lower: float, f_upper: float,
              tolerance: float, max_iter: int) -> float:
    """Root of a (noisy, monotone) ``function`` bracketed by ``[lower, upper]`` (Illinois method).

    Regula falsi with the Illinois halving keeps a sign-change bracket and converges
    superlinearly on smooth functions; the mask count is a step function with small
    steps, so we stop at ``|function| <= tolerance`` and return the best point seen.
    """
    best = min((abs(f_lower), lower), (abs(f_upper), upper))
    if best[0] <= tolerance or f_lower * f_upper > 0.0:
        return best[1]
    side = 0
    for _ in range(max_iter - 2):
        x = upper - f_upper * (upper - lower) / (f_upper - f_lower)
        if not lower < x < upper:
            x = 0.5 * (lower + upper)
        f_x = function(x)
        if abs(f_x) < best[0]:
            best = (abs(f_x), x)
        if abs(f_x) <= tolerance:
            break
        if f_x * f_upper > 0.0:
            upper, f_upper = x, f_x
            if side == -1:
                f_lower *= 0.5
            side = -1
        else:
            lower, f_lower = x, f_x
            if side == 1:
                f_upper *= 0.5
            side = 1
    return best[1]


def _normalised_radius(height: int, width: int) -> np.ndarray:
    """Distance to the DC pixel in units of the k-space half-widths (0 at DC, ~sqrt(2) in corners)."""
    y = (np.arange(height) - height // 2) / (height / 2.0)
    x = (np.arange(width) - width // 2) / (width / 2.0)
    return np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)


def _multilevel_levels(radius: np.ndarray, center_radius: float) -> np.ndarray:
    """Level 0 inside ``center_radius``, then dyadic annuli ``[c 2^(k-1), c 2^k)``."""
    with np.errstate(divide="ignore"):
        levels = np.floor(np.log2(radius / center_radius)) + 1.0
    return np.maximum(levels, 0.0).astype(np.int64)


def _variable_density_keys(height, width, seed, kind, center_radius, sigma, decay):
    """Priority keys over pixels (larger first); the centre disc gets ``+inf``."""
    radius = _normalised_radius(height, width)
    u = _uniforms(seed, height * width).reshape(height, width)
    if kind == "gaussian":
        keys = _weighted_order_keys(np.exp(-0.5 * (radius / sigma) ** 2), u)
        center = radius < center_radius
    else:  # multilevel
        levels = _multilevel_levels(radius, center_radius)
        center = levels == 0
        sizes = np.bincount(levels.reshape(-1))
        # Rank of each pixel inside its level, in a uniform random order.
        order = np.lexsort((u.reshape(-1), levels.reshape(-1)))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        rank = np.empty(height * width, np.int64)
        rank[order] = np.arange(height * width) - np.repeat(starts, sizes)
        rank = rank.reshape(height, width)
        weight = 2.0 ** (-decay * (levels - 1.0))
        # Pixel number j of level k enters once the level density c * w_k covers it:
        # at c = (j + 1/2) / (w_k |B_k|).  Taking pixels by increasing c gives
        # m_k = min(|B_k|, round(c w_k |B_k|)) in every level, for one c per total.
        # The tiny uniform term breaks exact ties between levels at random.
        entry = (rank + 0.5) / (weight * sizes[levels])
        keys = -(entry * (1.0 + 1e-12 * u))
    keys[center] = np.inf
    return keys, int(np.count_nonzero(center))


def _check_variable_density_args(kind, center_radius, sigma, decay):
    if kind not in ("gaussian", "multilevel"):
        raise ValueError(f"kind must be 'gaussian' or 'multilevel', got {kind!r}")
    center_radius = _check_real(center_radius, "center_radius")
    if center_radius < 0.0 or (kind == "multilevel" and center_radius == 0.0):
        raise ValueError(
            f"center_radius must be {'> 0' if kind == 'multilevel' else '>= 0'} for kind={kind!r}, "
            f"got {center_radius}")
    sigma = _check_real(sigma, "sigma")
    if sigma <= 0.0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    decay = _check_real(decay, "decay")
    if decay < 0.0:
        raise ValueError(f"decay must be >= 0, got {decay}")
    return center_radius, sigma, decay


def _point_budget(height: int, width: int, rate: float, num_center: int) -> int:
    count = int(round(rate * height * width))
    if count < 1:
        raise ValueError(f"rate {rate:g} gives round(rate*H*W) = 0 points for shape {(height, width)}")
    if num_center > count:
        raise ValueError(
            f"rate {rate:g}: the fully sampled centre has {num_center} points but "
            f"round(rate*H*W) is only {count}; lower center_radius or raise the rate")
    return count


def variable_density_2d(shape, rate, seed=0, kind="gaussian", center_radius=0.05, sigma=0.3,
                        decay=1.0) -> np.ndarray:
    """2-D random point mask with exactly ``round(rate * H * W)`` points.

    Radii are measured from the DC pixel in units of the k-space half-widths
    (``rho = sqrt(((i - H//2) / (H/2))^2 + ((j - W//2) / (W/2))^2)``, 1 at the
    edge midpoints).  The disc ``rho < center_radius`` is always fully sampled
    (it holds the DC pixel whenever ``center_radius > 0``).

    * ``kind="gaussian"``: the other points are drawn without replacement with
      probability proportional to ``exp(-rho^2 / (2 sigma^2))`` (Efraimidis-
      Spirakis keys, as in :func:`gaussian_lines`).
    * ``kind="multilevel"``: multilevel random sampling (Adcock, Hansen, Poon &
      Roman) as used in the troublesome-kernel Fourier experiments: level 0 is
      the centre disc, level ``k >= 1`` the dyadic annulus
      ``center_radius * 2^(k-1) <= rho < center_radius * 2^k``.  Level ``k`` is
      sampled uniformly at random with density ``min(1, c * 2^(-decay (k-1)))``,
      ``c`` set so that the total is exact; inner levels saturate first.  The
      per-level counts grow monotonically with ``rate`` and the pixels inside a
      level follow one random order, so masks for one seed are nested in
      ``rate``.

    Both kinds use one priority order per seed (``default_rng(seed).random(H*W)``)
    that does not depend on ``rate``, so a higher-rate mask contains every
    lower-rate mask with the same seed and parameters.

    Args:
      shape: ``(H, W)``.
      rate: sampling rate in (0, 1].
      seed: non-negative int.
      kind: ``"gaussian"`` or ``"multilevel"``.
      center_radius: radius of the fully sampled centre disc (half-width units).
      sigma: Gaussian standard deviation (half-width units), for ``"gaussian"``.
      decay: density ratio ``2^-decay`` between successive dyadic levels, for
        ``"multilevel"`` (1: density halves per level, about ``1 / rho``).

    Returns:
      Boolean mask of shape ``(H, W)``.
    """
    height, width = _check_shape(shape)
    rate = _check_rate(rate)
    seed = _check_seed(seed)
    center_radius, sigma, decay = _check_variable_density_args(kind, center_radius, sigma, decay)
    keys, num_center = _variable_density_keys(height, width, seed, kind, center_radius, sigma, decay)
    count = _point_budget(height, width, rate, num_center)
    return _top_k(keys, count)


# --------------------------------------------------------------------------------------
# Radial
# --------------------------------------------------------------------------------------


def _spoke_angles(start: int, stop: int, n_spokes: int | None, golden: bool) -> np.ndarray:
    index = np.arange(start, stop, dtype=np.float64)
    if golden:
        return np.mod(index * _GOLDEN_ANGLE, math.pi)
    return index * (math.pi / n_spokes)


def _rasterise_spokes(height: int, width: int, angles: np.ndarray) -> np.ndarray:
    """Flat pixel indices hit by each spoke, ``(len(angles), n_points)``; ``-1`` off the grid.

    A spoke is the full line through the DC pixel at angle ``theta`` from the
    ``W`` (column) axis, sampled every half pixel and rounded half away from the
    centre, which makes every spoke exactly point-symmetric about DC.
    """
    half_length = 0.5 * math.hypot(height, width) + 1.0
    steps = int(math.ceil(half_length / 0.5))
    t = 0.5 * np.arange(-steps, steps + 1, dtype=np.float64)
    dy = t[None, :] * np.sin(angles)[:, None]
    dx = t[None, :] * np.cos(angles)[:, None]
    iy = height // 2 + (np.sign(dy) * np.floor(np.abs(dy) + 0.5)).astype(np.int64)
    ix = width // 2 + (np.sign(dx) * np.floor(np.abs(dx) + 0.5)).astype(np.int64)
    inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    return np.where(inside, iy * width + ix, -1)


def _first_spoke(height: int, width: int, n_spokes: int, golden: bool) -> np.ndarray:
    """For each pixel, the index of the first spoke that hits it (``n_spokes`` if none)."""
    first = np.full(height * width, n_spokes, np.int64)
    batch = 256
    for start in range(0, n_spokes, batch):
        stop = min(start + batch, n_spokes)
        pixels = _rasterise_spokes(height, width, _spoke_angles(start, stop, n_spokes, golden))
        spoke = np.broadcast_to(np.arange(start, stop)[:, None], pixels.shape)
        hit = pixels >= 0
        np.minimum.at(first, pixels[hit], spoke[hit])
    return first.reshape(height, width)


def radial(shape, n_spokes, golden=True) -> np.ndarray:
    """Radial spokes through the DC pixel, rasterised to the Cartesian grid.

    Spoke ``n`` is the full line through ``(H//2, W//2)`` at angle
    ``n * 111.246...`` degrees (the golden angle for diameters, ``pi / phi``) when
    ``golden``, else ``n * 180 / n_spokes`` degrees, measured from the column
    axis.  Each spoke crosses the whole grid; it is sampled every half pixel and
    rounded half away from the centre (so every spoke is point-symmetric about
    DC).  Deterministic: no seed.  Golden-angle masks are nested in ``n_spokes``.

    Args:
      shape: ``(H, W)``.
      n_spokes: number of spokes, ``>= 1``.
      golden: golden-angle (True) or uniformly spaced (False) angles.

    Returns:
      Boolean mask of shape ``(H, W)``.
    """
    height, width = _check_shape(shape)
    n_spokes = _check_int(n_spokes, "n_spokes", 1)
    return _first_spoke(height, width, n_spokes, bool(golden)) < n_spokes


def _radial_spokes_for_rates(height: int, width: int, rates: np.ndarray) -> list[int]:
    """Smallest golden-angle spoke counts whose masks reach each rate."""
    total = height * width
    targets = [max(1, math.ceil(rate * total - 1e-9)) for rate in rates]
    limit = 32 * max(height, width) + 64
    n = 8
    while True:
        first = _first_spoke(height, width, n, True)
        coverage = np.cumsum(np.bincount(first.reshape(-1), minlength=n + 1)[:n])
        if coverage[-1] >= max(targets):
            return [int(np.searchsorted(coverage, target, side="left")) + 1 for target in targets]
        if n >= limit:
            raise ValueError(
                f"rates: radial spokes cover only {coverage[-1] / total:.4g} of the grid "
                f"with {n} spokes; {max(rates):g} is not reachable")
        n = min(2 * n, limit)


# --------------------------------------------------------------------------------------
# Nested masks, rates, dispatch
# --------------------------------------------------------------------------------------


def _nested_gaussian_lines(height, width, rates, seed, sample_n=10):
    """Gaussian lines for increasing rates, each mask adding lines to the previous.

    The lowest rate is exactly :func:`gaussian_lines` for that rate and seed.
    Each further rate ``r`` adds ``W // (1/r) - (lines so far)`` lines drawn
    without replacement from the not-yet-sampled columns with ``r``'s own density
    (the Schlemper density's uniform floor depends on the acceleration).  The
    ``i``-th increment uses the ``i``-th block of ``W`` uniforms of
    ``default_rng(seed)``.
    """
    sample_n = _check_int(sample_n, "sample_n", 0)
    order = np.argsort(rates, kind="stable")
    rng = np.random.default_rng(seed)
    columns = np.zeros(width, bool)
    columns[_gaussian_center(width, sample_n)] = True
    masks = [None] * len(rates)
    for position in order:
        acceleration = 1.0 / rates[position]
        num_lines = _line_budget(width, acceleration)
        _check_line_budget(sample_n, num_lines, f"rates[{position}]={rates[position]:g} (sample_n)")
        uniforms = rng.random(width)  # block i of the stream, as gaussian_lines uses block 0
        density = _gaussian_line_density(width, acceleration, sample_n)
        density[columns] = 0.0
        keys = _weighted_order_keys(density, uniforms)
        keys[columns] = np.inf
        columns = _top_k(keys, max(num_lines, int(columns.sum())))
        masks[position] = _columns_to_mask(columns, height)
    return masks


def nested(kind, shape, rates, /, seed=0, **kw) -> np.ndarray:
    """Masks for several sampling rates, each lower-rate mask a subset of the higher.

    For the "more samples" experiment (Antun et al. 2020, Deep-MRI: "all lines
    sampled at a low sampling rate were included at higher sampling rates").
    ``rates`` may come in any order; the subset property follows the rates.

    Per ``kind`` (keywords ``kw`` go to the mask function; line kinds use
    ``acceleration = 1 / rate``):

    * ``"random_lines"``, ``"exact_count_lines"``, ``"variable_density_2d"``: the
      mask for a rate is *identical* to the single mask of that rate and seed;
      those functions order columns/points once per seed, independently of the
      rate, and take prefixes (for ``random_lines`` the Bernoulli threshold grows
      with the rate).
    * ``"gaussian_lines"``: the lowest rate equals :func:`gaussian_lines`; each
      higher rate adds lines drawn from its own density among the unsampled
      columns (the density's floor depends on the acceleration, so one fixed
      order would not follow it).
    * ``"radial"``: golden-angle spokes; each rate gets the smallest number of
      spokes whose mask reaches it (the realised rate is at or just above the
      request).  ``golden=False`` is rejected (uniform angles do not nest).

    ``kind``, ``shape`` and ``rates`` are positional-only, so that
    ``variable_density_2d``'s own ``kind`` can go in ``kw``:
    ``nested("variable_density_2d", shape, rates, kind="multilevel")``.

    Args:
      kind: one of :data:`NESTED_KINDS`.
      shape: ``(H, W)``.
      rates: 1-D sequence of sampling rates in (0, 1].
      seed: non-negative int (ignored by ``"radial"``).
      **kw: further keywords of the mask function (e.g. ``center_fraction``).

    Returns:
      Boolean array ``(len(rates), H, W)``.
    """
    if kind not in NESTED_KINDS:
        raise ValueError(f"kind {kind!r} cannot be nested; nestable kinds: {', '.join(NESTED_KINDS)}")
    height, width = _check_shape(shape)
    seed = _check_seed(seed)
    rate_list = np.atleast_1d(np.asarray(rates, dtype=np.float64))
    if rate_list.ndim != 1 or rate_list.size == 0:
        raise ValueError(f"rates must be a non-empty 1-D sequence, got {rates!r}")
    for index, rate in enumerate(rate_list):
        _check_rate(float(rate), f"rates[{index}]")
    for name in ("acceleration", "rate", "n_spokes", "seed"):
        if name in kw:
            raise TypeError(f"nested() sets {name!r} itself from rates/seed; do not pass it in kw")

    if kind in ("random_lines", "exact_count_lines", "variable_density_2d"):
        function = _FUNCTIONS[kind]
        masks = []
        for index, rate in enumerate(rate_list):
            # Line masks take acceleration = 1 / rate (positionally); 2-D masks take the rate.
            argument = float(rate) if kind == "variable_density_2d" else 1.0 / float(rate)
            try:
                masks.append(function((height, width), argument, seed=seed, **kw))
            except ValueError as error:
                raise ValueError(f"rates[{index}]={rate:g}: {error}") from None
    elif kind == "gaussian_lines":
        masks = _nested_gaussian_lines(height, width, rate_list, seed, **kw)
    else:  # radial
        if not kw.pop("golden", True):
            raise ValueError("golden must be True for nested radial masks (uniform angles do not nest)")
        if kw:
            raise TypeError(f"unexpected keywords for radial: {sorted(kw)}")
        spokes = _radial_spokes_for_rates(height, width, rate_list)
        first = _first_spoke(height, width, max(spokes), True)
        masks = [first < n for n in spokes]
    return np.stack(masks).astype(bool)


def sampling_rate(mask) -> float | np.ndarray:
    """Fraction of sampled k-space points.

    Args:
      mask: boolean (or 0/1) array ``(..., H, W)``.

    Returns:
      A float for a 2-D mask; for a stack ``(..., H, W)`` an array of per-mask rates.
    """
    mask = np.asarray(mask)
    if mask.ndim < 2:
        raise ValueError(f"mask must have at least 2 axes (..., H, W), got shape {mask.shape}")
    rates = np.count_nonzero(mask, axis=(-2, -1)) / (mask.shape[-2] * mask.shape[-1])
    return float(rates) if mask.ndim == 2 else rates


_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "random_lines": random_lines,
    "equispaced_lines": equispaced_lines,
    "exact_count_lines": exact_count_lines,
    "gaussian_lines": gaussian_lines,
    "poisson_disc": poisson_disc,
    "variable_density_2d": variable_density_2d,
    "radial": radial,
}

#: Names accepted by :func:`make`.
KINDS: tuple[str, ...] = tuple(_FUNCTIONS)
#: Names accepted by :func:`nested`.
NESTED_KINDS: tuple[str, ...] = (
    "random_lines", "gaussian_lines", "exact_count_lines", "variable_density_2d", "radial")


def make(kind: str, shape: Sequence[int], /, **kw) -> np.ndarray:
    """Build a mask by name, e.g. ``make("random_lines", (256, 256), acceleration=4, seed=1)``.

    ``kind`` and ``shape`` are positional-only, so ``variable_density_2d``'s own
    ``kind`` passes through: ``make("variable_density_2d", shape, rate=0.2, kind="multilevel")``.

    Args:
      kind: one of :data:`KINDS` (the mask function names).
      shape: ``(H, W)``.
      **kw: the keyword arguments of that function.

    Raises:
      ValueError: for an unknown ``kind``, listing the valid ones.
    """
    if kind not in _FUNCTIONS:
        raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return _FUNCTIONS[kind](shape, **kw)


def for_acceleration(kind: str, shape: Sequence[int], acceleration: float, seed: int = 0, *,
                     sample_n: int | None = None, center_fraction: float | None = None) -> np.ndarray:
    """The mask of ``kind`` for one acceleration ``R``: the translation experiment flags use.

    Line and Poisson-disc kinds take ``R`` directly (``sample_n`` goes to ``gaussian_lines``,
    ``center_fraction`` to the fastMRI-style line kinds, each only where given);
    ``variable_density_2d`` gets ``rate = 1 / R``; ``radial`` the fewest golden-angle
    spokes whose mask samples at least ``1 / R`` of k-space (radial masks take no seed).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    shape = tuple(int(s) for s in shape)
    if kind == "variable_density_2d":
        return make(kind, shape, rate=1.0 / acceleration, seed=seed)
    if kind == "radial":
        return nested("radial", shape, [1.0 / acceleration])[0]
    kw = {"acceleration": acceleration, "seed": seed}
    if kind == "gaussian_lines" and sample_n is not None:
        kw["sample_n"] = sample_n
    if kind in ("random_lines", "equispaced_lines", "exact_count_lines") and center_fraction is not None:
        kw["center_fraction"] = center_fraction
    return make(kind, shape, **kw)
