"""Symbols and text drawn into images, and the regions they occupy (Antun et al., PNAS 2020, Fig. 4).

The structural-change test adds small, clearly visible details ``r`` to an image ``x``
-- the card suits ``♠ ♥ ♦ ♣`` and the text ``CAN U SEE IT`` -- and asks whether they
are still visible in the reconstruction ``f(A(x + r))``.  This module draws such
details and measures how well a region of an image is reconstructed:

* :func:`render` -- symbols and text at given positions, sizes and intensities, drawn
  from the outlines of the DejaVu Sans font that matplotlib ships (no download), with
  antialiased edges (``supersample x supersample`` points per pixel); returns the
  image and one region mask per symbol.
* :func:`coverage` -- the fraction of every pixel covered by one glyph string.
* :func:`ellipse_coverage`, :func:`ellipse_region` -- an elliptic detail / zone given in
  fractions of the image side (the zones of the zone-targeted attacks).
* :func:`bounding_box`, :func:`region_psnr`, :func:`region_ssim`,
  :func:`region_norms` -- per-region numbers (inside a symbol, inside a zone).

Coordinates.  Positions are fractions of the image side, ``(row, col)``, row 0 at the
top.  A fraction ``f`` of an axis of ``n`` pixels is the continuous pixel coordinate
``f * n``, pixel ``i`` being centred at ``i`` (as matplotlib's ``imshow`` shows it, and as
:mod:`mrijax.data.phantoms` samples it): ``(0.5, 0.5)`` is the pixel ``(H//2, W//2)`` of an
even-sized image, the centre that ``fft2c`` uses.

Rasterisation.  The glyph outlines (``matplotlib.textpath.TextPath``: lines and
quadratic/cubic Bezier curves) are flattened into polygons with ``points_per_curve``
points per curve, and a point is inside when its winding number (the sum over
polygons of ``±1`` for each polygon that contains it, by
``matplotlib.path.Path.contains_points``, signed by the polygon's orientation) is not
zero: TrueType's non-zero rule, which keeps the holes of letters such as ``A`` and
``O``.  (``TextPath.contains_points`` on the whole compound path fills those holes.)
Everything is NumPy on the host and deterministic: the same call gives the same array.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple, Sequence

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import metrics
from mrijax._checks import check_int

__all__ = ["FONT", "SUITS", "Symbol", "TEXT", "bounding_box", "coverage", "default_layout",
           "ellipse_coverage", "ellipse_region", "glyph_polygons", "glyph_text", "region_norms",
           "region_psnr", "region_ssim", "render"]

SUITS = {"spade": "\u2660", "heart": "\u2665", "diamond": "\u2666", "club": "\u2663"}
"""Names of the four card suits and their (black) Unicode characters."""

TEXT = "CAN U SEE IT"
"""The text of Antun et al.'s structural-change test."""

FONT = "DejaVu Sans"
"""The font family used by default (shipped with matplotlib, has the suits)."""


class Symbol(NamedTuple):
    """One item to draw.

    Attributes:
      text: a suit name of :data:`SUITS` (``"spade"``, ``"heart"``, ``"diamond"``,
        ``"club"``) or any literal text (e.g. :data:`TEXT`).
      center: ``(row, col)`` of the centre of the item's bounding box, as fractions of the
        image side (see the module docstring).
      height: height of the item's bounding box (ink, not the font size) as a fraction of
        the image height; the width follows from the glyphs' aspect ratio.
      intensity: the value of a fully covered pixel (negative: a dark symbol).
    """
    text: str
    center: tuple
    height: float
    intensity: float = 1.0


def default_layout(intensity: float = 1.0, text: str = TEXT) -> list:
    """The four suits and ``text`` placed as in the middle of a head image (Fig. 4 style).

    Suits of height 0.08 at rows 0.32 / 0.52 and columns 0.36 / 0.64, the text of height
    0.055 below them at row 0.7.  Fits a 64x64 image and up (at 64x64 the letters are
    about 3.5 pixels high: hard to read, which is the point of the test).
    """
    items = [Symbol("spade", (0.32, 0.36), 0.08, intensity), Symbol("heart", (0.32, 0.64), 0.08, intensity),
             Symbol("diamond", (0.52, 0.36), 0.08, intensity), Symbol("club", (0.52, 0.64), 0.08, intensity)]
    if text:
        items.append(Symbol(text, (0.70, 0.5), 0.055, intensity))
    return items


# ----------------------------------------------------------------------------- checks


