"""Data consistency (DC), the layer between the cascade's CNN blocks.

In k-space, keep the network's values off the sampled set and, on it, replace them
by the measurements (noiseless case) or average them with the measurements
(Schlemper et al. 2017, eq. 5/6, with ``lam = noise_level``):

    k_dc[j] = k[j]                          j not in Omega
    k_dc[j] = (k[j] + lam * k0[j]) / (1 + lam)   j in Omega   (lam = None: k0[j])
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from mrijax import fourier, operators
from mrijax._checks import check_coil_maps, check_image, check_mask, is_concrete

__all__ = ["data_consistency", "data_consistency_kspace"]


def _check_noise_level(noise_level):
    # lam = -1 divides by zero; a negative weight is no average.  Traced values are not checked.
    if noise_level is not None and is_concrete(noise_level):
        lam = np.asarray(noise_level, dtype=np.float64)
        if np.any(np.isnan(lam)) or np.any(lam < 0):
            raise ValueError(f"noise_level must be None (exact DC) or >= 0, got {noise_level}")


def _check_kspace(k0, expected_shape, what):
    """``k0`` must have the k-space shape of the image (``(..., H, W)``, or ``(..., C, H, W)``)."""
    check_image(k0, "k0", min_ndim=len(expected_shape))
    tail = tuple(k0.shape[k0.ndim - len(expected_shape):])
    if tail != tuple(expected_shape):
        raise ValueError(f"k0 has shape {tuple(k0.shape)} but {what} needs k-space ending in {tuple(expected_shape)}")


def _combine(k, k0, mask, noise_level):
    _check_noise_level(noise_level)
    try:
        np.broadcast_shapes(tuple(jnp.shape(k)), tuple(jnp.shape(k0)))
    except ValueError:
        raise ValueError(f"k0 has shape {tuple(jnp.shape(k0))}, which does not broadcast against the "
                         f"network's k-space {tuple(jnp.shape(k))}") from None
    mask = jnp.asarray(mask).astype(bool)
    if noise_level is None:
        on_mask = k0
    else:
        lam = jnp.asarray(noise_level)
        on_mask = (k + lam * k0) / (1 + lam)
    return jnp.where(mask, on_mask.astype(k.dtype), k)


def data_consistency_kspace(k, k0, mask, noise_level=None):
    """DC in k-space: ``k`` (the network's k-space) and ``k0`` (measured, centred) of equal shape."""
    check_image(k, "k")
    _check_kspace(k0, k.shape[-2:], f"k of shape {tuple(k.shape)}")
    check_mask(mask, k.shape)
    return _combine(k, k0, mask, noise_level)


def data_consistency(x, k0, mask, noise_level=None, coil_maps=None):
    """Image ``x`` ``(..., H, W)`` -> the image whose k-space agrees with ``k0`` on ``mask``.

    Args:
      x: the network's image (complex or real), any leading batch axes.
      k0: measured centred k-space, ``(..., H, W)`` (one coil) or ``(..., C, H, W)``.
      mask: centred sampling mask, broadcastable to ``x``, or a Cartesian / SENSE operator
        (:mod:`mrijax.operators`, which then brings its coil maps).
      noise_level: ``None`` for exact replacement (``lam = inf``); otherwise ``lam >= 0``,
        a float or a (learnable) array, giving the weighted average above.  Differentiable.
      coil_maps: optional ``(..., C, H, W)``; DC is then applied per coil to
        ``fft2c(S_c x)`` and the coils are combined with ``sum_c conj(S_c) (.)``.  With
        normalised maps (``sum_c |S_c|^2 = 1``) an image that already agrees with ``k0``
        is left unchanged, but for ``C > 1`` the layer is not a projection (applying it
        twice differs from once): the coil combination ``E*`` followed by ``E`` is not
        the identity on multi-coil k-space.
    """
    mask, coil_maps = operators.mask_and_coil_maps(mask, coil_maps)
    check_image(x)
    check_mask(mask, x.shape)
    if coil_maps is None:
        _check_kspace(k0, x.shape[-2:], f"the image of shape {tuple(x.shape)}")
        k = fourier.fft2c(x)
        return fourier.ifft2c(_combine(k, k0, mask, noise_level))
    check_coil_maps(coil_maps, x.shape)
    _check_kspace(k0, coil_maps.shape[-3:], f"coil maps of shape {tuple(coil_maps.shape)}")
    coil_images = jnp.expand_dims(fourier._as_complex(x), -3) * coil_maps
    k = fourier.fft2c(coil_images)
    k = _combine(k, k0, jnp.expand_dims(jnp.asarray(mask), -3), noise_level)
    return jnp.sum(jnp.conj(coil_maps) * fourier.ifft2c(k), axis=-3)
