"""Synthetic test images: Shepp-Logan and seeded variants of it, random "Ell" images, details.

Everything here is NumPy, runs on the host, and returns ``float32`` arrays with
values in ``[0, 1]`` (complex64 for :func:`with_smooth_phase`); wrap the result in
``jnp.asarray`` to move it to a device.  Randomness comes only from the ``seed``
argument, so the same call always gives the same image.

Coordinates.  An image of shape ``(H, W)`` covers the square ``[-1, 1]^2`` (each
axis scaled separately when ``H != W``): ``x`` grows to the right along columns and
``y`` grows *upwards*, so row 0 is the top (``y`` close to 1), as images are shown.
Pixel ``(i, j)`` is sampled at its centre,
``x_j = (j - W//2) * 2 / W`` and ``y_i = -(i - H//2) * 2 / H``.  The origin is
therefore the pixel ``(H//2, W//2)``, the same point that ``fft2c`` treats as the
image centre, so a point-symmetric phantom has a (nearly) real centred k-space.
Angles are in degrees, counter-clockwise from the ``x`` axis.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

__all__ = ["ellipse", "random_ellipses", "random_ellipses_batch", "shepp_logan", "shepp_logan_variant",
           "shepp_logan_variants", "with_smooth_phase"]

# The modified Shepp-Logan phantom of Toft (1996), "The Radon transform: theory and
# implementation", p. 199: the ellipses of Shepp & Logan (1974) with intensities
# raised for visual contrast.  Columns: intensity (added inside the ellipse),
# semi-axis along x, semi-axis along y, centre x, centre y, rotation (degrees).
_MODIFIED_SHEPP_LOGAN = (
    (1.00, 0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (-0.80, 0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (-0.20, 0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (-0.20, 0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.10, 0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.10, 0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.10, 0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.10, 0.0230, 0.0460, 0.06, -0.6050, 0.0),
)
# The original intensities of Shepp & Logan (1974); same geometry.  Their range is
# [0, 2] (the skull is 2), so shepp_logan(modified=False) divides by 2.
_ORIGINAL_SHEPP_LOGAN_INTENSITIES = (2.0, -0.98, -0.02, -0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)


def _image_shape(n, name="n"):
    """``n`` (an int, or an ``(H, W)`` pair) -> ``(H, W)``, validated."""
    if isinstance(n, numbers.Integral) and not isinstance(n, bool):
        shape = (int(n), int(n))
    elif (isinstance(n, Sequence) and len(n) == 2
          and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in n)):
        shape = (int(n[0]), int(n[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (H, W), got {n!r}")
    if min(shape) < 1:
        raise ValueError(f"{name} must be positive, got {n!r}")
    return shape


def _check_supersample(supersample):
    if not isinstance(supersample, numbers.Integral) or isinstance(supersample, bool) or supersample < 1:
        raise ValueError(f"supersample must be an int >= 1, got {supersample!r}")
    return int(supersample)


def _grid(shape, supersample=1):
    """Sample coordinates ``(y, x)``, each of shape ``(H * s, W * s)``.

    With ``s = supersample > 1`` every pixel holds an ``s x s`` grid of sub-pixel
    centres around the pixel centre; :func:`_downsample` averages them back.
    """
    def axis(size):
        pixel = np.arange(size) - size // 2
        offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
        return ((pixel[:, None] + offsets[None, :]).reshape(-1)) * (2.0 / size)

    h, w = shape
    y = -axis(h)  # y grows upwards: row 0 is the top of the picture
    x = axis(w)
    return np.meshgrid(y, x, indexing="ij")


def _downsample(image, supersample):
    if supersample == 1:
        return image
    h, w = image.shape[0] // supersample, image.shape[1] // supersample
    return image.reshape(h, supersample, w, supersample).mean(axis=(1, 3))


def _inside(y, x, center, axes, angle):
    """Boolean mask of the points inside one ellipse (boundary included)."""
    cx, cy = center
    a, b = axes
    theta = np.deg2rad(angle)
    dx, dy = x - cx, y - cy
    # Rotate the point by -theta into the ellipse's own frame.
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _paint(shape, ellipses, supersample):
    """Sum of ``value * indicator(ellipse)`` over ``(value, a, b, cx, cy, angle)`` rows (float64)."""
    y, x = _grid(shape, supersample)
    image = np.zeros(y.shape, np.float64)
    for value, a, b, cx, cy, angle in ellipses:
        image[_inside(y, x, (cx, cy), (a, b), angle)] += value
    return _downsample(image, supersample)


def ellipse(n, center, axes, angle=0.0, value=1.0, *, supersample=1):
    """An image that is ``value`` inside one ellipse and 0 outside: a building block for details.

    Add it to a phantom to plant a detail of known position and size, e.g. a small
    lesion: ``shepp_logan(64) + ellipse(64, (0.2, -0.3), (0.03, 0.03), value=0.2)``
    (clip the sum if it must stay in ``[0, 1]``).

    Args:
      n: image size, an int (square) or ``(H, W)``.
      center: ``(x, y)`` of the centre in the ``[-1, 1]^2`` coordinates of the module
        docstring (``y`` up).
      axes: semi-axes ``(a, b)`` along the ellipse's own ``x`` and ``y`` directions,
        in the same units (1 = half the image width); both > 0.
      angle: counter-clockwise rotation in degrees.
      value: the value inside; any real number (the result is then not in ``[0, 1]``).
      supersample: evaluate ``s x s`` points per pixel and average them, giving
        partial-volume values on the edge (less aliasing in k-space).

    Returns:
      ``float32`` array of shape ``(H, W)``.

    Raises:
      ValueError / TypeError: for a bad size, non-positive axes or non-finite numbers.
    """
    shape = _image_shape(n)
    supersample = _check_supersample(supersample)
    try:
        cx, cy = (float(c) for c in center)
        a, b = (float(s) for s in axes)
    except (TypeError, ValueError) as e:
        raise TypeError(f"center and axes must be pairs of numbers, got center={center!r}, axes={axes!r}") from e
    if not (a > 0 and b > 0 and np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"axes must be two finite positive numbers, got {axes!r}")
    if not (np.isfinite(cx) and np.isfinite(cy) and np.isfinite(angle) and np.isfinite(value)):
        raise ValueError("center, angle and value must be finite")
    image = _paint(shape, [(float(value), a, b, cx, cy, float(angle))], supersample)
    return image.astype(np.float32)


def _shepp_logan_table(modified):
    """The phantom's ellipse rows and the factor that brings its intensities into [0, 1]:
    Toft's modified intensities (scale 1) or the original ones (which reach 2: scale 0.5)."""
    if modified:
        return _MODIFIED_SHEPP_LOGAN, 1.0
    return [(v,) + row[1:] for v, row in zip(_ORIGINAL_SHEPP_LOGAN_INTENSITIES, _MODIFIED_SHEPP_LOGAN)], 0.5


