"""Compressed-sensing (CS) reconstruction in pure JAX: TV + wavelet-l1 by primal-dual splitting.

The stable, state-of-the-art comparison of Antun et al. (PNAS 2020): a sparsity-
regularised reconstruction written in the same framework as the networks, so the same
experiments and the same attack engine (:mod:`mrijax.attacks`) can be run on it.

Problem.  With ``A`` the sampling operator of :mod:`mrijax.fourier` (``mask * fft2c``,
or the SENSE operator with ``coil_maps``), the solver minimises over complex images ``x``

    tv * TV(x) + wavelet_weight * ||W x||_1           subject to  A x = k0   (constrained=True)
    tv * TV(x) + wavelet_weight * ||W x||_1 + 1/2 ||A x - k0||^2           (constrained=False)

or, with ``delta > 0``, subject to ``||A x - k0|| <= delta ||k0||`` (noise-aware, basis pursuit
denoising; the form SPGL1 solves in Antun et al.).  With ``tgv`` the TV term becomes
second-order total generalised variation (below).

* ``TV`` is the isotropic total variation of a complex image, ``sum_ij |(grad x)_ij|``
  with ``|(g_h, g_w)| = sqrt(|g_h|^2 + |g_w|^2)`` and forward differences; the
  ``boundary`` is ``"neumann"`` (default: the difference across the image border is 0,
  so a border is not an edge) or ``"periodic"`` (wraps around, like the DFT).
* ``W`` is the orthogonal periodised wavelet transform of :mod:`mrijax.wavelets`
  (``wavelet="db4"``, ``levels=3``); ``||c||_1 = sum |c|`` with the complex modulus.  By
  default the coarse approximation band is not penalised (``penalise_approximation``),
  since it holds the image's non-sparse low-pass content.  With ``tv=0`` that leaves the
  regulariser blind to the whole approximation space, and the constrained minimiser moves
  detail into that free band wherever the unsampled frequencies allow it, landing below zero
  filling (measured in ``docs/results/cs_tuning.md``).  :func:`reconstruct` warns when ``tv=0``
  leaves the band free.

* ``TGV`` (``tgv`` given; Bredies, Kunisch & Pock 2010; for MRI Knoll et al. 2011) replaces
  ``tv * TV(x)`` by ``min_w tv * sum |grad x - w| + tgv * sum |E w|`` over vector fields
  ``w``: ``E`` is the symmetrised gradient (:func:`symmetrized_gradient`, backward
  differences, so ``E grad`` is a centred Hessian), ``tv`` the first-order weight and ``tgv``
  the second-order one.  Where the image is locally affine ``w`` follows its gradient and pays
  only the second-order term, so ramps and smooth shading are not turned into staircases.
  ``w = 0`` gives TV, so TGV's minimum is at most TV's (tested); once ``tgv`` is large enough
  that its dual constraint never binds, the iterates do not depend on ``tgv`` and converge to
  TV's minimiser (tested).  The solver minimises jointly
  over ``(x, w)`` and returns ``w`` as ``info["tgv_field"]``.  Use ``tgv = 2 * tv``,
  ``step_balance=0.1`` and ``iters=200`` (brain slices; 400 or more for piecewise-constant
  phantoms), as ``python bench/cs.py tune-tgv`` found (``docs/results/cs_tuning.md``).

Algorithm.  Chambolle-Pock's primal-dual hybrid gradient (PDHG, Chambolle & Pock 2011)
with ``K = [grad; W]`` (plus ``A`` with coil maps), ``theta = 1``::

    p <- proj_{|.| <= tv}(p + sigma grad xbar)          (pointwise over (g_h, g_w))
    q <- proj_{|.| <= wavelet_weight}(q + sigma W xbar)
    x_new <- prox_{tau G}(x - tau (grad^* p + W^* q))
    xbar <- 2 x_new - x

With TGV the primal variable is ``(x, w)``, ``K`` gains the rows ``grad x - w`` (dual ``p``,
radius ``tv``) and ``E w`` (dual ``r``, radius ``tgv``), and ``w`` takes a plain gradient step
``w <- w - c tau (E^* r - p)`` (no term of its own in ``G``; ``c`` under "Step sizes") with the
same extrapolation.

* One coil: ``A^* A`` is the k-space mask, so ``prox_G`` is closed form.  Constrained,
  it is the projection onto ``{A x = k0}`` (replace the sampled k-space by ``k0``):
  every iterate, the returned image included, is data consistent to rounding.
  Penalised, it is ``k <- (k + tau k0) / (1 + tau)`` on the mask.  With ``delta`` it projects
  the sampled entries onto the ball ``||k - k0|| <= delta ||k0||`` (exact, since ``F`` is
  unitary), so every iterate satisfies the relaxed constraint.
* With ``coil_maps`` ``A`` joins ``K`` with a dual variable ``z`` in coil k-space:
  ``z <- z + sigma (A xbar - k0)`` (constrained: the conjugate of the indicator of
  ``{k0}``), or ``(z + sigma (A xbar - k0)) / (1 + sigma)`` (penalised); with ``delta``,
  ``v - sigma proj_ball(v / sigma)`` with ``v = z + sigma A xbar`` (Moreau's identity for the
  ball ``||. - k0|| <= delta ||k0||``).  Data
  consistency then holds only in the limit: with coil maps prefer ``constrained=False``.

Step sizes.  PDHG converges for ``tau sigma ||K||^2 < 1``.  We use the bounds
``||grad||^2 <= 8`` and ``||W|| = 1`` (orthogonal), and for coil maps
``||A||^2 <= max_pixel sum_c |S_c|^2`` (``||P F S x|| <= ||S x||``, tight for
normalised maps), so ``L^2 = a^2 = 8 + 1 (+ ||A||^2)``.  Then::

    tau = step_balance / (w L),   sigma = 0.99 w / (step_balance L),   w = tv + wavelet_weight.

With TGV the field ``w`` and its dual ``r`` get their own steps, ``c tau`` and ``sigma / c``
with ``c = 0.1`` (block-diagonal preconditioning, Pock & Chambolle 2011, which converges for
``||Sigma^(1/2) K T^(1/2)||^2 < 1``).  With ``||E||^2 <= 8`` the preconditioned operator obeys
``tau sigma ((sqrt(8) ||x|| + sqrt(c) ||w||)^2 + (a^2 - 8) ||x||^2 + 8 ||w||^2)``, a quadratic
form in ``(||x||, ||w||)`` whose top eigenvalue is
``L^2 = (a^2 + c + 8 + sqrt((a^2 - c - 8)^2 + 32 c)) / 2`` (``c = 1``, no wavelet or coils:
Bredies' ``(17 + sqrt(33)) / 2``), and ``tau``, ``sigma`` are set from it as above.  The
smaller field step converges several times faster than ``c = 1`` (``docs/results/cs_tuning.md``).

Scaling ``tau`` by ``1/w`` and ``sigma`` by ``w`` makes the iterates of the constrained
problem depend only on the *ratio* ``tv : wavelet_weight`` (whose minimiser is invariant
to a common factor), and ``step_balance`` trades primal against dual speed; it
converges for any value, without tuning.

Data scale.  With ``normalize=True`` (default) ``k0`` is divided by
:func:`data_scale` (the RMS of the zero-filled image) before solving and the result is
multiplied back, so the weights are relative to the image's intensity and the same
defaults fit any scaling.  The constrained minimiser is unchanged by this
(``x* (c k0) = c x* (k0)``); the penalised problem solved is the one above with
``tv`` and ``wavelet_weight`` multiplied by ``data_scale(k0)``.

Iterations and gradients.  ``iters`` fixed iterations run in one ``lax.scan``; the whole
solver is ``jit``/``vmap``/``grad`` friendly and batched over leading axes, so
:mod:`mrijax.attacks` can differentiate through it.  With ``checkpoint=True``
(default) each iteration is rematerialised in the backward pass: reverse mode keeps
only the iterates (about 5 image-sized arrays per iteration) instead of every
intermediate, for roughly one extra forward pass of compute.  With ``tol`` the loop
becomes a ``lax.while_loop`` that freezes each batch element once the relative change
``||x_new - x|| / ||x_new||`` falls below ``tol`` (at most ``iters`` iterations): that
path supports forward-mode (``jvp``) but **not reverse-mode** differentiation (JAX
raises an error).

Defaults (:data:`DEFAULTS`: ``tv=1e-3``, ``wavelet_weight=1e-4``, ``wavelet="db4"``,
``levels=3``, ``iters=100``, ``step_balance=0.2``) maximise the PSNR gain over zero filling
on 16 phantom and brain problems (``python bench/cs.py tune``; grid and figures in
``docs/results/cs_tuning.md``); 100 iterations keep attacks cheap.

Iterations and stability.  ``iters`` also sets how stable the map is: stopping early trades
accuracy for stability (``docs/results/cs_stability.md``).

Example::

    recon = cs.reconstruction_map(mask)               # pure f(k_masked) -> image
    x_hat = recon(fourier.forward(x, mask))
    g = jax.grad(lambda k: jnp.sum(jnp.abs(recon(k)) ** 2))(k)
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import warnings
from typing import NamedTuple

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from mrijax import fourier, operators, wavelets
from mrijax._checks import check_coil_maps, check_image, check_int, check_mask, complex_dtype_for, is_concrete

__all__ = [
    "DEFAULTS",
    "gradient",
    "gradient_adjoint",
    "total_variation",
    "symmetrized_gradient",
    "symmetrized_gradient_adjoint",
    "tgv_terms",
    "wavelet_l1",
    "data_scale",
    "objective",
    "reconstruct",
    "reconstruction_map",
]

#: Default keyword arguments of :func:`reconstruct` (tuned: ``docs/results/cs_tuning.md``).
DEFAULTS = dict(tv=1e-3, wavelet_weight=1e-4, wavelet="db4", levels=3, iters=100, step_balance=0.2)

# The tuning figures behind DEFAULTS and the TGV advice: docs/results/cs_tuning.md.

_BOUNDARIES = ("neumann", "periodic")
_GRAD_NORM_SQ = 8.0  # ||grad||^2 <= 4 + 4 for forward differences (either boundary)
_SYM_GRAD_NORM_SQ = 8.0  # ||E||^2 <= 4 + 4 likewise (symmetrized_gradient)
# TGV: the field w steps c tau, its dual r steps sigma / c (module docstring, "Step sizes").
_TGV_FIELD_STEP = 0.1
_SAFETY = 0.99  # tau sigma L^2 = 0.99 < 1


# ----------------------------------------------------------------------------- TV


def _check_boundary(boundary):
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")


def _diff(x, axis, boundary):
    forward_diff = jnp.roll(x, -1, axis=axis) - x
    if boundary == "periodic":
        return forward_diff
    n = x.shape[axis]
    last = (jnp.arange(n) == n - 1).reshape((n,) + (1,) * (-axis - 1))
    return jnp.where(last, jnp.zeros((), x.dtype), forward_diff)


def _diff_adjoint(p, axis, boundary):
    if boundary == "neumann":
        # The forward difference is 0 on the last row, so its adjoint ignores p there.
        n = p.shape[axis]
        last = (jnp.arange(n) == n - 1).reshape((n,) + (1,) * (-axis - 1))
        p = jnp.where(last, jnp.zeros((), p.dtype), p)
    return jnp.roll(p, 1, axis=axis) - p


def _as_field(a, name, components):
    """``a`` as an array of shape ``(..., components, H, W)``, or a ValueError naming it."""
    check_image(a, name, min_ndim=3)
    a = jnp.asarray(a)
    if a.shape[-3] != components:
        raise ValueError(f"{name} must have shape (..., {components}, H, W), got {tuple(a.shape)}")
    return a


def gradient(x, boundary: str = "neumann"):
    """Forward-difference gradient ``(..., H, W)`` -> ``(..., 2, H, W)`` (axis -3: d/dH, d/dW).

    ``[..., 0, i, j] = x[i+1, j] - x[i, j]`` and ``[..., 1, i, j] = x[i, j+1] - x[i, j]``;
    across the border the difference is 0 (``"neumann"``) or wraps (``"periodic"``).
    ``||gradient|| <= sqrt(8)``.
    """
    check_image(x)
    _check_boundary(boundary)
    x = jnp.asarray(x)
    return jnp.stack([_diff(x, -2, boundary), _diff(x, -1, boundary)], axis=-3)


def gradient_adjoint(g, boundary: str = "neumann"):
    """The exact adjoint of :func:`gradient` (minus the divergence): ``(..., 2, H, W)`` -> ``(..., H, W)``."""
    g = _as_field(g, "g", 2)
    _check_boundary(boundary)
    return _diff_adjoint(g[..., 0, :, :], -2, boundary) + _diff_adjoint(g[..., 1, :, :], -1, boundary)


def _safe_abs(v, axis=None):
    """``|v|`` (over ``axis`` as an l2 norm, complex modulus) with a finite gradient at 0."""
    sq = jnp.real(v * jnp.conj(v))
    if axis is not None:
        sq = jnp.sum(sq, axis=axis)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def total_variation(x, boundary: str = "neumann"):
    """Isotropic total variation ``sum_ij sqrt(|d_h x|^2 + |d_w x|^2)`` per image, shape ``x.shape[:-2]``."""
    return jnp.sum(_safe_abs(gradient(x, boundary), axis=-3), axis=(-2, -1))


def symmetrized_gradient(w, boundary: str = "neumann"):
    """Symmetrised gradient of a vector field ``(..., 2, H, W)`` -> ``(..., 3, H, W)``.

    With backward differences ``b = -d^*`` (the negative adjoints of :func:`gradient`'s
    forward differences ``d``, so that ``E(gradient(x))`` is a centred second difference):
    ``[b_h w_h, b_w w_w, (b_w w_h + b_h w_w) / sqrt(2)]``.  The ``sqrt(2)`` makes the
    Euclidean norm over axis -3 the Frobenius norm of the symmetric 2x2 matrix
    ``(grad w + grad w^T) / 2``.  ``||E||^2 <= 8``.
    """
    w = _as_field(w, "w", 2)
    _check_boundary(boundary)
    wh, ww = w[..., 0, :, :], w[..., 1, :, :]

    def back(v, axis):
        return -_diff_adjoint(v, axis, boundary)

    off_diagonal = (back(wh, -1) + back(ww, -2)) / np.sqrt(2.0)
    return jnp.stack([back(wh, -2), back(ww, -1), off_diagonal], axis=-3)


def symmetrized_gradient_adjoint(s, boundary: str = "neumann"):
    """The exact adjoint of :func:`symmetrized_gradient`: ``(..., 3, H, W)`` -> ``(..., 2, H, W)``."""
    s = _as_field(s, "s", 3)
    _check_boundary(boundary)
    s_hh, s_ww, s_off = s[..., 0, :, :], s[..., 1, :, :], s[..., 2, :, :] / np.sqrt(2.0)
    # The adjoint of b = -d^* is -d.
    wh = -_diff(s_hh, -2, boundary) - _diff(s_off, -1, boundary)
    ww = -_diff(s_ww, -1, boundary) - _diff(s_off, -2, boundary)
    return jnp.stack([wh, ww], axis=-3)


def tgv_terms(x, field, boundary: str = "neumann"):
    """The two terms of second-order TGV at a given vector field ``w``, per image.

    Returns ``(sum_ij |(grad x - w)_ij|, sum_ij |(E w)_ij|)``, each of shape ``x.shape[:-2]``
    (pointwise Euclidean norms of complex vectors).  ``TGV(x) = min_w tv * first + tgv * second``
    (Bredies, Kunisch & Pock 2010); :func:`reconstruct` with ``tgv`` minimises jointly over
    ``x`` and ``w`` and returns its ``w`` as ``info["tgv_field"]``.  ``w = 0`` gives ``TV(x)``.
    """
    check_image(x)
    field = _as_field(field, "field", 2)
    if field.shape[-2:] != tuple(x.shape[-2:]):
        raise ValueError(f"field must have shape (..., 2, {x.shape[-2]}, {x.shape[-1]}) for x of shape "
                         f"{tuple(x.shape)}, got {tuple(field.shape)}")
    first = jnp.sum(_safe_abs(gradient(x, boundary) - field, axis=-3), axis=(-2, -1))
    second = jnp.sum(_safe_abs(symmetrized_gradient(field, boundary), axis=-3), axis=(-2, -1))
    return first, second


def _coefficient_weights(shape, levels, penalise_approximation):
    weights = np.ones(tuple(shape)[-2:])
    if not penalise_approximation:
        weights[wavelets.approximation_mask(shape, levels)] = 0.0
    return weights


def wavelet_l1(x, wavelet: str = "db4", levels: int = 3, penalise_approximation: bool = False):
    """``||W x||_1`` per image (complex modulus), without the approximation band unless asked."""
    check_image(x)
    levels = wavelets.check_levels(x.shape, levels)
    weights = _coefficient_weights(x.shape, levels, penalise_approximation)
    return jnp.sum(weights * _safe_abs(wavelets.forward(x, wavelet, levels)), axis=(-2, -1))


# ----------------------------------------------------------------------------- checks


def _check_weight(name, value):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, numbers.Real):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
        return
    if not hasattr(value, "shape") or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a scalar (a number or a 0-d array), got {value!r}")
    if is_concrete(value):
        v = float(np.asarray(value))
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {v}")


def _is_zero(value):
    # Statically zero: the term and its dual variable are dropped from the iteration.
    return isinstance(value, numbers.Real) and value == 0


def _check_inputs(k0, mask, coil_maps, wavelet, levels, boundary):
    check_image(k0, "k0")
    check_mask(mask, k0.shape, coil_axis=coil_maps is not None)
    if coil_maps is not None:
        check_image(coil_maps, "coil_maps", min_ndim=3)
        check_coil_maps(coil_maps, k0.shape)
        if k0.ndim < 3 or k0.shape[-3] != coil_maps.shape[-3]:
            raise ValueError(
                f"with coil_maps of shape {tuple(coil_maps.shape)} k0 must be coil k-space (..., C, H, W) "
                f"with C = {coil_maps.shape[-3]}, got {tuple(k0.shape)}")
    wavelets.filters(wavelet)
    levels = wavelets.check_levels(k0.shape, levels, "k0")
    _check_boundary(boundary)
    return levels


# ----------------------------------------------------------------------------- objective


def _masked(k0, mask):
    return fourier.apply_mask(k0, mask)


def _zero_filled(k0, mask, coil_maps):
    return fourier.adjoint(k0, mask, coil_maps)


def data_scale(k0, mask, coil_maps=None):
    """RMS of the zero-filled image ``A^* k0`` per problem, shape ``(...)``: the unit ``normalize`` uses.

    Zero data get scale 1 (so the solver returns zeros instead of dividing by 0).
    """
    zero_filled = _zero_filled(k0, mask, coil_maps)
    rms = jnp.sqrt(jnp.mean(jnp.real(zero_filled * jnp.conj(zero_filled)), axis=(-2, -1)))
    return jnp.where(rms > 0, rms, jnp.ones((), rms.dtype))


def objective(x, k0, mask, *, tv=DEFAULTS["tv"], wavelet_weight=DEFAULTS["wavelet_weight"],
              wavelet=DEFAULTS["wavelet"], levels=DEFAULTS["levels"], boundary="neumann", coil_maps=None,
              constrained=True, penalise_approximation=False, tgv=None, tgv_field=None):
    """The objective :func:`reconstruct` minimises, per image (shape ``x.shape[:-2]``).

    ``tv * TV(x) + wavelet_weight * ||W x||_1``, plus ``1/2 ||A x - k0||^2`` when
    ``constrained=False``.  In the constrained form the constraint ``A x = k0`` is *not*
    included: check it separately (:func:`reconstruct` keeps it exactly for one coil).
    The weights are used as given (no ``normalize``; see the module docstring for how
    the two relate).

    With ``tgv`` the TV term is replaced by the joint second-order TGV term at the vector
    field ``tgv_field`` (``info["tgv_field"]`` of :func:`reconstruct`):
    ``tv * sum |grad x - w| + tgv * sum |E w|`` (:func:`tgv_terms`).
    """
    check_image(x)
    levels = wavelets.check_levels(x.shape, levels)
    _check_boundary(boundary)
    if (tgv is None) != (tgv_field is None):
        raise ValueError("objective: tgv and tgv_field go together (the TGV term is evaluated at the field "
                         "w that reconstruct(..., tgv=..., return_info=True) returns as info['tgv_field'])")
    if tgv is None:
        regulariser = tv * total_variation(x, boundary)
    else:
        first, second = tgv_terms(x, tgv_field, boundary)
        regulariser = tv * first + tgv * second
    value = regulariser + wavelet_weight * wavelet_l1(x, wavelet, levels, penalise_approximation)
    if not constrained:
        coil_mask = mask if coil_maps is None else jnp.expand_dims(jnp.asarray(mask), -3)
        residual = fourier.forward(x, mask, coil_maps) - _masked(k0, coil_mask)
        axes = (-2, -1) if coil_maps is None else (-3, -2, -1)
        value = value + 0.5 * jnp.sum(jnp.real(residual * jnp.conj(residual)), axis=axes)
    return value


# ----------------------------------------------------------------------------- solver


def _project_ball(v, radius, axis=None):
    """Project ``v`` pointwise onto ``{|v| <= radius}`` (l2 over ``axis``), gradient-safe."""
    sq = jnp.real(v * jnp.conj(v))
    if axis is not None:
        sq = jnp.sum(sq, axis=axis, keepdims=True)
    outside = sq > radius * radius
    # Double `where`: the sqrt only ever sees positive values, so its gradient stays finite.
    factor = jnp.where(outside, radius / jnp.sqrt(jnp.where(outside, sq, 1.0)), 1.0)
    return v * factor.astype(v.dtype)


def _tgv_norm_sq(first_order_norm_sq, field_step):
    """Bound on ``||K~||^2`` for TGV's preconditioned operator (module docstring, "Step sizes").

    ``K~(x, w) = [grad x - sqrt(c) w; W x; A x; E w]`` (``w`` steps ``c tau``, ``r`` steps
    ``sigma / c``): the top eigenvalue of ``[[a^2, sqrt(8 c)], [sqrt(8 c), c + 8]]`` with
    ``a^2`` the bound without TGV.
    """
    c, second = field_step, field_step + _SYM_GRAD_NORM_SQ
    return 0.5 * (first_order_norm_sq + second
                  + jnp.sqrt((first_order_norm_sq - second) ** 2 + 4 * c * _GRAD_NORM_SQ))


@dataclasses.dataclass(frozen=True)
class _SolverConfig:
    """Every static choice of the PDHG solver, in one hashable value: jit's one static argument.

    :func:`reconstruct` builds it from its checked keywords; equal configs share one compiled
    solver.  The ``use_*`` flags say which terms the iteration carries.  A weight that is
    statically zero (a Python number ``0``) drops its term and its dual variable.  A traced
    weight keeps both, even if its value turns out to be 0.
    """

    wavelet: str                  # a name of mrijax.wavelets.WAVELETS, lower case
    levels: int                   # wavelet levels, checked against the image size
    iters: int                    # PDHG iterations (the most, with tol)
    tol: float | None             # None: fixed iters (lax.scan); else the relative-change stop (lax.while_loop)
    constrained: bool             # A x = k0 (or the delta ball) rather than the penalty 1/2 ||A x - k0||^2
    boundary: str                 # "neumann" or "periodic", for grad and E
    step_balance: float           # tau against sigma (module docstring, "Step sizes")
    penalise_approximation: bool  # the wavelet approximation band is in the l1 term
    checkpoint: bool              # rematerialise each iteration in reverse mode (tol=None)
    normalize: bool               # solve on k0 / data_scale(k0)
    history: bool                 # record the objective after each iteration (tol=None)
    use_tv: bool                  # the TV term (with TGV: its first-order term), dual p
    use_wavelet: bool             # the wavelet-l1 term, dual q
    use_delta: bool               # constrained to ||A x - k0|| <= delta ||k0|| instead of A x = k0
    use_tgv: bool                 # second-order TGV replaces TV: field w, dual r (needs use_tv)


class _PDHGState(NamedTuple):
    """One PDHG iterate: the pytree ``lax.scan`` / ``lax.while_loop`` carry.

    Primal: the image ``x`` and its extrapolation ``xbar = 2 x_new - x_old``, ``(..., H, W)``;
    with TGV also the field ``w`` and ``wbar`` likewise, ``(..., 2, H, W)``.  Dual: ``p``
    ``(..., 2, H, W)`` for ``grad x`` (``grad x - w`` with TGV), ``q`` ``(..., H, W)`` for the
    wavelet coefficients ``W x``, ``z`` ``(..., C, H, W)`` for the coil k-space ``A x`` (coil
    maps only), ``r`` ``(..., 3, H, W)`` for ``E w`` (TGV).  A field whose term is off is
    ``None``, an empty pytree node that tree maps and loops pass over.
    """

    x: jax.Array
    xbar: jax.Array
    p: jax.Array | None = None
    q: jax.Array | None = None
    z: jax.Array | None = None
    w: jax.Array | None = None
    wbar: jax.Array | None = None
    r: jax.Array | None = None


def _step_sizes(config, tv_weight, wavelet_weight, coil_maps, rdtype):
    """``(tau, sigma)``, shape ``(..., 1, 1)``, from the bound on ``||K||^2`` (module docstring, "Step sizes")."""
    norm_sq = (_GRAD_NORM_SQ if config.use_tv else 0.0) + (1.0 if config.use_wavelet else 0.0)
    norm_sq = jnp.full((1, 1), norm_sq, rdtype)  # (..., 1, 1) like the per-problem coil bound
    if coil_maps is not None:
        sens = jnp.sum(jnp.real(coil_maps * jnp.conj(coil_maps)), axis=-3)
        norm_sq = norm_sq + jnp.max(sens, axis=(-2, -1), keepdims=True)
    if config.use_tgv:
        norm_sq = _tgv_norm_sq(norm_sq, _TGV_FIELD_STEP)
    op_norm = jnp.sqrt(jnp.maximum(norm_sq, jnp.asarray(1e-12, rdtype)))
    weight_scale = tv_weight + wavelet_weight
    weight_scale = jnp.where(weight_scale > 0, weight_scale, jnp.ones((), rdtype))
    tau = config.step_balance / (weight_scale * op_norm)
    sigma = _SAFETY * weight_scale / (config.step_balance * op_norm)
    return tau, sigma


def _relative_change(x_new, x_old):
    """``||x_new - x_old|| / ||x_new||`` per image (0 / 0 counts as 0)."""
    diff = jnp.sqrt(jnp.sum(jnp.real((x_new - x_old) * jnp.conj(x_new - x_old)), axis=(-2, -1)))
    size = jnp.sqrt(jnp.sum(jnp.real(x_new * jnp.conj(x_new)), axis=(-2, -1)))
    return diff / jnp.maximum(size, jnp.finfo(x_new.dtype).tiny)


def _iterate_fixed(step, state, config, objective_of):
    """``config.iters`` steps in a ``lax.scan``: ``(state, count, change, trace)``.

    ``trace`` is ``objective_of`` of each iterate when ``config.history`` (else ``None``).
    """
    body = jax.checkpoint(step) if config.checkpoint else step

    def scan_body(s, _):
        s = body(s)
        return s, (objective_of(s) if config.history else None)

    batch_shape = state.x.shape[:-2]
    state, trace = lax.scan(scan_body, state, None, length=config.iters)
    # xbar = 2 x_new - x_old, so x_new - x_old = xbar - x_new: the last change for free.
    if config.iters:
        change = _relative_change(state.x, 2 * state.x - state.xbar)
    else:
        change = jnp.zeros(batch_shape, jnp.finfo(state.x.dtype).dtype)
    count = jnp.full(batch_shape, config.iters, jnp.int32)
    return state, count, change, trace


def _iterate_until(step, state, config):
    """Steps in a ``lax.while_loop`` until every problem's relative change is below ``config.tol``.

    At most ``config.iters``; a problem that has converged keeps its state while the others
    go on.  Returns ``(state, count, change)``.
    """
    batch_shape = state.x.shape[:-2]

    def cond(carry):
        n, _, done, _, _ = carry
        return (n < config.iters) & ~jnp.all(done)

    def while_body(carry):
        n, old, done, count, change = carry
        new = step(old)
        new_change = _relative_change(new.x, old.x)

        def select(a_new, a_old):  # frozen (done) problems keep their state
            k = done.reshape(done.shape + (1,) * (a_new.ndim - done.ndim))
            return jnp.where(k, a_old, a_new)

        state = jax.tree_util.tree_map(select, new, old)
        change = jnp.where(done, change, new_change)
        count = jnp.where(done, count, count + 1)
        return n + 1, state, done | (new_change < config.tol), count, change

    carry = (jnp.asarray(0, jnp.int32), state, jnp.zeros(batch_shape, bool),
             jnp.zeros(batch_shape, jnp.int32), jnp.full(batch_shape, jnp.inf, jnp.finfo(state.x.dtype).dtype))
    _, state, _, count, change = lax.while_loop(cond, while_body, carry)
    return state, count, change


@functools.partial(jax.jit, static_argnames=("config",))
def _solve(config, k0, mask, coil_maps, x0, tv_weight, wavelet_weight, delta, tgv_weight):
    """The PDHG solver behind :func:`reconstruct` (module docstring): ``(image, info)``.

    ``config`` is a :class:`_SolverConfig` holding every static choice, and is jit's only static
    argument.  The arrays ``k0``, ``mask``, ``coil_maps`` and ``x0`` (either may be ``None``)
    are traced, and so are the weights ``tv_weight``, ``wavelet_weight``, ``delta`` and
    ``tgv_weight`` (``None`` without TGV).  A weight whose ``config.use_*`` flag is off is
    ignored; it counts as 0 in the step sizes.  Each iteration maps one :class:`_PDHGState`
    to the next.
    """
    cdtype = complex_dtype_for(k0)
    rdtype = jnp.finfo(cdtype).dtype
    boundary, wavelet, levels = config.boundary, config.wavelet, config.levels
    k0 = jnp.asarray(k0).astype(cdtype)
    mask = jnp.asarray(mask).astype(bool)
    multicoil = coil_maps is not None
    coil_mask = jnp.expand_dims(mask, -3) if multicoil else mask
    k0 = _masked(k0, coil_mask)
    if multicoil:
        coil_maps = jnp.asarray(coil_maps).astype(cdtype)

    tv_weight = jnp.asarray(tv_weight if config.use_tv else 0, rdtype)
    wavelet_weight = jnp.asarray(wavelet_weight if config.use_wavelet else 0, rdtype)
    tgv_weight = jnp.asarray(tgv_weight, rdtype) if config.use_tgv else None

    if config.normalize:
        scale = data_scale(k0, mask, coil_maps)[..., None, None]
    else:
        scale = jnp.ones(k0.shape[:-3] if multicoil else k0.shape[:-2], rdtype)[..., None, None]
    k0n = k0 / (scale[..., None, :, :] if multicoil else scale).astype(cdtype)
    # Noise-aware constraint ||A x - k0|| <= delta ||k0|| (per problem; off: A x = k0).
    if config.use_delta:
        data_axes = (-3, -2, -1) if multicoil else (-2, -1)
        data_radius = jnp.asarray(delta, rdtype) * jnp.sqrt(
            jnp.sum(jnp.real(k0n * jnp.conj(k0n)), axis=data_axes, keepdims=True))

    tau, sigma = _step_sizes(config, tv_weight, wavelet_weight, coil_maps, rdtype)
    tau_c = tau.astype(cdtype)
    sigma_c = sigma.astype(cdtype)
    sigma_coil = sigma_c[..., None, :, :] if multicoil else None
    sigma_field = sigma_c[..., None, :, :]
    tau_field = tau_c[..., None, :, :]
    tau_w = tau_field * _TGV_FIELD_STEP
    sigma_r = sigma_field / _TGV_FIELD_STEP

    coefficient_weights = jnp.asarray(_coefficient_weights(k0.shape, levels, config.penalise_approximation), rdtype)
    wavelet_radius = wavelet_weight * coefficient_weights

    def prox_g(v):
        if multicoil:
            return v
        k = fourier.fft2c(v)
        if config.use_delta:   # F is unitary: project the sampled entries onto the ball around k0
            k = jnp.where(mask, k0n + _project_ball(jnp.where(mask, k - k0n, 0), data_radius, axis=(-2, -1)), k)
        elif config.constrained:
            k = jnp.where(mask, k0n, k)
        else:
            k = jnp.where(mask, (k + tau_c * k0n) / (1 + tau_c), k)
        return fourier.ifft2c(k)

    def step(s):
        update = jnp.zeros_like(s.x)
        if config.use_tv:
            dual_input = gradient(s.xbar, boundary) - s.wbar if config.use_tgv else gradient(s.xbar, boundary)
            s = s._replace(p=_project_ball(s.p + sigma_field * dual_input, tv_weight, axis=-3))
            update = update + gradient_adjoint(s.p, boundary)
        if config.use_tgv:
            r = _project_ball(s.r + sigma_r * symmetrized_gradient(s.wbar, boundary), tgv_weight, axis=-3)
            # The field has no term of its own in G: a plain gradient step, then extrapolation.
            w = s.w - tau_w * (symmetrized_gradient_adjoint(r, boundary) - s.p)
            s = s._replace(r=r, w=w, wbar=2 * w - s.w)
        if config.use_wavelet:
            s = s._replace(q=_project_ball(s.q + sigma_c * wavelets.forward(s.xbar, wavelet, levels), wavelet_radius))
            update = update + wavelets.inverse(s.q, wavelet, levels)
        if multicoil:
            v = s.z + sigma_coil * fourier.forward(s.xbar, mask, coil_maps)
            if config.use_delta:   # Moreau: prox of the conjugate of the indicator of the ball around k0
                z = v - sigma_coil * (k0n + _project_ball(v / sigma_coil - k0n, data_radius, axis=data_axes))
            else:
                z = v - sigma_coil * k0n
                if not config.constrained:
                    z = z / (1 + sigma_coil)
            s = s._replace(z=z)
            update = update + fourier.adjoint(z, mask, coil_maps)
        x = prox_g(s.x - tau_c * update)
        return s._replace(x=x, xbar=2 * x - s.x)

    x_init = _zero_filled(k0n, mask, coil_maps)
    if x0 is not None:
        x_init = jnp.broadcast_to(jnp.asarray(x0).astype(cdtype) / scale.astype(cdtype), x_init.shape)
    x_init = prox_g(x_init)
    batch_shape = x_init.shape[:-2]

    def zeros(components):  # a dual or field variable, (..., components, H, W)
        return jnp.zeros(batch_shape + (components,) + x_init.shape[-2:], cdtype)

    w_init = zeros(2) if config.use_tgv else None
    state = _PDHGState(
        x=x_init, xbar=x_init,
        p=zeros(2) if config.use_tv else None,
        q=jnp.zeros(x_init.shape, cdtype) if config.use_wavelet else None,
        z=jnp.zeros(jnp.broadcast_shapes(k0.shape, coil_maps.shape), cdtype) if multicoil else None,
        w=w_init, wbar=w_init,
        r=zeros(3) if config.use_tgv else None)

    def objective_of(s):
        # The public objective of the problem solved (k0 / scale), constraint excluded.
        return objective(s.x, k0n, mask, tv=tv_weight, wavelet_weight=wavelet_weight, wavelet=wavelet, levels=levels,
                         boundary=boundary, coil_maps=coil_maps, constrained=config.constrained,
                         penalise_approximation=config.penalise_approximation, tgv=tgv_weight, tgv_field=s.w)

    info = {}
    if config.tol is None:
        final, count, change, trace = _iterate_fixed(step, state, config, objective_of)
        if config.history:
            info["objective"] = jnp.concatenate([objective_of(state)[None], trace], axis=0)
    else:
        final, count, change = _iterate_until(step, state, config)

    info.update(iterations=count, relative_change=change)
    if config.use_tgv:
        info["tgv_field"] = final.w * scale[..., None, :, :].astype(cdtype)
    return final.x * scale.astype(cdtype), info


def reconstruct(k0, mask, *, tv=DEFAULTS["tv"], wavelet_weight=DEFAULTS["wavelet_weight"],
                wavelet: str = DEFAULTS["wavelet"], levels: int = DEFAULTS["levels"],
                iters: int = DEFAULTS["iters"], coil_maps=None, constrained: bool = True, delta=0.0, tol=None,
                boundary: str = "neumann", step_balance: float = DEFAULTS["step_balance"],
                penalise_approximation: bool = False, normalize: bool = True, checkpoint: bool = True,
                x0=None, return_info: bool = False, history: bool = False, tgv=None):
    """Compressed-sensing reconstruction: TV (or TGV) + wavelet-l1 with data consistency, by PDHG.

    Args:
      k0: measured centred k-space, ``(..., H, W)`` (one coil) or ``(..., C, H, W)`` with
        ``coil_maps``; values off the mask are ignored.  Leading axes are batch axes.
      mask: a Cartesian or SENSE operator (:mod:`mrijax.operators`), or the centred sampling mask
        ``(H, W)`` or ``(..., H, W)`` (boolean or 0/1).
      tv: weight of the isotropic total variation (``>= 0``; a number or 0-d array, so
        it may be traced).  ``0`` (a Python number) drops the term.
      wavelet_weight: weight of ``||W x||_1`` (same rules).
      tgv: ``None`` (default: total variation) or the second-order weight ``alpha0`` of
        second-order total generalised variation, which then replaces TV:
        ``min_w tv * ||grad x - w||_1 + tgv * ||E w||_1`` (``tv`` is the first-order weight
        ``alpha1``; needs ``tv > 0``; module docstring).  As ``tgv`` grows TGV tends to TV.
      wavelet: a name from :data:`mrijax.wavelets.WAVELETS` (``"haar"``, ``"db1"``...``"db10"``).
      levels: wavelet levels; ``H`` and ``W`` must be divisible by ``2**levels``.
      iters: number of PDHG iterations (the maximum when ``tol`` is given).
      coil_maps: optional ``(..., C, H, W)`` sensitivities (SENSE operator).
      constrained: ``True``: ``A x = k0`` exactly (one coil) / in the limit (coil maps).
        ``False``: the penalised form with ``1/2 ||A x - k0||^2``.
      delta: constrained form only: relax ``A x = k0`` to ``||A x - k0|| <= delta ||k0||``
        (basis pursuit denoising, as SPGL1 solves it; ``delta`` relative, so scale-free; a
        number >= 0 or a 0-d array).  One coil: every iterate satisfies it (closed-form
        projection); with coil maps, in the limit.
      tol: ``None`` (fixed ``iters``, reverse-differentiable) or a positive float: stop
        each problem once ``||x_new - x|| / ||x_new|| < tol`` (while loop, forward-mode
        differentiable only).
      boundary: TV boundary, ``"neumann"`` or ``"periodic"``.
      step_balance: ratio setting ``tau`` vs ``sigma`` (module docstring); any positive
        value converges.
      penalise_approximation: include the wavelet approximation band in the l1 term.
      normalize: solve on ``k0 / data_scale(k0)`` (weights relative to intensity).
      checkpoint: rematerialise iterations in reverse mode (less memory, ~1 extra forward).
      x0: optional starting image ``(..., H, W)`` (default: the zero-filled image).
      return_info: also return a dict with ``"iterations"`` (per problem) and
        ``"relative_change"`` (the last ``||x_new - x|| / ||x_new||`` per problem); with
        ``tgv`` also ``"tgv_field"``, the vector field ``w`` ``(..., 2, H, W)`` (in the
        units of the image, for :func:`objective`).
      history: with ``return_info`` and ``tol=None``, also ``info["objective"]``,
        shape ``(iters + 1, ...)``: the objective after each iteration (row 0: the
        start), in the units of the problem solved (``k0 / data_scale`` when
        ``normalize``) and without the constraint.  Costs one wavelet transform per
        iteration.

    Returns:
      the complex image ``(..., H, W)``; with ``return_info`` a pair ``(image, info)``.

    Raises:
      ValueError / TypeError: on bad shapes, names, weights or counts, before any work.
    """
    mask, coil_maps = operators.mask_and_coil_maps(mask, coil_maps)
    levels = _check_inputs(k0, mask, coil_maps, wavelet, levels, boundary)
    _check_weight("tv", tv)
    _check_weight("wavelet_weight", wavelet_weight)
    iters = check_int(iters, "iters", 0)
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol > 0:
            raise ValueError(f"tol must be None or a positive number, got {tol!r}")
    if isinstance(step_balance, bool) or not isinstance(step_balance, numbers.Real) or not (
            np.isfinite(step_balance) and step_balance > 0):
        raise ValueError(f"step_balance must be a positive number, got {step_balance!r}")
    if x0 is not None:
        check_image(x0, "x0")
    if history and (tol is not None or not return_info):
        raise ValueError("history=True needs return_info=True and tol=None")
    _check_weight("delta", delta)
    if tgv is not None:
        _check_weight("tgv", tgv)
        if _is_zero(tgv):
            raise ValueError("tgv=0 leaves the field w free, so the TGV term is 0 for every image; pass "
                             "tgv=None for total variation or a positive second-order weight")
        if _is_zero(tv):
            raise ValueError("tgv needs tv > 0: TGV's first-order weight is tv (tgv is the second-order one)")
    if not constrained and not _is_zero(delta):
        raise ValueError(f"delta={delta!r} relaxes the constrained form; with constrained=False the data term "
                         "is the penalty 1/2 ||A x - k0||^2 (set delta=0 or constrained=True)")
    if _is_zero(tv) and not _is_zero(wavelet_weight) and not penalise_approximation:
        warnings.warn("cs.reconstruct with tv=0 and penalise_approximation=False: nothing penalises the "
                      "wavelet approximation band, and the minimiser moves detail into it (poor, possibly "
                      "non-unique solutions; see the mrijax.cs docstring). Pass penalise_approximation=True "
                      "or a tv > 0.", UserWarning, stacklevel=2)
    config = _SolverConfig(
        wavelet=wavelet.lower(), levels=levels, iters=iters, tol=None if tol is None else float(tol),
        constrained=bool(constrained), boundary=boundary, step_balance=float(step_balance),
        penalise_approximation=bool(penalise_approximation), checkpoint=bool(checkpoint),
        normalize=bool(normalize), history=bool(history), use_tv=not _is_zero(tv),
        use_wavelet=not _is_zero(wavelet_weight), use_delta=bool(constrained) and not _is_zero(delta),
        use_tgv=tgv is not None)
    x, info = _solve(config, k0, mask, coil_maps, x0, tv, wavelet_weight, delta, tgv)
    return (x, info) if return_info else x


def reconstruction_map(mask, *, coil_maps=None, **kwargs):
    """The pure function ``f(k_masked) -> image`` of :func:`reconstruct` for one operator, for attacks.

    ``mask`` is a Cartesian or SENSE operator (:mod:`mrijax.operators`) or a centred mask
    (with ``coil_maps``, SENSE); it is closed over; ``kwargs`` are those of
    :func:`reconstruct` (``return_info`` excluded).  ``f`` maps centred masked k-space
    ``(..., H, W)`` (``(..., C, H, W)`` with coil maps) to the complex image
    ``(..., H, W)``, and works under ``jit``, ``vmap`` and ``grad`` (reverse mode
    unless ``tol`` is set), as :func:`mrijax.attacks.worst_case` needs.

    The arguments are checked here, against the mask's shape, so mistakes surface
    before an attack starts.
    """
    if "return_info" in kwargs:
        raise TypeError("reconstruction_map returns images only; call reconstruct(..., return_info=True) "
                        "for the iteration counts")
    mask, coil_maps = operators.mask_and_coil_maps(mask, coil_maps)
    if not hasattr(mask, "shape"):
        raise TypeError(f"mask must be an array or an operator, got {type(mask).__name__}")
    mask = jnp.asarray(mask)
    if coil_maps is not None:
        coil_maps = jnp.asarray(coil_maps)

    def recon(k):
        return reconstruct(k, mask, coil_maps=coil_maps, **kwargs)

    # Trace once on a dummy input of the mask's shape: raises on bad arguments, costs no compile.
    if coil_maps is None:
        example = jax.ShapeDtypeStruct(mask.shape[-2:], jnp.complex64)
    else:
        example = jax.ShapeDtypeStruct(coil_maps.shape[-3:], jnp.complex64)
    jax.eval_shape(recon, example)
    return recon
