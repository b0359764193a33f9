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
  detail into that free band wherever the unsampled frequencies allow it.  Measured on an MNI
  axial slice at 128 x 128, 33 % lines, db4, 3 levels, 3000 iterations: its detail l1 is 397
  against 568 for the true image and its PSNR 15.1 dB against 20.2 dB for zero filling; two
  starts converge to images 1.7 % apart with equal objective (a flat valley).  With
  ``penalise_approximation=True``: 22.2 dB, and the starts agree to 1e-5.  :func:`reconstruct`
  warns when ``tv=0`` leaves the band free.

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
  phantoms) (``python bench/cs.py tune-tgv``, figures in :data:`TUNING_TGV`).  On the tuning set
  TGV did not beat TV (brain slices +7.8 dB over zero filling against TV's +8.5; the
  piecewise-constant phantoms favour TV); on a piecewise-affine 32 x 32 phantom it gains 6-17 dB
  over TV (the tests ask for 3).

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
smaller field step converges much faster than ``c = 1``: on the 8 brain problems of the tuning
set (``tgv = 2 tv``, ``step_balance=0.1``) the objective's gap to a 3000-iteration reference after
100 / 200 / 400 iterations is 17.8 / 5.0 / 0.7 against 59.6 / 24.4 / 7.7 (c = 0.25 and 0.03 fall
between; c = 4 is slower), and ``python bench/cs.py tune-tgv`` has the phantoms gain 31.9 dB over
zero filling after 400 iterations against 22.6.

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
``levels=3``, ``iters=100``, ``step_balance=0.2``) were tuned once with::

    python bench/cs.py tune

on 16 problems: 128x128 Shepp-Logan, three random-ellipse images and four MNI152 axial
brain slices (``mni_slices(128, count=4)``), each at 25% and 33% sampling
(``masks.gaussian_lines(shape, 4 or 3, sample_n=10, seed)``), scoring the PSNR gain over
zero filling (``PSNR = 10 log10(max|ref|^2 / mean((|x| - |ref|)^2))`` on magnitudes).
The constrained grid was ``iters`` in {100, 200} x ``step_balance`` in
{0.1, 0.2, 0.3, 1} x ``wavelet_weight / tv`` in {0, 0.05, 0.1, 0.2, 0.5}; then the
absolute ``tv`` of the penalised form in {3e-4 ... 3e-2} at ratio 0.1.  The brain gain
is flat (7.6-8.7 dB) over the grid, the phantom gain prefers a little wavelet
sparsity, ``step_balance`` 0.1-0.3 and more iterations; 100 iterations keep the
cost low for attacks (doubling them moves the brain gain by < 0.1 dB).  :data:`TUNING` holds the
figures.  Below 128x128 CS gains less: at 64x64 and 25% the gain on Shepp-Logan is
2.4 dB for one mask (33%: 8.5 dB or more).

Iterations and stability.  ``iters`` also sets how stable the map is.  On the README's
D5-C5 case (``python -m experiments.cs_stability --perturbations=... --setting=constrained:iters=N``,
MNI slice at 128x128, 33% lines) the attack run against the solver finds output changes
2.05 / 2.26 / 2.91 / 3.61 times those of random measurement noise of the same norm after
N = 15 / 20 / 50 / 100 iterations, for +3.3 / +4.4 / +8.0 / +9.9 dB over zero filling:
stopping early is the regularisation that keeps CS's own worst case near that of noise,
at the cost of accuracy (20 iterations still gain >= 3.5 dB on every tuning problem).

Example::

    recon = cs.reconstruction_map(mask)               # pure f(k_masked) -> image
    x_hat = recon(fourier.forward(x, mask))
    g = jax.grad(lambda k: jnp.sum(jnp.abs(recon(k)) ** 2))(k)