def shepp_logan(n, modified=True, *, supersample=1):
    """The Shepp-Logan head phantom, values in ``[0, 1]``.

    ``modified=True`` (default) is Toft's modified phantom (the one MATLAB's
    ``phantom`` and ``skimage.data.shepp_logan_phantom`` show), with ranges 0 (outside
    and the two dark ellipses), 0.2 (brain), 0.3/0.4 (small details) and 1 (skull).
    ``modified=False`` uses the original Shepp & Logan intensities divided by their
    maximum 2, so that values again lie in ``[0, 1]`` (the soft-tissue contrast is then
    only about 1% of the range).

    Args:
      n: image size, an int (square) or ``(H, W)``.
      modified: Toft's intensities (True) or the original ones (False).
      supersample: ``s x s`` samples per pixel, averaged (edges get partial values).

    Returns:
      ``float32`` array of shape ``(H, W)`` in ``[0, 1]``.
    """
    shape = _image_shape(n)
    supersample = _check_supersample(supersample)
    table, scale = _shepp_logan_table(modified)
    image = _paint(shape, table, supersample) * scale
    # Sums such as 1 - 0.8 - 0.2 are 0 only up to rounding; clip the last ulp.
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _rng(seed, name="seed"):
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"{name} must be a non-negative int, got {seed}")
        return np.random.default_rng(int(seed))
    if (isinstance(seed, Sequence) and len(seed) > 0
            and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in seed)):
        return np.random.default_rng([int(s) for s in seed])
    raise TypeError(
        f"{name} must be a non-negative int, a sequence of them, or a numpy SeedSequence; got {seed!r}")


def _check_range(r, name, low=-np.inf, high=np.inf):
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a pair (low, high) of numbers, got {r!r}") from e
    if not (np.isfinite(lo) and np.isfinite(hi) and low <= lo <= hi <= high):
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {r!r}")
    return lo, hi


