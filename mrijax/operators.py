"""Measurement operators ``A``: one small abstraction for every kind of measurement.

An operator is a pytree (a registered frozen dataclass) of arrays with pure methods

* ``forward(x)``: ``A x``, image ``(..., *image_shape)`` -> measurements ``(..., *measurement_shape)``;
* ``adjoint(y)``: ``A* y``, the exact adjoint for the real inner product ``Re <a, b>``
  (``adjoint(y)`` is also the zero-filled reconstruction);
* ``normal(x)``: ``A* A x``;
* ``restrict(y)``: the orthogonal projection of an array of measurement shape onto the
  measurement space (e.g. zero off the sampled set), so that a perturbation of the
  measurements is one;
* ``norm_bound()``: an upper bound on ``||A||`` (per operator in a batch);
* ``range_projection(x)`` / ``kernel_projection(x)``: the orthogonal projections onto the
  range of ``A*`` and onto the kernel of ``A``.  When ``A`` is a partial isometry
  (``A A* A = A``, :attr:`is_partial_isometry`) the range projection is ``A* A`` exactly;
  otherwise it is ``A^+ A x``, computed by conjugate gradients on ``A* A z = A* A x``
  (started at 0, CG stays in the range of ``A*`` and converges to the minimum-norm solution);
* ``image_shape`` / ``measurement_shape``: the trailing (core) shapes.

Leading axes of an operator's arrays are batch axes: one operator per problem.  Everything
works under ``jit``, ``vmap`` and ``grad``; :func:`broadcast` gives a batch of problems
their own operators (what the attack and the experiments vmap over).

Instances:

* :func:`cartesian` ``(mask)``: single-coil Cartesian MRI, ``A = P_Omega F`` (centred
  orthonormal 2-D DFT, keep the sampled set).  Measurements are masked k-space ``(H, W)``
  (zeros off the mask: a shape that does not depend on the mask); :meth:`Cartesian.gather` /
  :meth:`Cartesian.scatter` convert to the vector ``y`` in ``C^m``.  A partial isometry.
* :func:`sense` ``(mask, coil_maps)``: multi-coil SENSE, ``(A x)_c = P_Omega F (S_c x)``,
  measurements ``(C, H, W)``.  A partial isometry only for ``sum_c |S_c|^2 = 1`` with one
  coil; in general the range projection is the least-squares one.

:func:`as_operator` turns the ``mask=`` / ``coil_maps=`` conveniences of the library into
operators.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier
from mrijax._checks import check_coil_maps, check_image, check_mask_values

__all__ = ["CG_ITERS", "Cartesian", "Sense", "as_operator", "broadcast", "cartesian", "check_fits", "is_operator",
           "least_squares_range_projection", "mask_and_coil_maps", "sense"]

Array = Any

CG_ITERS = 50
"""Conjugate-gradient iterations of the least-squares range projection."""


def _sqnorm(a, ndim):
    return jnp.sum(jnp.abs(a) ** 2, axis=tuple(range(-ndim, 0)))


def least_squares_range_projection(op, x, iters: int = CG_ITERS):
    """``A^+ A x``: the orthogonal projection of ``x`` onto the range of ``A*`` for any operator.

    Conjugate gradients on ``A* A z = A* A x`` from ``z = 0``: every iterate lies in the
    Krylov space of ``A* A`` applied to ``A* A x``, inside the range of ``A*``, and the
    iterates converge to the minimum-norm solution, which is the projection.  ``iters``
    fixed steps (differentiable; a step whose residual is already zero changes nothing).
    """
    ndim = len(op.image_shape)
    b = op.normal(x)
    dt = b.dtype

    def step(carry, _):
        z, r, p, rr, rr0 = carry
        ap = op.normal(p)
        pap = jnp.real(jnp.sum(jnp.conj(p) * ap, axis=tuple(range(-ndim, 0))))
        # Converged (residual at rounding level): freeze, instead of dividing rounding by rounding.
        live = (rr > rr0 * jnp.finfo(rr.dtype).eps ** 2) & (pap > 0)
        alpha = jnp.where(live, rr / jnp.where(live, pap, 1.0), 0.0)
        a = alpha.reshape(alpha.shape + (1,) * ndim).astype(dt)
        z = z + a * p
        r = r - a * ap
        rr_new = _sqnorm(r, ndim)
        beta = jnp.where(live, rr_new / jnp.where(live, rr, 1.0), 0.0)
        p = jnp.where(live.reshape(live.shape + (1,) * ndim),
                      r + beta.reshape(beta.shape + (1,) * ndim).astype(dt) * p, p)
        return (z, r, p, jnp.where(live, rr_new, rr), rr0), None

    rr0 = _sqnorm(b, ndim)
    init = (jnp.zeros_like(b), b, b, rr0, rr0)
    (z, _, _, _, _), _ = jax.lax.scan(step, init, None, length=iters)
    return z


class _Operator:
    """Shared methods; subclasses define the arrays, ``forward``, ``adjoint`` and ``restrict``.

    ``_CORE_NDIM`` maps each array field to the number of its trailing (non-batch) axes.
    """

    _CORE_NDIM: dict = {}
    is_partial_isometry: bool = False

    def normal(self, x):
        """``A* A x``."""
        return self.adjoint(self.forward(x))

    def range_projection(self, x, iters: int = CG_ITERS):
        """The orthogonal projection onto the range of ``A*`` (what the measurements see).

        Exact (``A* A x``) for a partial isometry; otherwise :func:`least_squares_range_projection`
        with ``iters`` CG steps, whose accuracy depends on the conditioning of ``A* A``.
        """
        if self.is_partial_isometry:
            return self.normal(x)
        return least_squares_range_projection(self, x, iters)

    def kernel_projection(self, x, iters: int = CG_ITERS):
        """The orthogonal projection onto the kernel of ``A``: ``x - range_projection(x)``."""
        x = fourier._as_complex(x)
        return x - self.range_projection(x, iters)

    @property
    def batch_shape(self) -> tuple:
        shapes = [tuple(getattr(self, f).shape[:getattr(self, f).ndim - n]) for f, n in self._CORE_NDIM.items()]
        return tuple(np.broadcast_shapes(*shapes))


def _check_bool_mask(mask, name="mask"):
    if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(mask).__name__}")
    if mask.ndim < 2:
        raise ValueError(f"{name} must have at least 2 axes (..., H, W), got shape {tuple(mask.shape)}")
    check_mask_values(mask, name)
    # NumPy stays NumPy: a concrete mask must stay concrete inside a jit trace (gather/scatter
    # and models tied to one mask need its index set).
    if isinstance(mask, np.ndarray):
        return mask.astype(bool)
    return jnp.asarray(mask).astype(bool)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Cartesian(_Operator):
    """Single-coil Cartesian MRI, ``A x = P_Omega fft2c(x)``; build it with :func:`cartesian`.

    Attributes:
      mask: centred boolean sampling mask ``(..., H, W)``.
    """

    mask: Array

    _CORE_NDIM = {"mask": 2}
    is_partial_isometry = True

    @property
    def image_shape(self) -> tuple:
        return tuple(self.mask.shape[-2:])

    @property
    def measurement_shape(self) -> tuple:
        return tuple(self.mask.shape[-2:])

    def forward(self, x):
        return fourier.forward(x, self.mask)

    def adjoint(self, y):
        return fourier.adjoint(y, self.mask)

    def restrict(self, y):
        return fourier.apply_mask(y, self.mask)

    def norm_bound(self):
        """``||A|| <= 1`` (a partial isometry; 0 only for an empty mask)."""
        return jnp.ones(self.batch_shape, jnp.float32)

    def gather(self, k):
        """Masked k-space ``(..., H, W)`` -> the vector ``y`` ``(..., m)`` (concrete mask only)."""
        return fourier.gather(k, self.mask)

    def scatter(self, y):
        """The vector ``y`` ``(..., m)`` -> masked k-space ``(..., H, W)`` (adjoint of :meth:`gather`)."""
        return fourier.scatter(y, self.mask)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sense(_Operator):
    """Multi-coil SENSE, ``(A x)_c = P_Omega fft2c(S_c x)``; build it with :func:`sense`.

    Attributes:
      mask: centred boolean sampling mask ``(..., H, W)``, the same for every coil.
      coil_maps: sensitivities ``(..., C, H, W)``.
    """

    mask: Array
    coil_maps: Array

    _CORE_NDIM = {"mask": 2, "coil_maps": 3}

    @property
    def image_shape(self) -> tuple:
        return tuple(self.mask.shape[-2:])

    @property
    def measurement_shape(self) -> tuple:
        return (self.coil_maps.shape[-3],) + tuple(self.mask.shape[-2:])

    def forward(self, x):
        return fourier.forward(x, self.mask, self.coil_maps)

    def adjoint(self, y):
        return fourier.adjoint(y, self.mask, self.coil_maps)

    def restrict(self, y):
        return fourier.apply_mask(y, jnp.expand_dims(self.mask, -3))

    def norm_bound(self):
        """``||A|| <= sqrt(max over pixels of sum_c |S_c|^2)`` (the mask and the DFT have norm <= 1)."""
        return jnp.sqrt(jnp.max(jnp.sum(jnp.abs(self.coil_maps) ** 2, axis=-3), axis=(-2, -1)))


def cartesian(mask) -> Cartesian:
    """The single-coil Cartesian operator of a centred mask (boolean, or numeric exactly 0/1)."""
    return Cartesian(_check_bool_mask(mask))


def sense(mask, coil_maps) -> Sense:
    """The multi-coil SENSE operator of a centred mask ``(..., H, W)`` and maps ``(..., C, H, W)``."""
    m = _check_bool_mask(mask)
    if not hasattr(coil_maps, "shape"):
        raise TypeError(f"coil_maps must be an array, got {type(coil_maps).__name__}")
    check_coil_maps(coil_maps, m.shape)
    try:
        np.broadcast_shapes(tuple(m.shape[:-2]), tuple(coil_maps.shape[:-3]))
    except ValueError:
        raise ValueError(f"mask's leading axes {tuple(m.shape[:-2])} do not broadcast against coil_maps' "
                         f"{tuple(coil_maps.shape[:-3])}") from None
    if isinstance(coil_maps, np.ndarray):
        return Sense(m, coil_maps.astype(np.result_type(coil_maps.dtype, np.complex64)))
    return Sense(m, fourier._as_complex(coil_maps))


def is_operator(obj) -> bool:
    """Whether ``obj`` is one of the measurement operators of this module."""
    return isinstance(obj, _Operator)


def as_operator(operator_or_mask, coil_maps=None):
    """An operator from an operator, or from the ``mask`` (and ``coil_maps``) conveniences.

    ``as_operator(op)`` is ``op``; ``as_operator(mask)`` is :func:`cartesian` ``(mask)``;
    ``as_operator(mask, coil_maps)`` is :func:`sense` ``(mask, coil_maps)``.
    """
    if is_operator(operator_or_mask):
        if coil_maps is not None:
            raise ValueError("coil_maps is given with an operator: build the operator with "
                             "operators.sense(mask, coil_maps) instead")
        return operator_or_mask
    if coil_maps is None:
        return cartesian(operator_or_mask)
    return sense(operator_or_mask, coil_maps)


def mask_and_coil_maps(operator_or_mask, coil_maps=None):
    """``(mask, coil_maps)`` of a Cartesian or SENSE operator (or of the mask conveniences).

    For the k-space algorithms that work entry by entry on the sampled set (data consistency,
    the CS solver's exact DC); ``coil_maps`` is ``None`` for one coil.  Raises ``ValueError`` for
    another kind of operator, naming it.
    """
    if not is_operator(operator_or_mask):
        return operator_or_mask, coil_maps
    if coil_maps is not None:
        raise ValueError("coil_maps is given with an operator: build it with operators.sense(mask, coil_maps)")
    if isinstance(operator_or_mask, Sense):
        return operator_or_mask.mask, operator_or_mask.coil_maps
    if isinstance(operator_or_mask, Cartesian):
        return operator_or_mask.mask, None
    raise ValueError(f"this works on Cartesian or SENSE k-space; got a {type(operator_or_mask).__name__} operator")


def broadcast(op, batch_shape) -> _Operator:
    """``op`` with every array broadcast to ``batch_shape`` and the batch flattened to one axis.

    The result has a leading problem axis of size ``prod(batch_shape)`` on every array, ready
    for ``jax.vmap``.  Raises ``ValueError`` naming the field when a batch shape does not fit.
    """
    batch_shape = tuple(batch_shape)
    fields = {}
    for f, core in op._CORE_NDIM.items():
        a = jnp.asarray(getattr(op, f))
        tail = tuple(a.shape[a.ndim - core:])
        try:
            a = jnp.broadcast_to(a, batch_shape + tail)
        except ValueError:
            raise ValueError(f"the operator's {f} has batch shape {tuple(a.shape[:a.ndim - core])}, which does "
                             f"not broadcast to the images' batch shape {batch_shape}") from None
        fields[f] = a.reshape((-1,) + tail)
    return dataclasses.replace(op, **fields)


def check_fits(op, x, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` ends in the operator's image shape."""
    check_image(x, name, min_ndim=len(op.image_shape))
    if tuple(x.shape[x.ndim - len(op.image_shape):]) != op.image_shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but the {type(op).__name__} operator (its mask) "
                         f"is for images {op.image_shape}")

