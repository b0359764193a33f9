"""Orthogonal periodised 2-D discrete wavelet transforms in ``jax.numpy``.

The sparsifying transform of compressed-sensing MRI (Lustig et al. 2007) and of the
comparison method in Antun et al. (PNAS 2020).  Everything here is linear, pure and
works under ``jit``, ``vmap`` and ``grad``.

Conventions:

* The transform acts on the trailing two axes ``(H, W)``; leading axes are batch axes.
  Real inputs give real coefficients; complex inputs give complex coefficients (the
  filters are real, so this is the transform of the real and imaginary parts).
* Boundary handling is *periodisation*: a level maps a length-``N`` signal to
  ``N/2`` approximation and ``N/2`` detail coefficients, so the transform is a square
  orthogonal matrix and its inverse is its adjoint.  Every level needs an even
  length, so ``H`` and ``W`` must be divisible by ``2**levels``.
* Coefficients agree to rounding with PyWavelets'
  ``pywt.wavedec2(x, wavelet, mode="periodization", level=levels)`` (the test suite
  checks this where PyWavelets is installed; it is not a dependency).  One level
  along an axis of length ``N`` with decomposition filters ``g`` (low) and ``h``
  (high) of ``L`` taps is::

      a[i] = sum_k g[k] x[(2 i + L/2 - k) mod N]
      d[i] = sum_k h[k] x[(2 i + L/2 - k) mod N]

* :func:`wavedec2` returns the PyWavelets list ``[cA_n, (cH_n, cV_n, cD_n), ...,
  (cH_1, cV_1, cD_1)]``: ``cH`` is high-pass along ``H`` (axis -2), ``cV`` high-pass
  along ``W`` (axis -1), ``cD`` high-pass along both.
* :func:`forward` packs the same coefficients into one array of the image's shape, in
  the Mallat layout of ``pywt.coeffs_to_array``: ``cA_n`` top-left; at level ``j``
  with block size ``(h, w) = (H / 2**j, W / 2**j)``, ``cV_j`` at ``[:h, w:2w]``,
  ``cH_j`` at ``[h:2h, :w]`` and ``cD_j`` at ``[h:2h, w:2w]``.  This flat form is what
  an l1 penalty wants: ``||forward(x)||_1`` and, by orthogonality,
  ``inverse(forward(x)) == x`` and ``||forward(x)|| == ||x||``.

Wavelets: ``"haar"`` (= ``"db1"``) and the Daubechies family ``"db1"`` ... ``"db10"``
(``dbN`` has ``2N`` taps and ``N`` vanishing moments; ``"db2"`` has 4 taps, ``"db4"``
8).  The filters are computed here, once per name, by Daubechies' spectral
factorisation (below) rather than copied from a table.

Example::

    c = wavelets.forward(x, "db4", levels=3)        # same shape as x
    x_back = wavelets.inverse(c, "db4", levels=3)   # == x to rounding
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "WAVELETS",
    "filters",
    "max_level",
    "check_levels",
    "dwt2",
    "idwt2",
    "wavedec2",
    "waverec2",
    "forward",
    "inverse",
    "approximation_mask",
]

_MAX_DB_ORDER = 10

#: Names accepted by every function here.
WAVELETS = ("haar",) + tuple(f"db{n}" for n in range(1, _MAX_DB_ORDER + 1))


def _daubechies_lowpass(order: int) -> np.ndarray:
    """The minimum-phase Daubechies scaling filter with ``order`` vanishing moments.

    Spectral factorisation: ``|H(w)|^2 = 2 cos(w/2)^(2N) P(sin(w/2)^2)`` with
    ``P(y) = sum_{k<N} C(N-1+k, k) y^k`` (Daubechies, *Ten Lectures*, ch. 6).  Each root
    ``y_j`` of ``P`` gives a reciprocal pair ``z, 1/z`` of roots of ``z + 1/z = 2 - 4 y_j``;
    keeping the one outside the unit circle as a root of the polynomial in ``z^-1``
    gives the minimum-phase filter (the usual "db" one, largest taps first).  Float64
    root finding is accurate to ~1e-15 for the orders allowed here.
    """
    taps = np.array([1.0])
    for _ in range(order):
        taps = np.convolve(taps, [0.5, 0.5])
    if order > 1:
        p_descending = [math.comb(order - 1 + k, k) for k in range(order)][::-1]
        for y in np.roots(p_descending):
            pair = np.roots([1.0, -(2.0 - 4.0 * y), 1.0])
            root = pair[np.argmax(np.abs(pair))]
            taps = np.convolve(taps, [-root, 1.0])
    taps = np.real(taps)
    return taps * (math.sqrt(2.0) / taps.sum())


@functools.lru_cache(maxsize=None)
def _filters_cached(name: str):
    order = 1 if name == "haar" else int(name[2:])
    rec_lo = _daubechies_lowpass(order)
    dec_lo = rec_lo[::-1].copy()
    # Quadrature mirror: h[k] = (-1)^(k+1) g[L-1-k], orthogonal to g at every even shift.
    signs = np.where(np.arange(dec_lo.size) % 2 == 0, -1.0, 1.0)
    dec_hi = signs * rec_lo
    dec_lo.flags.writeable = False
    dec_hi.flags.writeable = False
    return dec_lo, dec_hi


def _check_wavelet(wavelet) -> str:
    if not isinstance(wavelet, str):
        raise TypeError(f"wavelet must be a name such as 'db4', got {type(wavelet).__name__}")
    name = wavelet.lower()
    if name not in WAVELETS:
        hint = ""
        if re.fullmatch(r"db\d+", name):
            hint = f" (Daubechies orders 1..{_MAX_DB_ORDER} are available)"
        raise ValueError(f"wavelet {wavelet!r} is not supported{hint}; choose one of {', '.join(WAVELETS)}")
    return name


def filters(wavelet: str):
    """The decomposition filters ``(dec_lo, dec_hi)`` of ``wavelet`` as read-only float64 arrays.

    They match PyWavelets' ``Wavelet(name).dec_lo`` / ``.dec_hi``.  The reconstruction
    filters are their reverses (the transform is orthogonal).
    """
    return _filters_cached(_check_wavelet(wavelet))


def max_level(shape) -> int:
    """The largest number of levels a periodised transform of an ``(..., H, W)`` image allows.

    That is the number of times both ``H`` and ``W`` can be halved exactly.
    """
    h, w = (int(s) for s in tuple(shape)[-2:])
    level = 0
    while h % 2 == 0 and w % 2 == 0 and h > 1 and w > 1:
        h, w, level = h // 2, w // 2, level + 1
    return level


def check_levels(shape, levels, name: str = "x") -> int:
    """Raise ``ValueError`` unless an image of ``shape`` admits ``levels`` periodised levels.

    Returns ``levels`` as an ``int``.  Runs on static shapes, so it is free under ``jit``.
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)):
        raise TypeError(f"levels must be a positive int, got {levels!r}")
    levels = int(levels)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if len(tuple(shape)) < 2:
        raise ValueError(f"{name} must have at least 2 axes (..., H, W), got shape {tuple(shape)}")
    h, w = (int(s) for s in tuple(shape)[-2:])
    step = 2 ** levels
    if h % step or w % step:
        raise ValueError(
            f"{name} has image shape {(h, w)}, but {levels} level(s) need H and W divisible by "
            f"2**{levels} = {step}; at most {max_level((h, w))} level(s) fit this shape")
    return levels