def random_ellipses(n, seed, count=None, *, count_range=(5, 15), axis_range=(0.03, 0.3),
                    intensity_range=(-0.4, 0.6), head_intensity_range=(0.3, 0.6), supersample=1):
    """A random "Ell"-style image: ellipses of random size, position, angle and intensity.

    In the spirit of the training images of the Ell 50 network (Jin et al. 2017, used
    by Antun et al. 2020): piecewise-constant images made only of ellipses.  The
    construction, all of it drawn from ``seed``:

    1. a head-like outer ellipse near the centre (semi-axes 0.65-0.9, tilt up to
       15 degrees) of intensity drawn from ``head_intensity_range``;
    2. ``count`` ellipses (drawn uniformly from ``count_range`` when ``None``) with
       centres uniform inside 80% of the outer ellipse, semi-axes uniform in
       ``axis_range``, angles uniform in ``[0, 180)`` and intensities uniform in
       ``intensity_range``; intensities *add* where ellipses overlap, as in
       Shepp-Logan, so overlaps give new grey levels;
    3. the result is set to 0 outside the outer ellipse and clipped to ``[0, 1]``.

    Args:
      n: image size, an int (square) or ``(H, W)``.
      seed: a non-negative int, a sequence of them (``[seed, index]``), or a
        ``numpy.random.SeedSequence``.
      count: number of inner ellipses, or ``None`` to draw it.
      count_range: inclusive ``(low, high)`` for the drawn count.
      axis_range: ``(low, high)`` for the inner semi-axes, in units of half the image.
      intensity_range: ``(low, high)`` for the inner intensities (negative ones are
        darker details).
      head_intensity_range: ``(low, high)`` in ``[0, 1]`` for the outer ellipse.
      supersample: ``s x s`` samples per pixel, averaged.

    Returns:
      ``float32`` array of shape ``(H, W)`` in ``[0, 1]``.
    """
    shape = _image_shape(n)
    supersample = _check_supersample(supersample)
    rng = _rng(seed)
    if count is not None and (not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 0):
        raise ValueError(f"count must be None or an int >= 0, got {count!r}")
    c_lo, c_hi = _check_range(count_range, "count_range", 0)
    if c_lo != int(c_lo) or c_hi != int(c_hi):
        raise ValueError(f"count_range must hold integers, got {count_range!r}")
    a_lo, a_hi = _check_range(axis_range, "axis_range", 0)
    if a_lo <= 0:
        raise ValueError(f"axis_range must be positive, got {axis_range!r}")
    i_lo, i_hi = _check_range(intensity_range, "intensity_range")
    h_lo, h_hi = _check_range(head_intensity_range, "head_intensity_range", 0.0, 1.0)

    # Draw every random number in a fixed order, whatever `count` is, up to the
    # inner ellipses, so that changing one option does not reshuffle the head.
    head_axes = (rng.uniform(0.65, 0.8), rng.uniform(0.75, 0.9))
    head_center = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
    head_angle = rng.uniform(-15.0, 15.0)
    head_value = rng.uniform(h_lo, h_hi)
    drawn_count = int(rng.integers(int(c_lo), int(c_hi) + 1))
    count = drawn_count if count is None else int(count)

    # Centres uniform in a disc (sqrt for uniform area), mapped into the head.
    radius = 0.8 * np.sqrt(rng.uniform(0.0, 1.0, count))
    phi = rng.uniform(0.0, 2 * np.pi, count)
    u, v = radius * np.cos(phi) * head_axes[0], radius * np.sin(phi) * head_axes[1]
    t = np.deg2rad(head_angle)
    cx = head_center[0] + u * np.cos(t) - v * np.sin(t)
    cy = head_center[1] + u * np.sin(t) + v * np.cos(t)
    axes_a = rng.uniform(a_lo, a_hi, count)
    axes_b = rng.uniform(a_lo, a_hi, count)
    angles = rng.uniform(0.0, 180.0, count)
    values = rng.uniform(i_lo, i_hi, count)

    head = (head_value,) + head_axes + head_center + (head_angle,)
    inner = list(zip(values, axes_a, axes_b, cx, cy, angles))
    y, x = _grid(shape, supersample)
    image = np.zeros(y.shape, np.float64)
    inside_head = _inside(y, x, head_center, head_axes, head_angle)
    image[inside_head] = head[0]
    for value, a, b, ex, ey, angle in inner:
        image[_inside(y, x, (ex, ey), (a, b), angle)] += value
    image = np.clip(np.where(inside_head, image, 0.0), 0.0, 1.0)
    return _downsample(image, supersample).astype(np.float32)