def _shape(shape):
    if (isinstance(shape, Sequence) and len(shape) == 2
            and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape)):
        h, w = int(shape[0]), int(shape[1])
        if h >= 1 and w >= 1:
            return h, w
    raise ValueError(f"shape must be a pair of positive ints (H, W), got {shape!r}")


def _finite_pair(value, name):
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}") from e
    if not (np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return a, b


def glyph_text(text: str) -> str:
    """The characters to draw for ``text``: a suit's character for a name of :data:`SUITS`,
    else ``text`` itself."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string (a suit name or text), got {text!r}")
    return SUITS.get(text.lower(), text)


# ----------------------------------------------------------------------------- outlines


def glyph_polygons(text: str, *, family: str = FONT, points_per_curve: int = 8):
    """The outline of ``text`` as closed polygons in font units (y up, font size 1).

    Args:
      text: a suit name or literal text (see :func:`glyph_text`).
      family: the font family (matplotlib's font manager resolves it).
      points_per_curve: points on each Bezier curve of the outline (lines keep 2).

    Returns:
      ``(polygons, signs)``: a list of ``(N_k, 2)`` float64 arrays ``(x, y)``, each closed
      (first point repeated last), and their orientations (``+1`` counter-clockwise,
      ``-1`` clockwise; 0 for degenerate ones).

    Raises:
      ValueError: empty text, a character the font does not have, or a font that
        matplotlib cannot find.
    """
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font
    from matplotlib.path import Path
    from matplotlib.textpath import TextPath

    points_per_curve = check_int(points_per_curve, "points_per_curve", 1)
    chars = glyph_text(text)
    prop = FontProperties(family=family)
    try:
        findfont(prop, fallback_to_default=False)
    except ValueError as e:
        raise ValueError(f"font family {family!r} not found by matplotlib") from e
    # TextPath silently draws a missing character as the font's empty "notdef" glyph.
    font = FT2Font(findfont(prop, fallback_to_default=False))
    missing = sorted({c for c in chars if not c.isspace() and font.get_char_index(ord(c)) == 0})
    if missing:
        raise ValueError(f"font {family!r} cannot draw {text!r}: no glyph for {missing}")
    path = TextPath((0, 0), chars, size=1, prop=prop)

    polygons, current = [], []
    t = np.linspace(0.0, 1.0, points_per_curve)
    for curve, code in path.iter_bezier():
        if code == Path.MOVETO:
            if len(current) > 2:
                polygons.append(np.asarray(current))
            current = [curve.control_points[0]]
        elif code == Path.LINETO or code == Path.CLOSEPOLY:
            current.append(curve.control_points[-1])
        else:  # CURVE3 / CURVE4: sample the Bezier segment (its first point is already there)
            current.extend(curve(t)[1:])
    if len(current) > 2:
        polygons.append(np.asarray(current))
    out, signs = [], []
    for p in polygons:
        p = np.asarray(p, np.float64)
        if not np.allclose(p[0], p[-1]):
            p = np.vstack([p, p[:1]])
        area = 0.5 * np.sum(p[:-1, 0] * p[1:, 1] - p[1:, 0] * p[:-1, 1])
        out.append(p)
        signs.append(int(np.sign(area)))
    if not out:
        raise ValueError(f"{text!r} has no outline to draw (only spaces?)")
    return out, signs


def coverage(shape, text: str, center, height: float, *, supersample: int = 4, family: str = FONT,
             points_per_curve: int = 8) -> np.ndarray:
    """The fraction of each pixel covered by ``text`` drawn at ``center`` with ink height ``height``.

    Args:
      shape: ``(H, W)`` of the image.
      text: a suit name or literal text.
      center: ``(row, col)`` of the centre of the ink's bounding box, fractions of the side.
      height: the ink's bounding-box height as a fraction of ``H`` (> 0).
      supersample: ``s``: each pixel is sampled at an ``s x s`` grid of points and the
        coverage is the fraction inside (``s = 1``: a binary image).
      family, points_per_curve: see :func:`glyph_polygons`.

    Returns:
      float64 ``(H, W)`` in ``[0, 1]``.

    Raises:
      ValueError: bad arguments, or an item whose bounding box leaves the image
        (the whole symbol must be visible, so that its region is its whole extent).
    """
    from matplotlib.path import Path

    h, w = _shape(shape)
    s = check_int(supersample, "supersample", 1)
    cy, cx = _finite_pair(center, "center")
    if not (isinstance(height, numbers.Real) and np.isfinite(height) and height > 0):
        raise ValueError(f"height must be a finite number > 0, got {height!r}")
    polygons, signs = glyph_polygons(text, family=family, points_per_curve=points_per_curve)
    allpts = np.concatenate(polygons)
    x0, y0 = allpts.min(axis=0)
    x1, y1 = allpts.max(axis=0)
    scale = height * h / (y1 - y0)                    # pixels per font unit
    half_w, half_h = 0.5 * (x1 - x0) * scale, 0.5 * height * h
    row_c, col_c = cy * h, cx * w
    # Pixel i spans [i - 1/2, i + 1/2]: the box must stay inside [-1/2, n - 1/2].
    if row_c - half_h < -0.5 or row_c + half_h > h - 0.5 or col_c - half_w < -0.5 or col_c + half_w > w - 0.5:
        raise ValueError(f"{text!r} at center {center} with height {height} does not fit in a {h}x{w} image "
                         f"(its box spans rows {row_c - half_h:.1f}..{row_c + half_h:.1f}, columns "
                         f"{col_c - half_w:.1f}..{col_c + half_w:.1f})")
    # Only the pixels the box touches need samples.
    r0, r1 = max(int(np.floor(row_c - half_h + 0.5)), 0), min(int(np.ceil(row_c + half_h + 0.5)), h)
    c0, c1 = max(int(np.floor(col_c - half_w + 0.5)), 0), min(int(np.ceil(col_c + half_w + 0.5)), w)
    offsets = (np.arange(s) + 0.5) / s - 0.5
    rows = (np.arange(r0, r1)[:, None] + offsets[None, :]).reshape(-1)
    cols = (np.arange(c0, c1)[:, None] + offsets[None, :]).reshape(-1)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    # Sample points in font units (y up): the box centre maps to the ink's centre.
    u = 0.5 * (x0 + x1) + (cc - col_c) / scale
    v = 0.5 * (y0 + y1) - (rr - row_c) / scale
    pts = np.stack([u.reshape(-1), v.reshape(-1)], axis=1)
    winding = np.zeros(len(pts), np.int64)
    for poly, sign in zip(polygons, signs):
        if sign:
            winding += sign * Path(poly, closed=True).contains_points(pts)
    inside = (winding != 0).reshape(rr.shape).astype(np.float64)
    local = inside.reshape(r1 - r0, s, c1 - c0, s).mean(axis=(1, 3))
    out = np.zeros((h, w), np.float64)
    out[r0:r1, c0:c1] = local
    return out


def render(shape, symbols: Sequence[Symbol], *, supersample: int = 4, family: str = FONT,
           points_per_curve: int = 8):
    """Draw ``symbols`` into an empty image: the detail ``r`` of the structural-change test.

    Items are painted in order (``image <- image (1 - c) + intensity c`` with ``c`` the
    item's :func:`coverage`), so where they do not overlap the image is the sum of
    ``intensity * coverage``; add it to an image to plant the details (``x + r``).

    Args:
      shape: ``(H, W)``.
      symbols: :class:`Symbol` items (or ``(text, center, height[, intensity])`` tuples).
      supersample, family, points_per_curve: see :func:`coverage`.

    Returns:
      ``(image, masks)``: ``float32 (H, W)`` and ``bool (S, H, W)``, the pixels each item
      touches (coverage > 0), in the order of ``symbols``.

    Raises:
      ValueError: no symbols, a bad item, an item outside the image or covering no pixel.
    """
    h, w = _shape(shape)
    if isinstance(symbols, Symbol) or not isinstance(symbols, Sequence) or len(symbols) == 0:
        raise ValueError("symbols must be a non-empty sequence of Symbol items")
    image = np.zeros((h, w), np.float64)
    masks = np.zeros((len(symbols), h, w), bool)
    for i, item in enumerate(symbols):
        try:
            item = Symbol(*item)
        except TypeError as e:
            raise ValueError(f"symbols[{i}] must be (text, center, height[, intensity]), got {item!r}") from e
        if not (isinstance(item.intensity, numbers.Real) and np.isfinite(item.intensity)):
            raise ValueError(f"symbols[{i}].intensity must be a finite number, got {item.intensity!r}")
        c = coverage((h, w), item.text, item.center, item.height, supersample=supersample, family=family,
                     points_per_curve=points_per_curve)
        if not np.any(c > 0):
            raise ValueError(f"symbols[{i}] ({item.text!r}, height {item.height}) covers no pixel: enlarge it")
        image = image * (1.0 - c) + float(item.intensity) * c
        masks[i] = c > 0
    return image.astype(np.float32), masks


# ----------------------------------------------------------------------------- regions


def ellipse_coverage(shape, center, radii, *, supersample: int = 4) -> np.ndarray:
    """The fraction of each pixel inside an axis-aligned ellipse given in fractions of the side.

    A detail with antialiased edges (``value * ellipse_coverage(...)``), e.g. the false
    detail that a zone-targeted attack aims for.

    Args:
      shape: ``(H, W)``.
      center: ``(row, col)`` fractions of the side (see the module docstring).
      radii: ``(row radius, col radius)`` as fractions of ``H`` and ``W`` (> 0).
      supersample: ``s x s`` sample points per pixel (1: the pixel centre decides).

    Returns:
      float64 ``(H, W)`` in ``[0, 1]``.
    """
    h, w = _shape(shape)
    s = check_int(supersample, "supersample", 1)
    cy, cx = _finite_pair(center, "center")
    ry, rx = _finite_pair(radii, "radii")
    if ry <= 0 or rx <= 0:
        raise ValueError(f"radii must be > 0, got {radii!r}")
    offsets = (np.arange(s) + 0.5) / s - 0.5
    rows = (np.arange(h)[:, None] + offsets[None, :]).reshape(-1)
    cols = (np.arange(w)[:, None] + offsets[None, :]).reshape(-1)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    inside = ((rr - cy * h) / (ry * h)) ** 2 + ((cc - cx * w) / (rx * w)) ** 2 <= 1.0
    return inside.reshape(h, s, w, s).mean(axis=(1, 3))


def ellipse_region(shape, center, radii, *, supersample: int = 1) -> np.ndarray:
    """An elliptic zone as a mask: the pixels with any of their sample points inside.

    With ``supersample=1`` (default) a pixel belongs to the zone when its centre lies in
    the ellipse; with ``s > 1`` when any of its ``s x s`` points does (the rule of the
    masks of :func:`render`).  Arguments as :func:`ellipse_coverage`.

    Returns:
      ``bool (H, W)``.
    """
    return ellipse_coverage(shape, center, radii, supersample=supersample) > 0


def bounding_box(mask, pad: int = 0, min_size: int = 1):
    """The smallest box holding the ``True`` pixels of ``mask``, grown by ``pad`` pixels on
    each side and to at least ``min_size`` pixels per side, clipped to the image.

    Args:
      mask: ``(H, W)`` boolean (or ``(..., H, W)``: the union over leading axes).
      pad: pixels added on every side (>= 0).
      min_size: smallest side (e.g. 7 for :func:`region_ssim`'s window); at most the image's.

    Returns:
      ``(row0, row1, col0, col1)`` Python ints, the box ``[row0:row1, col0:col1]``.

    Raises:
      ValueError: an empty mask, or bad ``pad`` / ``min_size``.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim < 2:
        raise ValueError(f"mask must have shape (..., H, W), got {m.shape}")
    if not isinstance(pad, numbers.Integral) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"pad must be an int >= 0, got {pad!r}")
    min_size = check_int(min_size, "min_size", 1)
    m = m.reshape((-1,) + m.shape[-2:]).any(axis=0)
    h, w = m.shape
    if min_size > min(h, w):
        raise ValueError(f"min_size {min_size} exceeds the image {h}x{w}")
    if not m.any():
        raise ValueError("mask is empty: no region to box")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))

    def side(lo, hi, n):
        lo, hi = max(lo - pad, 0), min(hi + 1 + pad, n)
        grow = min_size - (hi - lo)
        if grow > 0:  # widen symmetrically, then slide back inside the image
            lo -= grow // 2
            hi += grow - grow // 2
            shift = max(-lo, 0) - max(hi - n, 0)
            lo, hi = lo + shift, hi + shift
        return int(lo), int(hi)

    r0, r1 = side(rows[0], rows[-1], h)
    c0, c1 = side(cols[0], cols[-1], w)
    return r0, r1, c0, c1


def _magnitude(a):
    a = jnp.asarray(a)
    return jnp.abs(a) if jnp.iscomplexobj(a) else a


def region_psnr(x, ref, region, peak=None):
    """PSNR in dB over the pixels of a region, on magnitudes.

    ``10 log10(peak^2 / mean_{region} (|x| - |ref|)^2)``, with ``peak`` by default the
    largest ``|ref|`` over the *whole* image (as :func:`mrijax.metrics.psnr`), so that the
    numbers of different regions and of the whole image share one scale.  With a region
    of every pixel it equals :func:`mrijax.metrics.psnr`.

    Args:
      x: reconstruction ``(..., H, W)``, real or complex.
      ref: reference, same shape.
      region: ``(..., H, W)`` boolean or 0/1 weights broadcasting against ``x`` (not empty).
      peak: ``None`` or the peak per image (broadcasting against the leading axes).

    Returns:
      One value per image; ``+inf`` where ``x`` equals ``ref`` on the region.  Works
      under ``jit`` and ``vmap``.
    """

    xm, rm = _magnitude(x), _magnitude(ref)
    if xm.shape != rm.shape or xm.ndim < 2:
        raise ValueError(f"x and ref must have the same shape (..., H, W), got {xm.shape} and {rm.shape}")
    wgt = jnp.asarray(region).astype(xm.dtype if jnp.issubdtype(xm.dtype, jnp.floating) else jnp.float32)
    try:
        wgt = jnp.broadcast_to(wgt, jnp.broadcast_shapes(wgt.shape, xm.shape))
    except ValueError as e:
        raise ValueError(f"region of shape {wgt.shape} does not broadcast to the images {xm.shape}") from e
    count = jnp.sum(wgt, axis=(-2, -1))
    if not isinstance(count, jax.core.Tracer) and bool(jnp.any(count <= 0)):
        raise ValueError("region is empty for some image")
    mse = jnp.sum(wgt * jnp.square(xm - rm), axis=(-2, -1)) / count
    if peak is None:
        peak = jnp.max(jnp.abs(rm), axis=(-2, -1))
    return metrics._psnr_from(jnp.asarray(peak, mse.dtype), mse)


def region_ssim(x, ref, box, data_range=None, *, win_size: int = 7):
    """SSIM of the crop ``[row0:row1, col0:col1]`` (e.g. the zoom on a symbol).

    :func:`mrijax.metrics.ssim` of the crops, with ``data_range`` by default the largest
    ``|ref|`` over the *whole* image (not the crop's, so a dark region is not stretched).

    Args:
      x, ref: ``(..., H, W)`` images.
      box: ``(row0, row1, col0, col1)`` from :func:`bounding_box` (sides >= ``win_size``).
      data_range: ``None`` or the range per image.
      win_size: the SSIM window.

    Returns:
      One value per image.
    """

    try:
        r0, r1, c0, c1 = (int(b) for b in box)
    except (TypeError, ValueError) as e:
        raise ValueError(f"box must be four ints (row0, row1, col0, col1), got {box!r}") from e
    xm, rm = _magnitude(x), _magnitude(ref)
    h, w = xm.shape[-2:]
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"box {box} does not lie in the {h}x{w} image")
    if data_range is None:
        data_range = jnp.max(rm, axis=(-2, -1))
    return metrics.ssim(xm[..., r0:r1, c0:c1], rm[..., r0:r1, c0:c1], data_range, win_size=win_size)


