"""Hallucinations through the kernel of ``A``: detail transfer and the accuracy-stability trade-off.

Gottschling, Antun, Hansen and Adcock, "The troublesome kernel" (SIAM Review 2025):

* Main result 2.1 (detail transfer).  If a detail ``x_det`` is in, or close to, the kernel
  of the sampling operator ``A`` (``||A x_det||`` small), then *any* map ``f`` that recovers
  ``x + x_det`` from ``A(x + x_det)`` also puts the detail into its reconstruction of ``x``:
  ``f(A x) ~ f(A(x + x_det)) ~ x + x_det``.  A hallucination, not an overfitting artefact.
* Main result 2.3 (accuracy-stability trade-off).  If ``f`` recovers two images ``x`` and
  ``x'`` whose difference ``d`` has small measurements, then ``f`` must amplify the tiny
  change ``A d`` of its input into the change ``d`` of its output: its local gain near
  ``A x`` is at least about ``||d|| / ||A d|| = 1 / v``.  Accuracy on both forces
  instability; a stable map must fail on one of them (hallucinate, or lose the detail).

This module holds the mathematics of the experiment (``experiments/detail_transfer.py``)
and of the "hallucination map" of a reconstruction error:

* Kernel and range parts: :func:`detail_in_kernel`, :func:`detail_in_range`,
  :func:`error_split` (the error of a reconstruction split into what the measurements
  see and what they cannot see), :func:`conjugate_mask`, :func:`conjugate_symmetric_mask`.
* Visibility ``v(d) = ||A d|| / ||d||``: :func:`visibility`, :func:`max_visibility`,
  :func:`detail_with_visibility` (a detail of prescribed visibility, built from the kernel
  and range parts of a drawn one).
* Measuring transfer and amplification: :func:`transferred_fraction`,
  :func:`local_gain`, :func:`measurement_noise`.

Training networks on a few fixed pairs (the toy experiment of the paper's Fig. 2) is
:mod:`mrijax.pair_training`.

Real and complex details.  ``A = P_Omega F`` is complex-linear, and the orthogonal
projection onto its kernel, ``x - A* A x``, maps a real image to a *complex* one unless
the mask is conjugate-symmetric (sampled at ``-k`` whenever at ``k``).  The real part of
that projection is no longer in the kernel (its measurements are the half of ``A x`` on
the frequencies whose mirror image is not sampled).  For real images (and networks such
as AUTOMAP that output real images) the right object is the *real kernel*
``{x real : A x = 0}``: a real ``x`` has a Hermitian spectrum, ``X(-k) = conj X(k)``, so
``A x = 0`` exactly when ``X`` vanishes on the mask *and* on its mirror image.  With
``real=True`` the functions here project onto that space: zero the spectrum on
:func:`conjugate_symmetric_mask` ``(mask)``.  The result is real and exactly invisible
(``A x_det = 0`` up to rounding).  It is a smaller space than the complex kernel, so a
real detail keeps less of its energy there.  Its complement, the real range part, is
visible but, under a mask that is not conjugate-symmetric, only partly: a frequency pair
``{k, -k}`` with one member sampled shows half of its energy, so a real detail's range
part has visibility between ``1/sqrt(2)`` and 1 (:func:`max_visibility`).

Conventions: images ``(..., H, W)`` with leading batch axes, centred boolean masks
(DC at ``(H//2, W//2)``) broadcasting against them, the centred orthonormal FFT of
:mod:`mrijax.fourier`, norms over the two trailing axes.  Everything numeric is pure
``jax.numpy`` and works under ``jit``, ``vmap`` and ``grad`` (the training helpers
compile their own steps).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier, operators
from mrijax._checks import check_image, check_mask, is_concrete

__all__ = [
    "conjugate_mask",
    "conjugate_symmetric_mask",
    "detail_in_kernel",
    "detail_in_range",
    "visibility",
    "max_visibility",
    "detail_with_visibility",
    "transferred_fraction",
    "local_gain",
    "error_split",
    "measurement_noise",
]

_AXES = (-2, -1)


def _sqnorm(a):
    """Squared l2 norm over the trailing two axes (real result)."""
    return jnp.sum(jnp.square(jnp.abs(a)), axis=_AXES)


def _check_real_image(x, name):
    check_image(x, name)
    if np.dtype(x.dtype).kind == "c":
        raise TypeError(f"{name} must be real for real=True (the real kernel is a space of real "
                        f"images), got dtype {x.dtype}; pass real=False for the complex kernel")


# ----------------------------------------------------------------------------- kernel and range


def conjugate_mask(mask):
    """The mirror image of a centred mask through the DC: sampled at ``k`` iff ``mask`` is at ``-k``.

    In centred k-space of side ``n`` the frequency of index ``i`` is ``i - n//2``, so ``-k``
    sits at index ``(2 (n//2) - i) mod n``: a flip followed by a roll by one for even ``n``
    (the DC and, for even ``n``, the Nyquist index ``i = 0`` are their own mirror images), a
    plain flip for odd ``n``.
    A real image ``x`` has ``fft2c(x)[conjugate index] = conj(fft2c(x))``.

    Args:
      mask: centred mask ``(..., H, W)`` (boolean or 0/1).

    Returns:
      The mirrored mask, same shape and dtype.
    """
    m = jnp.asarray(mask)
    if m.ndim < 2:
        raise ValueError(f"mask must have at least 2 axes (..., H, W), got shape {tuple(m.shape)}")
    for axis in (-2, -1):
        n = m.shape[axis]
        m = jnp.flip(m, axis=axis)
        if n % 2 == 0:
            m = jnp.roll(m, 1, axis=axis)
    return m


def conjugate_symmetric_mask(mask):
    """``mask | conjugate_mask(mask)``: the frequencies whose measurements a *real* image feeds.

    For a real image ``x``, ``A x = 0`` iff ``fft2c(x)`` vanishes on this set (the real kernel).
    Equal to ``mask`` when the mask is already conjugate-symmetric (as equispaced line masks
    often are); for random line masks it holds up to twice as many lines.
    """
    m = jnp.asarray(mask)
    return jnp.logical_or(m.astype(bool), conjugate_mask(m).astype(bool))


def _operator(operator, x, name):
    """The operator of a mask or an operator, checked against the image ``x``."""
    check_image(x, name)
    op = operators.as_operator(operator)
    operators.check_fits(op, x, name)
    if isinstance(op, operators.Cartesian):
        check_mask(op.mask, x.shape)
    return op


def _measured_sqnorm(operator, x):
    """``||A x||^2`` per image."""
    op = _operator(operator, x, "detail")
    return jnp.sum(jnp.abs(op.forward(x)) ** 2, axis=tuple(range(-len(op.measurement_shape), 0)))


def _projection_operator(detail, operator, real):
    """The operator whose complex kernel projection is the requested one (real: the real kernel)."""
    op = _operator(operator, detail, "detail")
    if not real:
        return op
    _check_real_image(detail, "detail")
    if not isinstance(op, operators.Cartesian):
        raise ValueError(f"real=True (the real kernel) is implemented for the Cartesian operator, got a "
                         f"{type(op).__name__} operator; use real=False")
    return operators.cartesian(conjugate_symmetric_mask(op.mask))


def detail_in_kernel(detail, mask, *, real: bool = False):
    """The component of ``detail`` that the measurements cannot see: its kernel projection.

    * ``real=False``: the orthogonal projection onto the kernel of ``A`` (complex-linear),
      ``detail - A* A detail`` (:func:`mrijax.fourier.null_space_projection`).  Complex in
      general, even for a real detail.
    * ``real=True``: the orthogonal projection of a real detail onto the *real* kernel
      ``{x real : A x = 0}``: the spectrum zeroed on :func:`conjugate_symmetric_mask`.  The
      result is real (the imaginary rounding residue is dropped) and ``A`` of it is zero up
      to rounding.  This is what an experiment with real images needs; taking the real part
      of the complex projection instead would leave a visible component.

    Either way the projection is idempotent and orthogonal (for the real inner product
    ``Re <a, b>``): ``detail = detail_in_kernel + detail_in_range`` with the two parts
    orthogonal, and ``A detail_in_range = A detail``.

    Args:
      detail: image ``(..., H, W)``; real with ``real=True``.
      mask: a measurement operator (:mod:`mrijax.operators`) or a centred mask broadcasting
        against it.
      real: project onto the real kernel (see above).

    Returns:
      Complex ``(..., H, W)`` (``real=False``) or a real array of ``detail``'s floating dtype.

    Raises:
      TypeError: a complex ``detail`` with ``real=True``.
      ValueError: shapes that do not fit.
    """
    detail = jnp.asarray(detail)
    out = _projection_operator(detail, mask, real).kernel_projection(detail)
    if real:
        return jnp.real(out).astype(jnp.result_type(detail.dtype, jnp.float32))
    return out


def detail_in_range(detail, mask, *, real: bool = False):
    """The visible component ``detail - detail_in_kernel(detail, mask, real=real)``.

    ``real=False``: ``A* A detail`` (the range of ``A*``), whose visibility is exactly 1.
    ``real=True``: the real image with the spectrum of ``detail`` on
    :func:`conjugate_symmetric_mask` and zero elsewhere (its visibility is between
    ``1/sqrt(2)`` and 1).  Same arguments and dtypes as :func:`detail_in_kernel`.
    """
    detail = jnp.asarray(detail)
    out = _projection_operator(detail, mask, real).range_projection(detail)
    if real:
        return jnp.real(out).astype(jnp.result_type(detail.dtype, jnp.float32))
    return out


def visibility(detail, mask):
    """``||A detail|| / ||detail||``: the fraction of a detail's norm that reaches the measurements.

    0 for a detail in the kernel, 1 for one in the range of ``A*``.  Because ``fft2c`` is
    orthonormal this is ``||mask * fft2c(detail)|| / ||fft2c(detail)||``.

    Args:
      detail: image ``(..., H, W)``, real or complex.
      mask: a measurement operator (:mod:`mrijax.operators`) or a centred mask broadcasting
        against it.

    Returns:
      One value per image, shape ``detail.shape[:-2]`` (NaN for an all-zero detail).
    """
    detail = jnp.asarray(detail)
    return jnp.sqrt(_measured_sqnorm(mask, detail) / _sqnorm(detail))


def max_visibility(detail, mask, *, real: bool = False):
    """The largest visibility :func:`detail_with_visibility` can give ``detail``: that of its range part.

    1 for ``real=False`` (the range of ``A*`` is seen isometrically) unless the range part
    is zero; for ``real=True`` between ``1/sqrt(2)`` and 1 (see the module docstring).
    Shape ``detail.shape[:-2]``; NaN where the range part is zero.
    """
    return visibility(detail_in_range(detail, mask, real=real), mask)


def detail_with_visibility(detail, mask, v, *, real: bool = False, norm=None):
    """A detail of visibility exactly ``v``: the kernel part of ``detail`` plus a scaled range part.

    With ``n = detail_in_kernel(detail)`` and ``r = detail_in_range(detail)`` (orthogonal,
    ``A n = 0``), the result is proportional to ``n + t r`` with

        t = v ||n|| / sqrt(||A r||^2 - v^2 ||r||^2),

    the unique ``t >= 0`` with ``||A (n + t r)|| / ||n + t r|| = v``.  ``v = 0`` gives the
    kernel part; ``v`` close to :func:`max_visibility` gives mostly the range part.  The
    result is scaled to norm ``norm`` (default ``||detail||``), so a family of details for
    several ``v`` has one energy and differs only in how much of it is measured: the
    details of the accuracy-stability experiment (result 2.3), where a map accurate on
    ``x`` and ``x + d_v`` needs a gain of ``1 / v``.

    Args:
      detail: image ``(..., H, W)`` (real with ``real=True``).
      mask: a measurement operator (:mod:`mrijax.operators`) or a centred mask broadcasting
        against it.
      v: target visibility, a scalar or an array broadcasting against ``detail.shape[:-2]``,
        with ``0 <= v < max_visibility(detail, mask, real=real)`` (``v`` equal to the
        maximum is allowed only for a detail with no kernel part).
      real: work in the real kernel/range (see :func:`detail_in_kernel`).
      norm: the norm of the result, scalar or per image (default: ``||detail||``).

    Returns:
      The detail ``d_v``, same shape as ``detail`` (complex for ``real=False``, real for
      ``real=True``), with ``visibility(d_v, mask) == v`` up to rounding (float64: about
      1e-15 relative).

    Raises:
      ValueError: (concrete inputs) ``v`` outside ``[0, max_visibility)``, or a detail whose
        kernel part and range part are both zero.  Under ``jit`` such entries are NaN.
    """
    detail = jnp.asarray(detail)
    n = detail_in_kernel(detail, mask, real=real)
    r = detail.astype(n.dtype) - n                      # the range part, orthogonal to n
    rdtype = jnp.real(n).dtype
    v = jnp.asarray(v, rdtype)
    a2 = _sqnorm(n)
    b2 = _sqnorm(r)
    c2 = _measured_sqnorm(mask, r)
    # Where the detail has no kernel part only v = v_max works (t = anything > 0: take 1).
    denom = c2 - jnp.square(v) * b2
    t = jnp.where(a2 > 0, v * jnp.sqrt(a2) / jnp.sqrt(denom), jnp.where(denom == 0, 1.0, jnp.nan))
    t = jnp.where(v == 0, 0.0, t)
    out = n + t[..., None, None].astype(n.dtype) * r
    target_norm = jnp.sqrt(_sqnorm(detail)) if norm is None else jnp.asarray(norm, rdtype)
    scale = target_norm / jnp.sqrt(_sqnorm(out))
    out = out * scale[..., None, None].astype(out.dtype)
    if is_concrete(out, v, detail):
        bad = ~np.isfinite(np.asarray(out)).all(axis=_AXES) | (np.asarray(v) < 0)
        if np.any(bad):
            vmax = np.broadcast_to(np.sqrt(np.asarray(c2) / np.asarray(b2)), bad.shape)[bad]
            vbad = np.broadcast_to(np.asarray(v), bad.shape)[bad]
            pairs = ", ".join(f"v = {a:.4g} with max_visibility {b:.4g}" for a, b in zip(vbad, vmax))
            raise ValueError(
                f"v must satisfy 0 <= v < max_visibility (the visibility of the detail's range part"
                f"{' in the real kernel/range' if real else ''}); got {pairs}")
    return out


# ----------------------------------------------------------------------------- measuring


def transferred_fraction(recon_of_x, x, detail):
    """How much of a detail a reconstruction of the detail-free image contains.

    ``Re <f(A x) - x, x_det> / ||x_det||^2``: the coefficient of the detail in the
    reconstruction error (the least-squares fit of ``f(A x) - x`` by a multiple of
    ``x_det``).  1: the detail is reproduced in full (a hallucination); 0: nothing of it
    (in the mean-square sense: an error orthogonal to the detail also scores 0).

    Args:
      recon_of_x: the reconstruction ``f(A x)``, ``(..., H, W)``.
      x: the detail-free image.
      detail: ``x_det``.  The three broadcast against each other.  Mixed real/complex is
        allowed; the inner product is the real one, ``Re sum conj(x_det) (f - x)``.

    Returns:
      One value per image (the broadcast leading shape).
    """
    for a, name in ((recon_of_x, "recon_of_x"), (x, "x"), (detail, "detail")):
        check_image(jnp.asarray(a), name)
    err = jnp.asarray(recon_of_x) - jnp.asarray(x)
    d = jnp.asarray(detail)
    inner = jnp.sum(jnp.real(jnp.conj(d) * err), axis=_AXES)
    return inner / _sqnorm(d)


def local_gain(recon_perturbed, recon_clean, measurement_change_norm):
    """``||f(y + e) - f(y)|| / ||e||``: how much a map amplifies a change ``e`` of its input.

    With ``y = A x`` and ``e = A x_det`` this is the gain of result 2.3: a map that is
    accurate on both ``x`` and ``x + x_det`` has a gain of about ``||x_det|| / ||A x_det||``
    (the inverse visibility).

    Args:
      recon_perturbed: ``f(y + e)``, ``(..., H, W)``.
      recon_clean: ``f(y)``, same shape.
      measurement_change_norm: ``||e||``, scalar or per image (broadcasting against the
        leading axes).

    Returns:
      One value per image.
    """
    diff = jnp.asarray(recon_perturbed) - jnp.asarray(recon_clean)
    check_image(diff, "recon_perturbed - recon_clean")
    return jnp.sqrt(_sqnorm(diff)) / jnp.asarray(measurement_change_norm)


def error_split(recon, x, mask, *, real: bool = False) -> dict:
    """The error of a reconstruction split into its measured part and its kernel part.

    With ``e = recon - x``:

    * ``range = A* A e`` (``real=False``): the part of the error the measurements see.
      ``A range = A e = A recon - A x``, the data-consistency residual; it is zero for a map
      with exact data consistency on noiseless data.
    * ``kernel = e - A* A e``: the part the measurements *cannot* see, the "hallucination
      map": structure the map added (or removed) that ``y = A x`` cannot have told it.
      Any image ``x + kernel`` has exactly the measurements of ``x``.

    The two are orthogonal, so ``error_norm**2 == range_norm**2 + kernel_norm**2``.

    ``real=True`` splits a real error with the real kernel instead (the spectrum on
    :func:`conjugate_symmetric_mask` is the measured part): both parts are real images.
    Use it when the images are known to be real (then "real" is prior knowledge, and a
    complex kernel part would count as unmeasured what realness already pins down); the
    kernel part is then smaller or equal.

    Args:
      recon: reconstruction ``(..., H, W)``, real or complex.  Compare like with like:
        for a magnitude-output network use a real ``x`` (or ``|x|``).
      x: the true image, broadcasting against ``recon``.
      mask: the centred sampling mask of the measurements.
      real: split in the real kernel/range; both inputs must be real.

    Returns:
      A dict of arrays:

      * ``"error"``: ``recon - x``;
      * ``"range"``, ``"kernel"``: the two parts (complex for ``real=False``, real for
        ``real=True``), same shape as ``error``;
      * ``"error_norm"``, ``"range_norm"``, ``"kernel_norm"``: l2 norms per image;
      * ``"kernel_fraction"``: ``kernel_norm**2 / error_norm**2``, the share of the squared
        error that lies in the kernel (NaN for a perfect reconstruction).
    """
    recon, x = jnp.asarray(recon), jnp.asarray(x)
    check_image(recon, "recon")
    check_image(x, "x")
    if real:
        _check_real_image(recon, "recon")
        _check_real_image(x, "x")
    try:
        np.broadcast_shapes(tuple(recon.shape), tuple(x.shape))
    except ValueError:
        raise ValueError(f"recon has shape {tuple(recon.shape)} and x {tuple(x.shape)}: they must broadcast "
                         "(compare a reconstruction with its own image)") from None
    err = recon - x
    kernel = detail_in_kernel(err, mask, real=real)
    rng = err.astype(kernel.dtype) - kernel
    e2, r2, k2 = _sqnorm(err), _sqnorm(rng), _sqnorm(kernel)
    return {"error": err, "range": rng, "kernel": kernel, "error_norm": jnp.sqrt(e2),
            "range_norm": jnp.sqrt(r2), "kernel_norm": jnp.sqrt(k2), "kernel_fraction": k2 / e2}


def measurement_noise(key, mask, norm, shape=None, dtype=jnp.complex64):
    """Complex Gaussian noise on the sampled k-space entries, rescaled to norm exactly ``norm``.

    A draw of i.i.d. ``N(0, 1) + i N(0, 1)`` on the entries where ``mask`` is true (zero
    elsewhere), divided by its own norm and multiplied by ``norm``: a random direction in
    measurement space at a fixed distance, for ``f(A x + e)``.

    Args:
      key: a JAX PRNG key.
      mask: centred mask ``(..., H, W)``.
      norm: ``||e||``, scalar or per image (broadcasting against the leading axes).
      shape: output shape (default ``mask.shape``); must broadcast with the mask.
      dtype: complex dtype of the result.

    Returns:
      Masked k-space ``e`` of shape ``shape``.
    """
    mask = jnp.asarray(mask)
    shape = tuple(mask.shape) if shape is None else tuple(shape)
    check_mask(mask, shape)
    rdtype = jnp.finfo(dtype).dtype
    k1, k2 = jax.random.split(key)
    g = (jax.random.normal(k1, shape, rdtype) + 1j * jax.random.normal(k2, shape, rdtype)).astype(dtype)
    g = fourier.apply_mask(g, mask)
    scale = jnp.asarray(norm, rdtype) / jnp.sqrt(_sqnorm(g))
    return g * scale[..., None, None].astype(dtype)