"""

from __future__ import annotations

import functools
import numbers
import warnings

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from mrijax import fourier, wavelets
from mrijax._checks import check_coil_maps, check_image, check_mask, complex_dtype_for

__all__ = [
    "DEFAULTS",
    "TUNING",
    "TUNING_TGV",
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

#: Default keyword arguments of :func:`reconstruct` (tuned, see the module docstring).
DEFAULTS = dict(tv=1e-3, wavelet_weight=1e-4, wavelet="db4", levels=3, iters=100, step_balance=0.2)

#: The figures behind :data:`DEFAULTS` (``python bench/cs.py tune``, CPU, float32): mean PSNR
#: gain over zero filling in dB on 8 phantom and 8 brain problems (zero filling: 23.5 / 23.0 dB).
TUNING = """
constrained, 128x128          ratio=wavelet_weight/tv   phantoms   brain   min
  iters 100  step_balance 0.1  ratio 0.0                   21.89     8.35   6.23
  iters 100  step_balance 0.1  ratio 0.1                   22.93     8.13   5.88
  iters 100  step_balance 0.2  ratio 0.0                   20.22     8.63   6.49
  iters 100  step_balance 0.2  ratio 0.1  (default)        22.42     8.53   6.37
  iters 100  step_balance 0.2  ratio 0.5                   20.79     7.63   5.38
  iters 100  step_balance 0.3  ratio 0.1                   21.81     8.44   6.33
  iters 100  step_balance 1.0  ratio 0.1                   20.73     7.89   5.92
  iters 200  step_balance 0.1  ratio 0.1                   30.35     8.48   6.37
  iters 200  step_balance 0.2  ratio 0.1                   29.07     8.47   6.37
penalised, ratio 0.1, 100 iterations
  tv 3e-4                                                  22.38     8.52   6.37
  tv 1e-3  (default)                                       22.15     8.52   6.37
  tv 1e-2                                                  17.97     8.17   6.22
  tv 3e-2                                                  13.53     7.11   5.65
defaults at other sizes (per problem, phantoms | brain slices)
  64x64,   25%:  2.40  9.88 10.43  7.29 |  4.41  4.06  3.06  4.30
  64x64,   33%:  8.54 12.50 14.17 12.06 |  5.26  5.80  5.22  5.38
  256x256, 25%: 17.65 16.29  9.14 10.85 |  9.78 10.55 13.02 11.64
  256x256, 33%: 16.46 18.58  8.54 10.43 | 11.00 10.70 12.12 11.93
"""

#: The figures behind the TGV advice (``python bench/cs.py tune-tgv``, CPU, float32), the same 16
#: problems as :data:`TUNING`: constrained, ``wavelet_weight = 0.1 tv``, ``tgv = ratio * tv``.
TUNING_TGV = """
                                         phantoms   brain   min   (mean PSNR gain over zero filling, dB)
  TV        iters  100  step_balance 0.2    22.42     8.53   6.37
  TV        iters  400  step_balance 0.2    37.02     8.48   6.37
  TV        iters 1600  step_balance 0.2    47.68     8.48   6.37
  TGV 2.0   iters  100  step_balance 0.1    21.44     7.23   5.13
  TGV 2.0   iters  100  step_balance 0.2    21.38     7.80   5.51
  TGV 2.0   iters  200  step_balance 0.1    27.52     7.79   5.41
  TGV 2.0   iters  200  step_balance 0.2    25.15     7.86   5.48
  TGV 2.0   iters  400  step_balance 0.1    31.91     7.85   5.45
  TGV 2.0   iters  400  step_balance 0.2    31.05     7.84   5.45
  TGV 2.0   iters 1600  step_balance 0.1    45.17     7.85   5.45
  TGV 1.0   iters  400  step_balance 0.1    29.74     6.09   4.23
  TGV 1.5   iters  400  step_balance 0.1    32.77     7.37   5.00
  TGV 3.0   iters  400  step_balance 0.1    30.99     8.27   5.98
  TGV 5.0   iters  400  step_balance 0.1    30.79     8.45   6.36
  TGV 10.0  iters  400  step_balance 0.1    30.79     8.46   6.36
