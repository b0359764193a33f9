"""Input validation shared by the library.

Every check here looks only at static information (shapes, dtypes, Python
values) so it runs at trace time under ``jit``/``vmap``/``grad`` and costs
nothing at run time.  Checks on values (NaN, range) live in
:func:`check_finite`, which is meant for concrete arrays at the boundary
(loaders and experiment scripts), before any long computation starts.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


def check_image(x, name: str = "x", min_ndim: int = 2):
    """Raise ``ValueError`` unless ``x`` has at least ``min_ndim`` axes and a numeric dtype."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} axes (..., H, W), got shape {tuple(x.shape)}")
    kind = np.dtype(x.dtype).kind
    if kind not in "biufc":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")


def check_mask(mask, image_shape, name: str = "mask", coil_axis: bool = False):
    """Raise unless ``mask`` is 2-D or more and its trailing two axes match the image's.

    The mask must be boolean (or 0/1 numeric, which is accepted as a weight) and
    broadcastable against the image's leading axes.  ``coil_axis``: ``image_shape`` is
    multi-coil k-space ``(..., C, H, W)``, whose coil axis the mask does not have.
    """
    if coil_axis and len(image_shape) >= 3:
        image_shape = tuple(image_shape[:-3]) + tuple(image_shape[-2:])
    if not hasattr(mask, "shape"):
        raise TypeError(f"{name} must be an array, got {type(mask).__name__}")
    if mask.ndim < 2:
        raise ValueError(f"{name} must have at least 2 axes (..., H, W), got shape {tuple(mask.shape)}")
    if tuple(mask.shape[-2:]) != tuple(image_shape[-2:]):
        raise ValueError(
            f"{name} has image shape {tuple(mask.shape[-2:])} but the image is "
            f"{tuple(image_shape[-2:])}")
    kind = np.dtype(mask.dtype).kind
    if kind == "c":
        raise TypeError(f"{name} must be boolean or real, got dtype {mask.dtype}")
    try:
        np.broadcast_shapes(tuple(mask.shape[:-2]), tuple(image_shape[:-2]))
    except ValueError:
        raise ValueError(
            f"{name}'s leading axes {tuple(mask.shape[:-2])} do not broadcast against the image's "
            f"{tuple(image_shape[:-2])}") from None


def check_coil_maps(coil_maps, image_shape, name: str = "coil_maps"):
    """Raise unless ``coil_maps`` has shape (..., C, H, W) with (H, W) equal to the image's."""
    if coil_maps.ndim < 3:
        raise ValueError(f"{name} must have shape (..., C, H, W), got {tuple(coil_maps.shape)}")
    if tuple(coil_maps.shape[-2:]) != tuple(image_shape[-2:]):
        raise ValueError(
            f"{name} has image shape {tuple(coil_maps.shape[-2:])} but the image is "
            f"{tuple(image_shape[-2:])}")


def check_finite(x, name: str = "x"):
    """Raise ``ValueError`` if a concrete array holds NaN or infinity.

    Meant for inputs at the boundary of long computations (not inside ``jit``).
    """
    a = np.asarray(x)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def complex_dtype_for(x):
    """The complex dtype matching ``x``'s precision (complex64, or complex128 under x64)."""
    return jax.dtypes.canonicalize_dtype(jnp.result_type(x, jnp.complex64))
