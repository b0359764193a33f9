"""Coil sensitivity maps from the fully sampled k-space centre, for the SENSE operator.

:func:`estimate_coil_maps` is the simplest useful estimate, *not* ESPIRiT:

1. keep the calibration region, a centred ``calib_h x calib_w`` block of each
   coil's k-space (fully sampled in any mask with an autocalibration centre; placed
   like fastMRI's centre lines, starting at ``(N - n + 1) // 2``),
   weighted by a separable Hann-type window ``cos^2(pi d / (n + 1))`` (``d`` the
   offset from DC) so the low-resolution images do not ring;
2. zero-fill to ``(H, W)`` and inverse-transform: low-resolution coil images ``L_c``;
3. divide by their root-sum-of-squares,
   ``S_c = L_c / sqrt(sum_c' |L_c'|^2 + (eps * max RSS)^2)``.

So ``sum_c |S_c|^2 = RSS^2 / (RSS^2 + (eps max RSS)^2)``, equal to 1 up to
``eps^2`` wherever the low-resolution RSS is not tiny, and the phase of each map
is that of its low-resolution coil image.  The maps therefore also carry the slowly
varying phase of the object, and the image that ``adjoint(k, mask, maps)`` returns
is the SENSE combination relative to that phase (as with ESPIRiT's phase
convention, which also is a choice).  Outside the object the maps are still
normalised (they extrapolate the low-resolution image's phase), unless
``support_threshold`` zeroes them there.  Because ``sum_c |S_c|^2 = 1``, the
data-consistency step with these maps leaves an image that agrees with the data
unchanged (it is not a projection for several coils, see :mod:`mrijax.dc`).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier
from mrijax._checks import check_image, complex_dtype_for

__all__ = ["DEFAULT_CALIB_SIZE", "calibration_size_from_mask", "calibration_window", "estimate_coil_maps",
           "rss"]

DEFAULT_CALIB_SIZE = 24


def rss(coil_images, axis: int = -3):
    """Root-sum-of-squares coil combination ``sqrt(sum_c |x_c|^2)`` over ``axis`` (real output)."""
    x = jnp.asarray(coil_images)
    return jnp.sqrt(jnp.sum(jnp.abs(x) ** 2, axis=axis))


def calibration_size_from_mask(mask) -> int:
    """Side of the largest centred square block that a concrete mask samples fully.

    The block of side ``n`` starts at row ``(H - n + 1) // 2`` (and likewise column),
    fastMRI's placement of its autocalibration lines: it contains DC at
    ``(H//2, W//2)`` and is as symmetric about it as parity allows.  For a line
    mask with ``n_acs`` centre columns the answer is ``min(n_acs, H)``.

    Args:
      mask: concrete boolean ``(H, W)`` centred mask (leading axes must be size 1).

    Raises:
      ValueError: the mask does not sample the DC frequency.
    """
    try:
        m = np.asarray(mask).astype(bool)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError("calibration_size_from_mask needs a concrete mask (not traced); "
                        "pass calib_size explicitly under jit") from e
    if m.ndim < 2:
        raise ValueError(f"mask must have shape (..., H, W), got {m.shape}")
    m = m.reshape(-1, *m.shape[-2:])
    if m.shape[0] != 1:
        # Different masks per batch element would give different calibration sizes.
        m = m.all(axis=0)
    m = m[0]
    H, W = m.shape
    n = 0
    while n < min(H, W):
        k = n + 1
        r, c = _block_start(H, k), _block_start(W, k)
        if not m[r:r + k, c:c + k].all():
            break
        n = k
    if n == 0:
        raise ValueError("mask does not sample the k-space centre (DC), so it has no calibration region")
    return n


def _block_start(length: int, n: int) -> int:
    # fastMRI's centre block (subsample.py: pad = (num_cols - num_low_freqs + 1) // 2).
    return (length - n + 1) // 2


def _window_1d(length: int, n: int) -> np.ndarray:
    """Length-``length`` weights: ``cos^2(pi d / (n+1))`` on the centred block of ``n`` samples, 0 elsewhere."""
    w = np.zeros(length)
    start = _block_start(length, n)
    d = np.arange(start, start + n) - length // 2  # offsets from DC, which sits at length // 2
    w[start:start + n] = np.cos(np.pi * d / (n + 1)) ** 2
    return w


def _box_1d(length: int, n: int) -> np.ndarray:
    w = np.zeros(length)
    start = _block_start(length, n)
    w[start:start + n] = 1.0
    return w


def calibration_window(shape, calib_size, window: str | None = "hann") -> np.ndarray:
    """The ``(H, W)`` weights applied to k-space before the low-resolution transform.

    Args:
      shape: ``(H, W)``.
      calib_size: ``n`` or ``(n_rows, n_cols)``, the centred calibration block.
      window: ``"hann"`` (smooth, the default) or ``None`` (a plain box).
    """
    H, W = (int(s) for s in shape)
    ch, cw = (calib_size, calib_size) if np.ndim(calib_size) == 0 else tuple(calib_size)
    ch, cw = int(ch), int(cw)
    if not (1 <= ch <= H and 1 <= cw <= W):
        raise ValueError(f"calib_size {(ch, cw)} must be between 1 and the image shape {(H, W)}")
    if window == "hann":
        f = _window_1d
    elif window is None or window == "none":
        f = _box_1d
    else:
        raise ValueError(f"window must be 'hann' or None, got {window!r}")
    return np.outer(f(H, ch), f(W, cw))


def estimate_coil_maps(kspace, calib_size=None, mask=None, window: str | None = "hann",
                       eps: float = 1e-6, support_threshold: float = 0.0):
    """Low-resolution, RSS-normalised coil sensitivity maps (see the module docstring).

    Args:
      kspace: centred multi-coil k-space ``(..., C, H, W)``, fully sampled at least
        on the calibration block (it may be zero elsewhere).
      calib_size: side ``n`` (or ``(n_rows, n_cols)``) of the centred calibration
        block.  ``None``: taken from ``mask`` with :func:`calibration_size_from_mask`,
        or 24 without a mask.  Static (a Python int) under ``jit``.
      mask: optional centred sampling mask, only used to find ``calib_size``.
      window: ``"hann"`` or ``None`` (box), the weighting of the calibration block.
      eps: relative floor of the normalisation, in units of each image's maximum RSS.
      support_threshold: maps are set to 0 where the low-resolution RSS is below
        ``support_threshold * max RSS`` (0 keeps them everywhere).

    Returns:
      Complex maps ``(..., C, H, W)`` of ``kspace``'s precision, with
      ``sum_c |S_c|^2 = 1`` (to ``eps^2``) where the low-resolution RSS is not tiny.
      Pure ``jnp``: works under ``jit`` (with static ``calib_size``), ``vmap``, ``grad``.
    """
    check_image(kspace, "kspace", min_ndim=3)
    if calib_size is None:
        calib_size = DEFAULT_CALIB_SIZE if mask is None else calibration_size_from_mask(mask)
        H, W = kspace.shape[-2:]
        if np.ndim(calib_size) == 0:
            calib_size = (min(int(calib_size), H), min(int(calib_size), W))
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if not 0.0 <= support_threshold < 1.0:
        raise ValueError(f"support_threshold must be in [0, 1), got {support_threshold!r}")
    weights = calibration_window(kspace.shape[-2:], calib_size, window)

    k = jnp.asarray(kspace)
    k = k.astype(complex_dtype_for(k))
    return _normalised_low_res(k, jnp.asarray(weights, dtype=k.real.dtype), eps, support_threshold)


@jax.jit
def _normalised_low_res(k, weights, eps, support_threshold):
    # One compiled kernel instead of a dozen eagerly dispatched ops (each of which JAX
    # would compile on first use per shape).
    low_res = fourier.ifft2c(k * weights)
    norm = rss(low_res)  # (..., H, W)
    peak = jnp.max(norm, axis=(-2, -1), keepdims=True)
    denom = jnp.sqrt(norm ** 2 + (eps * peak) ** 2)
    # All-zero k-space (peak 0) gives zero maps, not 0/0; the where keeps gradients finite too.
    safe = jnp.where(denom > 0, denom, 1)
    keep = (denom > 0) & (norm >= support_threshold * peak)
    return jnp.where(jnp.expand_dims(keep, -3), low_res / jnp.expand_dims(safe, -3), 0)
