"""Any model as a pure reconstruction map ``f(masked centred k-space) -> image``.

This is the one interface the attack engine and the experiments use, so that they never
need to know which network they are looking at::

    f = reconstruction_map(model, params, mask)
    x_rec = f(k)                                  # k: (..., H, W) centred k-space
    g = jax.grad(lambda k: jnp.sum(jnp.abs(f(k + r)) ** 2))(k)

``f`` closes over the parameters and the mask, is pure, and works under ``jit``, ``vmap``
and ``grad``.  It applies the mask itself, so values of ``k`` off the mask are ignored
(the measurement is ``y = P_Omega F x``; a perturbation of the unsampled k-space is not a
perturbation of the measurements).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier
from mrijax._checks import check_coil_maps, check_image, check_mask
from mrijax.models.automap import Automap
from mrijax.models.cascade import Cascade


def _static_mask(mask):
    try:
        return np.asarray(mask).astype(bool)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError(
            "reconstruction_map needs a concrete mask for AUTOMAP (it fixes the length m of y); "
            "pass a NumPy array, not a traced value") from e


def reconstruction_map(model, params, mask, coil_maps=None):
    """Wrap a model and its parameters as a pure function of masked centred k-space.

    Args:
      model: a :class:`~mrijax.models.Cascade` or :class:`~mrijax.models.Automap`.
      params: its variables (``{'params': ...}``), as returned by ``model.init`` or a loader.
      mask: the centred boolean sampling mask ``(H, W)`` (or broadcastable ``(..., H, W)`` for
        the cascade).  AUTOMAP needs it concrete (NumPy): it fixes which entries form ``y``.
      coil_maps: optional ``(..., C, H, W)`` sensitivity maps (cascade only); ``f`` then takes
        multi-coil k-space ``(..., C, H, W)``.

    Returns:
      ``f(k)`` with ``k`` of shape ``(..., H, W)`` (``(..., C, H, W)`` with coil maps):

      * Cascade: ``model.apply(params, fourier.adjoint(k, mask), k * mask, mask)``, a complex
        image ``(..., H, W)``.
      * Automap: ``model.apply(params, fourier.gather(k, mask))``, the real magnitude image
        ``(..., n, n)``.

    Raises:
      TypeError: for a model of another type, or a traced mask with AUTOMAP.
      ValueError: for a mask that does not fit the model, or coil maps with AUTOMAP.
    """
    if not hasattr(mask, "shape"):
        raise TypeError(f"mask must be an array, got {type(mask).__name__}")
    if mask.ndim < 2:
        raise ValueError(f"mask must have at least 2 axes (..., H, W), got shape {tuple(mask.shape)}")

    if isinstance(model, Cascade):
        if coil_maps is not None:
            check_coil_maps(coil_maps, mask.shape)

        def cascade_map(k):
            check_image(k, "k")
            check_mask(mask, k.shape, coil_axis=coil_maps is not None)
            if coil_maps is None:
                k0 = fourier.apply_mask(k, mask)
                x_zf = fourier.adjoint(k0, mask)
            else:
                k0 = fourier.apply_mask(k, jnp.expand_dims(jnp.asarray(mask), -3))
                x_zf = fourier.adjoint(k0, mask, coil_maps)
            return model.apply(params, x_zf, k0, mask, coil_maps=coil_maps)

        return cascade_map

    if isinstance(model, Automap):
        if coil_maps is not None:
            raise ValueError("AUTOMAP is a single-coil model: coil_maps must be None")
        mask_np = _static_mask(mask)
        if mask_np.ndim != 2:
            raise ValueError(f"AUTOMAP needs one 2-D mask (n, n), got shape {mask_np.shape}")
        if mask_np.shape != (model.n, model.n):
            raise ValueError(f"mask has shape {mask_np.shape} but the AUTOMAP model is for {model.n} x {model.n}")
        m = int(mask_np.sum())
        if m != model.m:
            raise ValueError(f"mask samples {m} entries but the AUTOMAP model takes m = {model.m}")

        def automap_map(k):
            check_image(k, "k")
            return model.apply(params, fourier.gather(k, mask_np))

        return automap_map

    raise TypeError(f"reconstruction_map supports Cascade and Automap models, got {type(model).__name__}")