(field step c = 0.1.  With c = 1, before 2026-12-01's third session, TGV 2.0 at step_balance 0.1
gained 14.51 / 18.47 / 22.59 / 36.15 dB on the phantoms and 6.48 / 7.68 / 7.80 / 7.83 on the brain
after 100 / 200 / 400 / 1600 iterations.  Ratio >= 5: the second-order dual constraint never binds
here, the gains barely depend on the ratio, and the iterates converge to TV's minimiser, w -> 0)
"""

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


def _is_concrete(v):
    try:
        np.asarray(v)
        return True
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False


def _check_weight(name, value):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, numbers.Real):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
        return
    if not hasattr(value, "shape") or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a scalar (a number or a 0-d array), got {value!r}")
    if _is_concrete(value):
        v = float(np.asarray(value))
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {v}")


def _is_zero(value):
    # Statically zero: the term and its dual variable are dropped from the iteration.
    return isinstance(value, numbers.Real) and value == 0


def _check_positive_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


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


def _solve(k0, mask, coil_maps, tv_weight, wavelet_weight, *, wavelet, levels, iters, constrained, tol,
           boundary, step_balance, penalise_approximation, checkpoint, normalize, x0, history=False, delta=0,
           tgv_weight=None):
    cdtype = complex_dtype_for(k0)
    rdtype = jnp.finfo(cdtype).dtype
    k0 = jnp.asarray(k0).astype(cdtype)
    mask = jnp.asarray(mask).astype(bool)
    multicoil = coil_maps is not None
    coil_mask = jnp.expand_dims(mask, -3) if multicoil else mask
    k0 = _masked(k0, coil_mask)
    if multicoil:
        coil_maps = jnp.asarray(coil_maps).astype(cdtype)

    use_tv = not _is_zero(tv_weight)
    use_wavelet = not _is_zero(wavelet_weight)
    use_tgv = tgv_weight is not None  # second-order TGV in place of TV (needs use_tv)
    tv_weight = jnp.asarray(tv_weight, rdtype)
    if use_tgv:
        tgv_weight = jnp.asarray(tgv_weight, rdtype)
    wavelet_weight = jnp.asarray(wavelet_weight, rdtype)

    if normalize:
        scale = data_scale(k0, mask, coil_maps)[..., None, None]
    else:
        scale = jnp.ones(k0.shape[:-3] if multicoil else k0.shape[:-2], rdtype)[..., None, None]
    k0n = k0 / (scale[..., None, :, :] if multicoil else scale).astype(cdtype)
    # Noise-aware constraint ||A x - k0|| <= delta ||k0|| (per problem; delta = 0: A x = k0).
    use_delta = constrained and not _is_zero(delta)
    if use_delta:
        data_axes = (-3, -2, -1) if multicoil else (-2, -1)
        data_radius = jnp.asarray(delta, rdtype) * jnp.sqrt(
            jnp.sum(jnp.real(k0n * jnp.conj(k0n)), axis=data_axes, keepdims=True))

    # Step sizes from the operator norms (module docstring).
    norm_sq = (_GRAD_NORM_SQ if use_tv else 0.0) + (1.0 if use_wavelet else 0.0)
    norm_sq = jnp.full((1, 1), norm_sq, rdtype)  # (..., 1, 1) like the per-problem coil bound
    if multicoil:
        sens = jnp.sum(jnp.real(coil_maps * jnp.conj(coil_maps)), axis=-3)
        norm_sq = norm_sq + jnp.max(sens, axis=(-2, -1), keepdims=True)
    if use_tgv:
        norm_sq = _tgv_norm_sq(norm_sq, _TGV_FIELD_STEP)
    op_norm = jnp.sqrt(jnp.maximum(norm_sq, jnp.asarray(1e-12, rdtype)))
    weight_scale = tv_weight + wavelet_weight
    weight_scale = jnp.where(weight_scale > 0, weight_scale, jnp.ones((), rdtype))
    tau = step_balance / (weight_scale * op_norm)
    sigma = _SAFETY * weight_scale / (step_balance * op_norm)
    tau_c = tau.astype(cdtype)
    sigma_c = sigma.astype(cdtype)
    sigma_coil = sigma_c[..., None, :, :] if multicoil else None

    coefficient_weights = jnp.asarray(_coefficient_weights(k0.shape, levels, penalise_approximation), rdtype)
    wavelet_radius = wavelet_weight * coefficient_weights

    def prox_g(v):
        if multicoil:
            return v
        k = fourier.fft2c(v)
        if use_delta:   # F is unitary: project the sampled entries onto the ball around k0
            k = jnp.where(mask, k0n + _project_ball(jnp.where(mask, k - k0n, 0), data_radius, axis=(-2, -1)), k)
        elif constrained:
            k = jnp.where(mask, k0n, k)
        else:
            k = jnp.where(mask, (k + tau_c * k0n) / (1 + tau_c), k)
        return fourier.ifft2c(k)

    sigma_field = sigma_c[..., None, :, :]
    tau_field = tau_c[..., None, :, :]
    tau_w = tau_field * _TGV_FIELD_STEP
    sigma_r = sigma_field / _TGV_FIELD_STEP

    def step(state):
        x, xbar, p, q, z, w, wbar, r = state
        update = jnp.zeros_like(x)
        if use_tv:
            dual_input = gradient(xbar, boundary) - wbar if use_tgv else gradient(xbar, boundary)
            p = _project_ball(p + sigma_field * dual_input, tv_weight, axis=-3)
            update = update + gradient_adjoint(p, boundary)
        if use_tgv:
            r = _project_ball(r + sigma_r * symmetrized_gradient(wbar, boundary), tgv_weight, axis=-3)
            # The field has no term of its own in G: a plain gradient step, then extrapolation.
            w_new = w - tau_w * (symmetrized_gradient_adjoint(r, boundary) - p)
            w, wbar = w_new, 2 * w_new - w
        if use_wavelet:
            q = _project_ball(q + sigma_c * wavelets.forward(xbar, wavelet, levels), wavelet_radius)
            update = update + wavelets.inverse(q, wavelet, levels)
        if multicoil:
            v = z + sigma_coil * fourier.forward(xbar, mask, coil_maps)
            if use_delta:   # Moreau: prox of the conjugate of the indicator of the ball around k0
                z = v - sigma_coil * (k0n + _project_ball(v / sigma_coil - k0n, data_radius, axis=data_axes))
            else:
                z = v - sigma_coil * k0n
                if not constrained:
                    z = z / (1 + sigma_coil)
            update = update + fourier.adjoint(z, mask, coil_maps)
        x_new = prox_g(x - tau_c * update)
        return x_new, 2 * x_new - x, p, q, z, w, wbar, r

    x_init = _zero_filled(k0n, mask, coil_maps)
    if x0 is not None:
        x_init = jnp.broadcast_to(jnp.asarray(x0).astype(cdtype) / scale.astype(cdtype), x_init.shape)
    x_init = prox_g(x_init)
    batch_image_shape = x_init.shape
    field_shape = batch_image_shape[:-2] + (2,) + batch_image_shape[-2:]   # p and w
    p_init = jnp.zeros(field_shape, cdtype) if use_tv else None
    q_init = jnp.zeros(batch_image_shape, cdtype) if use_wavelet else None
    z_init = jnp.zeros(jnp.broadcast_shapes(k0.shape, coil_maps.shape), cdtype) if multicoil else None
    w_init = jnp.zeros(field_shape, cdtype) if use_tgv else None
    r_init = jnp.zeros(batch_image_shape[:-2] + (3,) + batch_image_shape[-2:], cdtype) if use_tgv else None
    state = (x_init, x_init, p_init, q_init, z_init, w_init, w_init, r_init)

    def relative_change(x_new, x_old):
        diff = jnp.sqrt(jnp.sum(jnp.real((x_new - x_old) * jnp.conj(x_new - x_old)), axis=(-2, -1)))
        size = jnp.sqrt(jnp.sum(jnp.real(x_new * jnp.conj(x_new)), axis=(-2, -1)))
        return diff / jnp.maximum(size, jnp.finfo(rdtype).tiny)

    def normalized_objective(x, w):
        # The public objective of the problem solved (k0 / scale), constraint excluded.
        return objective(x, k0n, mask, tv=tv_weight, wavelet_weight=wavelet_weight, wavelet=wavelet, levels=levels,
                         boundary=boundary, coil_maps=coil_maps, constrained=constrained,
                         penalise_approximation=penalise_approximation, tgv=tgv_weight if use_tgv else None,
                         tgv_field=w)

    batch_shape = batch_image_shape[:-2]
    info = {}
    if tol is None:
        body = jax.checkpoint(step) if checkpoint else step

        def scan_body(carry, _):
            carry = body(carry)
            return carry, (normalized_objective(carry[0], carry[5]) if history else None)

        state, trace = lax.scan(scan_body, state, None, length=iters)
        # xbar = 2 x_new - x_old, so x_new - x_old = xbar - x_new: the last change for free.
        change = relative_change(state[0], 2 * state[0] - state[1]) if iters else jnp.zeros(batch_shape, rdtype)
        count = jnp.full(batch_shape, iters, jnp.int32)
        if history:
            info["objective"] = jnp.concatenate([normalized_objective(x_init, w_init)[None], trace], axis=0)
    else:
        def cond(carry):
            n, _, done, _, _ = carry
            return (n < iters) & ~jnp.all(done)

        def while_body(carry):
            n, st, done, count, change = carry
            new = step(st)
            new_change = relative_change(new[0], st[0])
            keep = done  # frozen problems keep their state

            def select(a_new, a_old):
                if a_new is None:
                    return None
                k = keep.reshape(keep.shape + (1,) * (a_new.ndim - keep.ndim))
                return jnp.where(k, a_old, a_new)

            st = tuple(select(a, b) for a, b in zip(new, st))
            change = jnp.where(keep, change, new_change)
            count = jnp.where(keep, count, count + 1)
            done = done | (new_change < tol)
            return n + 1, st, done, count, change

        carry = (jnp.asarray(0, jnp.int32), state, jnp.zeros(batch_shape, bool),
                 jnp.zeros(batch_shape, jnp.int32), jnp.full(batch_shape, jnp.inf, rdtype))
        _, state, _, count, change = lax.while_loop(cond, while_body, carry)

    x = state[0] * scale.astype(cdtype)
    info.update(iterations=count, relative_change=change)
    if use_tgv:
        info["tgv_field"] = state[5] * scale[..., None, :, :].astype(cdtype)
    return x, info


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
      mask: centred sampling mask ``(H, W)`` or ``(..., H, W)`` (boolean or 0/1).
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
    levels = _check_inputs(k0, mask, coil_maps, wavelet, levels, boundary)
    _check_weight("tv", tv)
    _check_weight("wavelet_weight", wavelet_weight)
    iters = _check_positive_int("iters", iters, 0)
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
    x, info = _solve_jit(k0, mask, coil_maps, tv, wavelet_weight, wavelet=wavelet.lower(), levels=levels,
                         iters=iters, constrained=bool(constrained), tol=tol, boundary=boundary,
                         step_balance=float(step_balance), penalise_approximation=bool(penalise_approximation),
                         checkpoint=bool(checkpoint), normalize=bool(normalize), x0=x0,
                         static_tv_zero=_is_zero(tv), static_wavelet_zero=_is_zero(wavelet_weight),
                         delta=delta, static_delta_zero=_is_zero(delta),
                         history=bool(history), tgv_weight=tgv)
    return (x, info) if return_info else x


@functools.partial(jax.jit, static_argnames=(
    "wavelet", "levels", "iters", "constrained", "tol", "boundary", "step_balance", "penalise_approximation",
    "checkpoint", "normalize", "static_tv_zero", "static_wavelet_zero", "static_delta_zero", "history"))
def _solve_jit(k0, mask, coil_maps, tv_weight, wavelet_weight, *, wavelet, levels, iters, constrained, tol,
               boundary, step_balance, penalise_approximation, checkpoint, normalize, x0, static_tv_zero,
               static_wavelet_zero, history, delta, static_delta_zero, tgv_weight):
    # Zero weights are passed as traced values through jit; re-mark them as static zeros.
    tv_weight = 0 if static_tv_zero else tv_weight
    wavelet_weight = 0 if static_wavelet_zero else wavelet_weight
    delta = 0 if static_delta_zero else delta
    return _solve(k0, mask, coil_maps, tv_weight, wavelet_weight, wavelet=wavelet, levels=levels, iters=iters,
                  constrained=constrained, tol=tol, boundary=boundary, step_balance=step_balance,
                  penalise_approximation=penalise_approximation, checkpoint=checkpoint, normalize=normalize,
                  x0=x0, history=history, delta=delta, tgv_weight=tgv_weight)


def reconstruction_map(mask, *, coil_maps=None, **kwargs):
    """The pure function ``f(k_masked) -> image`` of :func:`reconstruct` for one mask, for attacks.

    ``mask`` (and ``coil_maps``, if given) are closed over; ``kwargs`` are those of
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
    if not hasattr(mask, "shape"):
        raise TypeError(f"mask must be an array, got {type(mask).__name__}")
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
