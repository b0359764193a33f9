"""Data consistency (DC), the layer between the cascade's CNN blocks.

In k-space, keep the network's values off the sampled set and, on it, replace them
by the measurements (noiseless case) or average them with the measurements
(Schlemper et al. 2017, eq. 5/6, with ``lam = noise_level``):

    k_dc[j] = k[j]                          j not in Omega
    k_dc[j] = (k[j] + lam * k0[j]) / (1 + lam)   j in Omega   (lam = None: k0[j])
"""

from __future__ import annotations

import jax.numpy as jnp

from mrijax import fourier
from mrijax._checks import check_image, check_mask


def _combine(k, k0, mask, noise_level):
    mask = jnp.asarray(mask).astype(bool)
    if noise_level is None:
        on_mask = k0
    else:
        lam = jnp.asarray(noise_level)
        on_mask = (k + lam * k0) / (1 + lam)
    return jnp.where(mask, on_mask.astype(k.dtype), k)


def data_consistency_kspace(k, k0, mask, noise_level=None):
    """DC in k-space: ``k`` (the network's k-space) and ``k0`` (measured, centred) of equal shape."""
    return _combine(k, k0, mask, noise_level)


def data_consistency(x, k0, mask, noise_level=None, coil_maps=None):
    """Image ``x`` ``(..., H, W)`` -> the image whose k-space agrees with ``k0`` on ``mask``.

    Args:
      x: the network's image (complex or real), any leading batch axes.
      k0: measured centred k-space, ``(..., H, W)`` (one coil) or ``(..., C, H, W)``.
      mask: centred sampling mask, broadcastable to ``x``.
      noise_level: ``None`` for exact replacement (``lam = inf``); otherwise ``lam >= 0``,
        a float or a (learnable) array, giving the weighted average above.  Differentiable.
      coil_maps: optional ``(..., C, H, W)``; DC is then applied per coil to
        ``fft2c(S_c x)`` and the coils are combined with ``sum_c conj(S_c) (.)``.  With
        normalised maps (``sum_c |S_c|^2 = 1``) an image that already agrees with ``k0``
        is left unchanged, but for ``C > 1`` the layer is not a projection (applying it
        twice differs from once): the coil combination ``E*`` followed by ``E`` is not
        the identity on multi-coil k-space.
    """
    check_image(x)
    check_mask(mask, x.shape)
    if coil_maps is None:
        k = fourier.fft2c(x)
        return fourier.ifft2c(_combine(k, k0, mask, noise_level))
    coil_images = jnp.expand_dims(fourier._as_complex(x), -3) * coil_maps
    k = fourier.fft2c(coil_images)
    k = _combine(k, k0, jnp.expand_dims(jnp.asarray(mask), -3), noise_level)
    return jnp.sum(jnp.conj(coil_maps) * fourier.ifft2c(k), axis=-3)