def region_norms(change, region) -> dict:
    """How a change (e.g. ``f(y + A r) - f(y)``) splits between a region and the rest.

    Args:
      change: ``(..., H, W)``, real or complex.
      region: boolean ``(..., H, W)`` broadcasting against ``change``.

    Returns:
      dict of per-image arrays: ``inside`` / ``outside`` (l2 norms of the change on the
      region and off it), ``rms_inside`` / ``rms_outside`` (the same per pixel: norm /
      sqrt(pixel count), comparable between a small zone and the large rest),
      ``fraction_inside`` (``inside^2 / (inside^2 + outside^2)``; NaN for no change) and
      the pixel counts ``pixels_inside`` / ``pixels_outside``.
    """
    c = np.asarray(change)
    m = np.asarray(region).astype(bool)
    if c.ndim < 2:
        raise ValueError(f"change must have shape (..., H, W), got {c.shape}")
    try:
        m = np.broadcast_to(m, np.broadcast_shapes(m.shape, c.shape))
    except ValueError as e:
        raise ValueError(f"region of shape {m.shape} does not broadcast to the change {c.shape}") from e
    sq = np.abs(c).astype(np.float64) ** 2
    ins = np.sum(np.where(m, sq, 0.0), axis=(-2, -1))
    out = np.sum(np.where(m, 0.0, sq), axis=(-2, -1))
    n_in = np.sum(m, axis=(-2, -1))
    n_out = m.shape[-2] * m.shape[-1] - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"inside": np.sqrt(ins), "outside": np.sqrt(out),
                "rms_inside": np.sqrt(ins / n_in), "rms_outside": np.sqrt(out / n_out),
                "fraction_inside": ins / (ins + out), "pixels_inside": n_in, "pixels_outside": n_out}
