"""The MRI sampling operator ``A = P_Omega F`` and its relatives.

Conventions (the fastMRI / SigPy / deepinv ones):

* Images and k-space share the trailing two axes ``(H, W)``; any leading axes are
  batch axes and broadcast.
* ``fft2c`` is the *centred orthonormal* 2-D DFT,
  ``fftshift(fft2(ifftshift(x), norm="ortho"))``: the image centre sits at
  ``(H//2, W//2)`` and so does the DC frequency.  Being orthonormal, it preserves
  the l2 norm (Parseval) and its inverse is its adjoint.
* A mask is a boolean array whose trailing axes are ``(H, W)``, *centred* like the
  k-space (DC at ``(H//2, W//2)``).
* "Masked k-space" is a full ``(H, W)`` array with zeros off the mask.  It is the
  representation the attack and the networks use, because its shape does not depend
  on the mask.  :func:`gather` / :func:`scatter` convert to and from the
  measurement vector ``y`` in ``C^m`` for models such as AUTOMAP.

Other layouts in the literature:

* Deep-MRI-Reconstruction (Schlemper et al.) and Invfool use the *uncentred*
  orthonormal FFT ``fft2(x, norm="ortho")`` with uncentred masks (DC at ``[0, 0]``).
  :func:`to_uncentred_mask` / :func:`from_uncentred_mask` and
  :func:`to_uncentred_kspace` / :func:`from_uncentred_kspace` convert exactly.  The
  two k-spaces differ by the shift *and* a unit-modulus phase per frequency (the
  image-domain ``ifftshift``), so data consistency, which acts frequency by
  frequency, gives identical images in either layout.
* The troublesome-kernel code uses ``fftshift(fft2(x))`` without the ``ifftshift``
  on the image.  For even sizes this differs from ``fft2c`` by the checkerboard
  phase ``(-1)^(i + j)`` on k-space: magnitudes agree, phases do not, so k-space
  from that code must go through :func:`from_uncentred_kspace` after an
  ``ifftshift`` rather than be used as centred data directly.  And unless that code
  passes ``norm="ortho"``, its FFT is unnormalised: divide its k-space by
  ``sqrt(H * W)`` first.

Every function here is pure and works under ``jit``, ``vmap`` and ``grad``.  Real
inputs are promoted to complex64 (complex128 when ``jax_enable_x64`` is on and the
input is float64).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from mrijax._checks import check_coil_maps, check_image, check_mask, complex_dtype_for

__all__ = ["adjoint", "apply_mask", "fft2c", "forward", "from_uncentred_kspace", "from_uncentred_mask",
           "gather", "ifft2c", "normal", "null_space_projection", "range_projection", "scatter",
           "to_uncentred_kspace", "to_uncentred_mask", "zero_filled"]

_AXES = (-2, -1)


def _as_complex(x):
    x = jnp.asarray(x)
    return x.astype(complex_dtype_for(x))


def fft2c(x):
    """Centred orthonormal 2-D DFT over the trailing two axes."""
    check_image(x)
    x = _as_complex(x)
    return jnp.fft.fftshift(jnp.fft.fft2(jnp.fft.ifftshift(x, axes=_AXES), norm="ortho"), axes=_AXES)


def ifft2c(k):
    """Inverse (= adjoint) of :func:`fft2c`."""
    check_image(k, "k")
    k = _as_complex(k)
    return jnp.fft.fftshift(jnp.fft.ifft2(jnp.fft.ifftshift(k, axes=_AXES), norm="ortho"), axes=_AXES)


def apply_mask(k, mask):
    """Zero ``k`` off the sampled set.  ``where`` keeps the result exact (no 0 * inf)."""
    k = _as_complex(k)
    return jnp.where(jnp.asarray(mask).astype(bool), k, jnp.zeros((), k.dtype))


def _coil_axis(mask):
    # A mask (..., H, W) broadcast over the coil axis of (..., C, H, W).
    return jnp.expand_dims(jnp.asarray(mask), -3)


def forward(x, mask, coil_maps=None):
    """``A x``: image ``(..., H, W)`` -> masked centred k-space.

    Single coil: ``mask * fft2c(x)``, shape ``(..., H, W)``.
    With ``coil_maps`` ``(..., C, H, W)``: the SENSE operator, per coil
    ``mask * fft2c(S_c x)``, shape ``(..., C, H, W)``.
    """
    check_image(x)
    check_mask(mask, x.shape)
    if coil_maps is None:
        return apply_mask(fft2c(x), mask)
    check_coil_maps(coil_maps, x.shape)
    coil_images = jnp.expand_dims(_as_complex(x), -3) * coil_maps
    return apply_mask(fft2c(coil_images), _coil_axis(mask))


def adjoint(k, mask, coil_maps=None):
    """``A* k``: the exact adjoint of :func:`forward`.

    Single coil: ``ifft2c(mask * k)`` (the zero-filled reconstruction).
    With ``coil_maps``: ``sum_c conj(S_c) ifft2c(mask * k_c)``.
    """
    check_image(k, "k")
    check_mask(mask, k.shape, coil_axis=coil_maps is not None)
    if coil_maps is None:
        return ifft2c(apply_mask(k, mask))
    check_coil_maps(coil_maps, k.shape)
    coil_images = ifft2c(apply_mask(k, _coil_axis(mask)))
    return jnp.sum(jnp.conj(coil_maps) * coil_images, axis=-3)


def zero_filled(k, mask, coil_maps=None):
    """The zero-filled reconstruction ``A* k`` (an alias of :func:`adjoint` that says what it is for)."""
    return adjoint(k, mask, coil_maps)


def normal(x, mask, coil_maps=None):
    """``A* A x``.  For one coil this is the orthogonal projection onto the range of ``A*``."""
    return adjoint(forward(x, mask, coil_maps), mask, coil_maps)


def range_projection(x, mask):
    """Orthogonal projection of ``x`` onto the range of ``A*`` (what the measurements see), one coil."""
    return normal(x, mask)


def null_space_projection(x, mask):
    """Orthogonal projection onto the kernel of ``A``: ``x - A* A x`` (what the measurements cannot see), one coil."""
    return _as_complex(x) - range_projection(x, mask)


def _static_indices(mask):
    try:
        m = np.asarray(mask)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError(
            "gather/scatter need a concrete (static) mask: the index set fixes the length of y. "
            "Close over the mask as a NumPy array instead of passing it as a traced argument.") from e
    if m.ndim != 2:
        raise ValueError(f"gather/scatter need one 2-D mask (H, W), got shape {m.shape}")
    return np.flatnonzero(m.astype(bool))


def gather(k, mask):
    """Masked k-space ``(..., H, W)`` -> measurement vector ``y`` ``(..., m)``, ``m = mask.sum()``.

    The order is row-major over the centred grid.  ``mask`` must be concrete.
    """
    check_image(k, "k")
    check_mask(mask, k.shape)
    idx = _static_indices(mask)
    k = jnp.asarray(k)
    return k.reshape(k.shape[:-2] + (-1,))[..., idx]


def scatter(y, mask):
    """Measurement vector ``y`` ``(..., m)`` -> masked k-space ``(..., H, W)`` (zeros off the mask).

    The exact adjoint (and left inverse) of :func:`gather`.
    """
    idx = _static_indices(mask)
    y = jnp.asarray(y)
    if y.shape[-1:] != (idx.size,):
        raise ValueError(f"y has {y.shape[-1] if y.ndim else 0} entries but the mask samples {idx.size}")
    h, w = np.shape(mask)
    y = _as_complex(y)
    out = jnp.zeros(y.shape[:-1] + (h * w,), y.dtype).at[..., idx].set(y)
    return out.reshape(y.shape[:-1] + (h, w))


def to_uncentred_mask(mask):
    """Centred mask -> the uncentred layout (DC at ``[0, 0]``) of Deep-MRI-Reconstruction / Invfool."""
    return jnp.fft.ifftshift(jnp.asarray(mask), axes=_AXES)


def from_uncentred_mask(mask):
    """Uncentred mask (DC at ``[0, 0]``) -> centred layout."""
    return jnp.fft.fftshift(jnp.asarray(mask), axes=_AXES)


def to_uncentred_kspace(k):
    """Centred k-space (``fft2c`` of an image) -> ``fft2(image, norm="ortho")`` of the same image."""
    return jnp.fft.fft2(ifft2c(k), norm="ortho")


def from_uncentred_kspace(k):
    """``fft2(image, norm="ortho")`` -> centred k-space ``fft2c(image)`` of the same image."""
    check_image(k, "k")
    return fft2c(jnp.fft.ifft2(_as_complex(k), norm="ortho"))