def random_ellipses_batch(batch, n, seed, **kwargs):
    """``batch`` independent :func:`random_ellipses` images, shape ``(batch, H, W)``.

    Image ``i`` is exactly ``random_ellipses(n, seed=[seed, i], **kwargs)``, so any
    single image of a batch can be regenerated on its own.

    Args:
      batch: number of images, an int >= 0.
      n: image size, an int or ``(H, W)``.
      seed: a non-negative int.
      **kwargs: passed to :func:`random_ellipses` (``count``, ranges, ``supersample``).

    Returns:
      ``float32`` array ``(batch, H, W)`` in ``[0, 1]``.
    """
    return _seeded_batch(random_ellipses, batch, n, seed, **kwargs)


def _seeded_batch(make, batch, n, seed, **kwargs):
    """``stack([make(n, [seed, i], **kwargs) for i in range(batch)])``, arguments checked."""
    if not isinstance(batch, numbers.Integral) or isinstance(batch, bool) or batch < 0:
        raise ValueError(f"batch must be an int >= 0, got {batch!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    shape = _image_shape(n)
    if batch == 0:
        make(n, 0, **kwargs)  # still validate the options, as a non-empty batch would
        return np.zeros((0,) + shape, np.float32)
    return np.stack([make(n, [int(seed), i], **kwargs) for i in range(batch)])


# How far jitter=1 moves each ellipse of a Shepp-Logan variant (see shepp_logan_variant).
_VARIANT_SHIFT = 0.05      # centre shift per coordinate, in units of half the image width
_VARIANT_AXIS = 0.15       # relative change of each semi-axis
_VARIANT_ANGLE = 10.0      # rotation of each ellipse, degrees
_VARIANT_VALUE = 0.3       # relative change of each intensity
_VARIANT_SPIN = 15.0       # rotation of the whole phantom about the image centre, degrees
_VARIANT_MAX_JITTER = 2.0  # intensity factors stay >= 0.4 and axis factors >= 0.7
# The perturbed skull is kept inside this fraction of the half-width (the phantom's own
# skull reaches 0.92): the whole configuration is shrunk about the centre if needed.
_VARIANT_FIT = 0.95


def _check_jitter(jitter):
    if (not isinstance(jitter, numbers.Real) or isinstance(jitter, bool) or not np.isfinite(jitter)
            or not 0.0 <= jitter <= _VARIANT_MAX_JITTER):
        raise ValueError(f"jitter must be a number in [0, {_VARIANT_MAX_JITTER:g}], got {jitter!r}")
    return float(jitter)


def _rotate(x, y, degrees):
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    return c * x - s * y, s * x + c * y


def _variant_table(table, rng, jitter, rotate):
    """The rows ``(value, a, b, cx, cy, angle)`` of a perturbed Shepp-Logan ``table``.

    Rows 0 (skull) and 1 (the ellipse that carves the brain out of it) are the "head";
    the other rows lie inside the brain.  See :func:`shepp_logan_variant`.
    """
    # Every random number is drawn, in this order, whatever jitter and rotate are: the
    # same seed then gives the same *direction* of perturbation at every jitter, scaled.
    u = rng.uniform(-1.0, 1.0, (len(table), 6))  # per row: dx, dy, a, b, angle, value
    spin = rng.uniform(-1.0, 1.0) * (_VARIANT_SPIN * jitter)
    if not rotate:
        spin = 0.0
    shift = u[:, 0:2] * (_VARIANT_SHIFT * jitter)
    axis = 1.0 + u[:, 2:4] * (_VARIANT_AXIS * jitter)
    turn = u[:, 4] * (_VARIANT_ANGLE * jitter)
    gain = 1.0 + u[:, 5] * (_VARIANT_VALUE * jitter)

    values = [v * g for (v, *_), g in zip(table, gain)]
    # The brain ellipse's factor scales the brain's level (skull + it), not its own value,
    # so the brain stays at its level +-30% (0.2 in the modified phantom) instead of
    # possibly cancelling the skull or going negative.  At jitter 0 both deltas are 0.0.
    v0, v1 = table[0][0], table[1][0]
    values[1] = v1 + (gain[1] - 1.0) * (v0 + v1) - (gain[0] - 1.0) * v0

    # The head: rows 0 and 1 share row 0's draws (one map for both keeps the skull ring
    # whole), a map p -> c0 + d + R(turn) diag(sa, sb) (p - c0) that also carries the
    # centres of the inner ellipses, so they stay where they were inside the brain.
    _, _, _, cx0, cy0, angle0 = table[0]
    (dx, dy), (sa, sb), head_turn = shift[0], axis[0], turn[0]

    def head_map(x, y):
        # In the skull's own frame (its table angle is 0, but keep it general).
        u_, v_ = _rotate(x - cx0, y - cy0, -angle0)
        x_, y_ = _rotate(u_ * sa, v_ * sb, angle0 + head_turn)
        return cx0 + dx + x_, cy0 + dy + y_

    rows = []
    for k, (_, a, b, cx, cy, angle) in enumerate(table):
        x, y = head_map(cx, cy)
        if k < 2:
            rows.append([values[k], a * sa, b * sb, x, y, angle + head_turn])
        else:
            rows.append([values[k], a * axis[k, 0], b * axis[k, 1], x + shift[k, 0], y + shift[k, 1],
                         angle + head_turn + turn[k]])
    rows = np.array(rows, np.float64)
    if spin != 0.0:
        rows[:, 3], rows[:, 4] = _rotate(rows[:, 3], rows[:, 4], spin)
        rows[:, 5] += spin

    # Keep the skull off the border: its bounding box about the image centre.
    _, a, b, cx, cy, angle = rows[0]
    t = np.deg2rad(angle)
    reach = max(abs(cx) + np.hypot(a * np.cos(t), b * np.sin(t)),
                abs(cy) + np.hypot(a * np.sin(t), b * np.cos(t)))
    if reach > _VARIANT_FIT:
        rows[:, 1:5] *= _VARIANT_FIT / reach
    return [tuple(float(v) for v in row) for row in rows]


def shepp_logan_variant(n, seed, *, jitter=1.0, modified=True, rotate=True, supersample=1):
    """A randomly perturbed Shepp-Logan phantom: the phantom's anatomy, not its exact image.

    Training on the one fixed phantom teaches a network that image; training on random
    ellipses (:func:`random_ellipses`) loses the phantom's structure.  A variant keeps the
    structure -- a bright skull ring around a brain holding two dark ellipses and the
    same small bright details -- while every size, position, angle and grey level moves
    a little, so a batch of variants is training (or test) data with the phantom's
    anatomy.  Every ellipse of :func:`shepp_logan`'s table is perturbed; with
    ``u`` a draw uniform in ``[-1, 1]`` (a separate one for each number) and
    ``j = jitter``:

    * centre: each coordinate shifted by ``0.05 j u`` (units of half the image width);
    * semi-axes: each multiplied by ``1 + 0.15 j u``;
    * angle: rotated by ``10 j u`` degrees;
    * intensity (the value the ellipse adds): multiplied by ``1 + 0.3 j u``.  For the
      second ellipse, which carves the brain out of the skull, the factor scales the
      brain's level (skull value + its value, 0.2 in the modified phantom), so the brain
      never cancels or goes negative; the dark ellipses may go below 0 and are clipped
      to 0, as the phantom itself clips them;
    * the skull and the brain ellipse move together (one shift, one pair of axis
      factors, one rotation, drawn for the skull) so the skull ring stays whole, and the
      centres of the inner ellipses follow that same map before their own shift, so they
      stay inside the brain; the skull stays the largest ellipse;
    * with ``rotate=True`` the whole phantom is then rotated about the image centre by
      ``15 j u`` degrees;
    * if the skull would then reach past 95% of the half-width (the phantom's reaches
      92%), everything is shrunk about the image centre until it fits, so the head never
      touches the border.

    The sum is scaled as :func:`shepp_logan` scales it (halved for the original
    intensities), divided by its maximum if that exceeds 1 (a brightened skull keeps its
    contrast to the brain instead of saturating) and clipped to ``[0, 1]``.
    ``jitter=0`` gives exactly ``shepp_logan(n, modified, supersample=supersample)``.
    The random numbers are drawn in a fixed order whatever ``jitter`` and ``rotate`` are,
    so for one seed a smaller ``jitter`` is the same perturbation, proportionally smaller.

    Args:
      n: image size, an int (square) or ``(H, W)``.
      seed: a non-negative int, a sequence of them (``[seed, index]``), or a
        ``numpy.random.SeedSequence``.
      jitter: strength of the perturbation in ``[0, 2]``; 1 (default) is the amounts
        above, 0 the phantom itself.  Up to 1 every inner ellipse stays inside the brain
        and the skull stays the brightest part; beyond, inner ellipses can cross the
        skull ring and grey levels reorder (at 2 intensities vary by +-60%).
      modified: Toft's intensities (True) or the original ones (False), as in
        :func:`shepp_logan`.
      rotate: add the global rotation (True) or not.
      supersample: ``s x s`` samples per pixel, averaged (edges get partial values).

    Returns:
      ``float32`` array of shape ``(H, W)`` in ``[0, 1]``.

    Raises:
      ValueError / TypeError: a bad size, seed, ``jitter`` or ``supersample``.
    """
    shape = _image_shape(n)
    supersample = _check_supersample(supersample)
    jitter = _check_jitter(jitter)
    rng = _rng(seed)
    table, scale = _shepp_logan_table(modified)
    rows = _variant_table(table, rng, jitter, bool(rotate))
    image = _paint(shape, rows, supersample) * scale
    peak = image.max()
    if peak > 1.0:
        image = image / peak
    # As in shepp_logan: sums such as 1 - 0.8 - 0.2 are 0 only up to rounding.
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def shepp_logan_variants(batch, n, seed, **kwargs):
    """``batch`` independent :func:`shepp_logan_variant` images, shape ``(batch, H, W)``.

    Image ``i`` is exactly ``shepp_logan_variant(n, seed=[seed, i], **kwargs)`` (seeded
    as :func:`random_ellipses_batch` seeds its images), so any single image of a batch
    can be regenerated on its own.

    Args:
      batch: number of images, an int >= 0.
      n: image size, an int or ``(H, W)``.
      seed: a non-negative int.
      **kwargs: passed to :func:`shepp_logan_variant` (``jitter``, ``modified``,
        ``rotate``, ``supersample``).

    Returns:
      ``float32`` array ``(batch, H, W)`` in ``[0, 1]``.
    """
    return _seeded_batch(shepp_logan_variant, batch, n, seed, **kwargs)


def with_smooth_phase(image, seed, max_phase=np.pi / 2, *, degree=2):
    """``image * exp(i phase)`` with a smooth random phase: a complex test image.

    Real MR images carry a slowly varying phase (field inhomogeneity, coil phase).
    The phase here is a random polynomial of total degree ``degree`` in the
    ``[-1, 1]^2`` coordinates (no constant term, so it does not just rotate the image),
    scaled so that ``max |phase| = max_phase`` over the image.  Each image of a batch
    gets its own polynomial.

    Args:
      image: real array ``(..., H, W)`` (NumPy or JAX), the magnitude.
      seed: a non-negative int, a sequence of them, or a ``numpy.random.SeedSequence``.
      max_phase: the largest ``|phase|`` in radians, finite and ``>= 0`` (0 gives a
        real image stored as complex).
      degree: polynomial degree >= 1; 1 is a linear ramp (a shift in k-space).

    Returns:
      ``complex64`` NumPy array of ``image``'s shape, with ``|result| == image``.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 axes (..., H, W), got shape {image.shape}")
    if image.dtype.kind not in "biuf":
        raise TypeError(f"image must be real (a magnitude), got dtype {image.dtype}")
    if not (isinstance(max_phase, numbers.Real) and np.isfinite(max_phase) and max_phase >= 0):
        raise ValueError(f"max_phase must be a finite number >= 0, got {max_phase!r}")
    if not isinstance(degree, numbers.Integral) or isinstance(degree, bool) or degree < 1:
        raise ValueError(f"degree must be an int >= 1, got {degree!r}")
    rng = _rng(seed)
    y, x = _grid(image.shape[-2:])
    monomials = np.stack([x ** p * y ** (d - p) for d in range(1, degree + 1) for p in range(d + 1)])
    lead = image.shape[:-2]
    coefficients = rng.standard_normal(lead + (monomials.shape[0],))
    phase = np.tensordot(coefficients, monomials, axes=1)
    peak = np.max(np.abs(phase), axis=(-2, -1), keepdims=True)
    # A 1x1 image has x = y = 0 and so a zero polynomial; keep it real rather than divide by 0.
    phase = np.where(peak > 0, phase * (max_phase / np.where(peak > 0, peak, 1.0)), 0.0)
    return (image.astype(np.float64) * np.exp(1j * phase)).astype(np.complex64)
