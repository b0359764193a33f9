"""Input validation shared by the library.

Every check here looks only at static information (shapes, dtypes, Python
values) so it runs at trace time under ``jit``/``vmap``/``grad`` and costs
nothing at run time.  Checks on values (NaN, range) live in
:func:`check_finite`, which is meant for concrete arrays at the boundary
(loaders and experiment scripts), before any long computation starts.
"""

from __future__ import annotations

import numbers

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
    check_mask_values(mask, name)
    try:
        np.broadcast_shapes(tuple(mask.shape[:-2]), tuple(image_shape[:-2]))
    except ValueError:
        raise ValueError(
            f"{name}'s leading axes {tuple(mask.shape[:-2])} do not broadcast against the image's "
            f"{tuple(image_shape[:-2])}") from None


def check_mask_values(mask, name: str = "mask"):
    """Raise unless ``mask`` is boolean or numeric with values exactly 0 and 1.

    A fractional mask (``0.3`` everywhere) would otherwise be cast to ``True`` and read as
    fully sampled.  Values are checked only for concrete non-boolean arrays (under ``jit``
    only the dtype is checked), so the hot path pays nothing.
    """
    kind = np.dtype(mask.dtype).kind
    if kind == "c":
        raise TypeError(f"{name} must be boolean or real, got dtype {mask.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name} must be boolean or numeric 0/1, got dtype {mask.dtype}")
    if kind != "b" and is_concrete(mask):
        values = np.asarray(mask)
        bad = (values != 0) & (values != 1)
        if np.any(bad):
            example = values[bad].flat[0]
            raise ValueError(f"{name} must be boolean or exactly 0/1, but {int(np.count_nonzero(bad))} "
                             f"entries are not (e.g. {example!r}); a fractional mask is not a sampling set")


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


def check_finite_images(x, name: str = "x", indices=None):
    """Raise ``ValueError`` naming the first image that holds NaN or infinity.

    ``x`` is a concrete stack ``(N, ...)`` of images (axis 0 the image index; a lone
    ``(H, W)`` image is image 0).  ``indices``: the images' indices in their source (e.g. the
    slices a loader picked from a file), used in the message instead of ``0 ... N-1``.
    Meant for inputs at the boundary of long computations (not inside ``jit``).
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fc":
        return
    if a.ndim < 3:
        a = a[None]
    finite = np.isfinite(a).reshape(a.shape[0], -1)
    bad = np.flatnonzero(~finite.all(axis=1))
    if bad.size:
        first = int(bad[0])
        index = int(np.asarray(indices)[first]) if indices is not None else first
        count = int(np.count_nonzero(~finite[first]))
        more = f" (and {bad.size - 1} more image(s))" if bad.size > 1 else ""
        raise ValueError(f"{name}: image {index} holds {count} non-finite value(s) (NaN or inf){more}")


def complex_dtype_for(x):
    """The complex dtype matching ``x``'s precision (complex64, or complex128 under x64)."""
    return jax.dtypes.canonicalize_dtype(jnp.result_type(x, jnp.complex64))


# ----------------------------------------------------------------------------- scalars


def is_number(value) -> bool:
    """A real Python/NumPy number (``bool`` is not one)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_concrete(*arrays) -> bool:
    """Whether none of ``arrays`` is a tracer (values can be read: outside ``jit``)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int``; ``ValueError`` unless it is an integer (not bool) ``>= minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_nonnegative(value, name: str):
    """``ValueError`` unless every entry of ``value`` (a number or array) is ``>= 0`` (inf allowed, NaN not)."""
    a = np.asarray(value, dtype=np.float64)
    if np.any(np.isnan(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 (no NaN), got {value}")
    return value


def check_positive_finite(value, name: str):
    """``ValueError`` unless every entry of ``value`` (a number or array) is finite and ``> 0``."""
    a = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value