def _as_float(x):
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.complexfloating)):
        x = x.astype(jnp.result_type(float))
    return x


def _check_input(x, name):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if np.dtype(x.dtype).kind not in "biufc":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")


# --- the core: one 2-D level on real (B, H, W) arrays ----------------------------------
#
# a[i] = sum_k g[k] x[(2 i + L/2 - k) mod N] = sum_j g[L-1-j] xp[2 i + j], where xp is x
# wrap-padded by L/2 - 1 samples on each side: a stride-2 cross-correlation with the
# reversed filter, i.e. one `conv_general_dilated` per axis with two output channels
# (low, high).  Few large ops keep compile times short and run well on CPU and GPU;
# `Precision.HIGHEST` stops float32 convolutions from dropping to TF32/bf16 on GPUs,
# which would break orthogonality at the 1e-3 level.  The synthesis is the exact
# transpose (`jax.linear_transpose`), which for an orthogonal transform is the inverse.


def _analysis_axis(x, dec_lo, dec_hi, axis):
    """(B, C, H, W) real -> (B, 2C, H', W'), halving ``axis`` (2 or 3); channels [lo_c..., hi_c...]."""
    taps = dec_lo.size
    pad = taps // 2 - 1
    pad_width = [(0, 0)] * 4
    pad_width[axis] = (pad, pad)
    if pad:
        x = jnp.pad(x, pad_width, mode="wrap")
    kernel = np.stack([dec_lo[::-1], dec_hi[::-1]])  # (2, L)
    kernel = kernel.reshape((2, 1, taps, 1) if axis == 2 else (2, 1, 1, taps))
    strides = (2, 1) if axis == 2 else (1, 2)
    b, c, h, w = x.shape
    # Every input channel gets the same two filters: fold channels into the batch.
    out = lax.conv_general_dilated(
        x.reshape(b * c, 1, h, w), jnp.asarray(kernel, x.dtype), window_strides=strides, padding="VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=lax.Precision.HIGHEST)
    out = out.reshape((b, c, 2) + out.shape[2:])
    return jnp.swapaxes(out, 1, 2).reshape((b, 2 * c) + out.shape[3:])


def _analysis_level(x, dec_lo, dec_hi):
    """(B, H, W) real -> (B, 2, 2, H/2, W/2): [band along H][band along W], 0 = low, 1 = high."""
    b, h, w = x.shape
    out = _analysis_axis(x[:, None], dec_lo, dec_hi, axis=2)  # (B, 2, H/2, W): [lo_h, hi_h]
    out = _analysis_axis(out, dec_lo, dec_hi, axis=3)  # (B, 4, H/2, W/2): [lo_w(lo_h), lo_w(hi_h), hi_w(lo_h), ...]
    out = out.reshape(b, 2, 2, h // 2, w // 2)  # [band along W][band along H]
    return jnp.swapaxes(out, 1, 2)


def _synthesis_level(bands, dec_lo, dec_hi):
    """Exact transpose (= inverse) of :func:`_analysis_level`."""
    b, _, _, h2, w2 = bands.shape
    primal = jax.ShapeDtypeStruct((b, 2 * h2, 2 * w2), bands.dtype)
    (x,) = jax.linear_transpose(lambda v: _analysis_level(v, dec_lo, dec_hi), primal)(bands)
    return x


def _real_batched(fn, x, core_ndim):
    """Apply ``fn`` (real, one leading batch axis) to ``x`` (any leading axes, real or complex)."""
    x = _as_float(x)
    lead = x.shape[: x.ndim - core_ndim]
    flat = x.reshape((-1,) + x.shape[x.ndim - core_ndim:])
    if jnp.iscomplexobj(flat):
        # The filters are real: transform the real and imaginary parts as one batch.
        n = flat.shape[0]
        out = fn(jnp.concatenate([jnp.real(flat), jnp.imag(flat)], axis=0))
        out = lax.complex(out[:n], out[n:])
    else:
        out = fn(flat)
    return out.reshape(lead + out.shape[1:])


# --- one 2-D level ---------------------------------------------------------------------


def dwt2(x, wavelet: str = "db4"):
    """One level of the periodised 2-D DWT over the trailing axes.

    Args:
      x: image ``(..., H, W)``, real or complex, ``H`` and ``W`` even.
      wavelet: a name from :data:`WAVELETS`.

    Returns:
      ``(cA, (cH, cV, cD))``, each ``(..., H/2, W/2)``, as ``pywt.dwt2(...,
      mode="periodization")``.
    """
    _check_input(x, "x")
    check_levels(x.shape, 1)
    bands = _dwt2_jit(_as_float(x), _check_wavelet(wavelet))
    return bands[..., 0, 0, :, :], (bands[..., 1, 0, :, :], bands[..., 0, 1, :, :], bands[..., 1, 1, :, :])


# Whole transforms under one `jit` each (static wavelet and levels): eager callers then
# compile one executable per shape instead of one per primitive, and inside a caller's
# `jit` these simply inline.


@functools.partial(jax.jit, static_argnums=(1,))
def _dwt2_jit(x, wavelet):
    dec_lo, dec_hi = filters(wavelet)
    return _real_batched(lambda v: _analysis_level(v, dec_lo, dec_hi), x, 2)


@functools.partial(jax.jit, static_argnums=(1,))
def _idwt2_jit(bands, wavelet):
    dec_lo, dec_hi = filters(wavelet)
    return _real_batched(lambda v: _synthesis_level(v, dec_lo, dec_hi), bands, 4)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _forward_jit(x, wavelet, levels):
    dec_lo, dec_hi = filters(wavelet)
    return _real_batched(lambda v: _forward_real(v, dec_lo, dec_hi, levels), x, 2)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _inverse_jit(c, wavelet, levels):
    dec_lo, dec_hi = filters(wavelet)
    return _real_batched(lambda v: _inverse_real(v, dec_lo, dec_hi, levels), c, 2)


def _stack_bands(c_a, c_h, c_v, c_d):
    shapes = {tuple(c.shape) for c in (c_a, c_h, c_v, c_d)}
    if len(shapes) != 1:
        raise ValueError(f"cA, cH, cV and cD must have one shape, got {sorted(shapes)}")
    top = jnp.stack([c_a, c_v], axis=-3)
    bottom = jnp.stack([c_h, c_d], axis=-3)
    return jnp.stack([top, bottom], axis=-4)  # (..., 2, 2, h, w)


def idwt2(coeffs, wavelet: str = "db4"):
    """Inverse (= adjoint) of :func:`dwt2`: ``(cA, (cH, cV, cD))`` -> image ``(..., H, W)``."""
    c_a, details = coeffs
    if len(details) != 3:
        raise ValueError(f"coeffs must be (cA, (cH, cV, cD)), got {len(details)} detail bands")
    wavelet = _check_wavelet(wavelet)
    bands = [_as_float(c) for c in (c_a,) + tuple(details)]
    dtype = jnp.result_type(*bands)
    return _idwt2_jit(_stack_bands(*(c.astype(dtype) for c in bands)), wavelet)


# --- multilevel ------------------------------------------------------------------------


def wavedec2(x, wavelet: str = "db4", levels: int = 3):
    """Multilevel periodised 2-D DWT.

    Args:
      x: image ``(..., H, W)``, real or complex; ``H`` and ``W`` divisible by ``2**levels``.
      wavelet: a name from :data:`WAVELETS`.
      levels: number of levels, ``>= 1``.

    Returns:
      ``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]``, coarsest first (the
      PyWavelets order).

    Raises:
      ValueError: the shape does not admit ``levels`` levels, or the wavelet is unknown.
    """
    _check_input(x, "x")
    levels = check_levels(x.shape, levels)
    filters(wavelet)
    details = []
    approx = _as_float(x)
    for _ in range(levels):
        approx, detail = dwt2(approx, wavelet)
        details.append(detail)
    return [approx] + details[::-1]


def waverec2(coeffs, wavelet: str = "db4"):
    """Inverse (= adjoint) of :func:`wavedec2`."""
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) < 2:
        raise ValueError("coeffs must be a list [cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]")
    approx = coeffs[0]
    for detail in coeffs[1:]:
        approx = idwt2((approx, detail), wavelet)
    return approx


def _pack(bands):
    # (B, 2, 2, h, w) -> (B, 2h, 2w): [[cA, cV], [cH, cD]] (Mallat layout).
    b, _, _, h, w = bands.shape
    return jnp.swapaxes(bands, 2, 3).reshape(b, 2 * h, 2 * w)


def _unpack(packed):
    b, h2, w2 = packed.shape
    return jnp.swapaxes(packed.reshape(b, 2, h2 // 2, 2, w2 // 2), 2, 3)


def _forward_real(x, dec_lo, dec_hi, levels):
    bands = _analysis_level(x, dec_lo, dec_hi)
    if levels > 1:
        bands = bands.at[:, 0, 0].set(_forward_real(bands[:, 0, 0], dec_lo, dec_hi, levels - 1))
    return _pack(bands)


def _inverse_real(c, dec_lo, dec_hi, levels):
    bands = _unpack(c)
    if levels > 1:
        bands = bands.at[:, 0, 0].set(_inverse_real(bands[:, 0, 0], dec_lo, dec_hi, levels - 1))
    return _synthesis_level(bands, dec_lo, dec_hi)


def forward(x, wavelet: str = "db4", levels: int = 3):
    """Multilevel periodised 2-D DWT packed into one array of ``x``'s shape (Mallat layout).

    Equal to ``pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, "periodization", levels))[0]``
    for a 2-D ``x``; leading axes are batch axes.  Orthogonal: :func:`inverse` is its
    inverse and adjoint.
    """
    _check_input(x, "x")
    levels = check_levels(x.shape, levels)
    return _forward_jit(_as_float(x), _check_wavelet(wavelet), levels)


def inverse(c, wavelet: str = "db4", levels: int = 3):
    """Inverse (= adjoint) of :func:`forward`: Mallat-packed coefficients -> image."""
    _check_input(c, "c")
    levels = check_levels(c.shape, levels, "c")
    return _inverse_jit(_as_float(c), _check_wavelet(wavelet), levels)


def approximation_mask(shape, levels: int = 3) -> np.ndarray:
    """Boolean ``(H, W)`` array, True on the coarse approximation band of :func:`forward`.

    Handy for penalising only the detail coefficients (the approximation band of a
    natural image is not sparse).
    """
    levels = check_levels(shape, levels, "shape")
    h, w = (int(s) for s in tuple(shape)[-2:])
    mask = np.zeros((h, w), bool)
    mask[: h >> levels, : w >> levels] = True
    return mask
