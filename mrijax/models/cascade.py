"""The Deep Cascade of CNNs (Schlemper et al. 2017), the "Deep MRI" network of Antun et al.

The network alternates ``n_cascades`` times between a residual CNN block and a data
consistency (DC) layer::

    x <- x_zf
    repeat n_cascades times:
        x <- x + CNN_c(x)                  # residual on the block's own input
        x <- DC(x, k0, mask, noise_level)  # always with the ORIGINAL measured k-space k0

Each CNN block runs ``n_convs`` 'same' convolutions on the image as two real channels
``(real, imag)`` (channels last, NHWC): ``2 -> F -> ... -> F -> 2``, ReLU after every
convolution but the last.  DC is :func:`mrijax.dc.data_consistency`.

Parameters are a plain pytree with predictable names (HWIO kernels, as Flax)::

    params['params']['block_{c}']['conv_{l}']['kernel']   # (k, k, C_in, C_out)
    params['params']['block_{c}']['conv_{l}']['bias']     # (C_out,)
    params['params']['log_noise_level']                   # (n_cascades,), only if learned

Two implementations of the thin convolutions
--------------------------------------------
On XLA:CPU the first (2 -> F) and last (F -> 2) convolutions of each block run far below
the throughput of the F -> F ones (so few channels do not vectorise well in the convolution
emitter; measured in ``docs/performance.md``).  ``small_conv_impl="matmul"`` computes them as
matrix products instead, with *the same kernel pytree*:

* first conv: im2col over the ``k x k`` neighbourhood, ``(N*H*W, k*k*2) @ (k*k*2, F)``;
* last conv: ``(N*H*W, F) @ (F, k*k*2)`` then a sum of the ``k*k`` shifted 2-channel
  planes (the transpose of im2col, so nothing of size ``k*k*F`` is materialised).

``"auto"`` (the default) picks ``"matmul"`` on the CPU backend and ``"conv"`` (cuDNN /
XLA's convolution) elsewhere.  Both give the same function up to rounding, including
gradients; the tests check that in float64.  The F -> F convolutions dominate the cost of
D5-C5 either way, so the whole-network gain is modest.

The hidden F -> F convolutions: XLA or Winograd
-----------------------------------------------
``conv_impl`` selects how the ``F -> F`` convolutions (98% of D5-C5's FLOPs) are computed,
again with the same parameters:

* ``"xla"``: ``lax.conv_general_dilated`` (Eigen's spatial convolution on CPU, cuDNN on GPU);
* ``"winograd"``: Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016), see
  :func:`conv_same_winograd`: 4 instead of 9 multiplications per output and channel pair,
  as ``(t*t)`` independent ``(N*tiles, C_in) @ (C_in, C_out)`` matrix products between
  input and output transforms made of strided slices.  Its float32 error is no larger
  than the direct convolution's.  The input gradient is a Winograd correlation too
  (``jax.custom_vjp``), which means **no forward-mode autodiff** (``jax.jvp``, and so
  :func:`mrijax.attacks.local_lipschitz`) with this option;
* ``"winograd4"``: F(4x4, 3x3), 2.25 multiplications, about 10x the float32 error;
* ``"auto"`` (the default): ``"xla"`` on every backend.

Why auto is not Winograd on CPU: its memory-bound input and output transforms eat most of the
saved multiplications, so end to end the attack gains little or nothing, it compiles slower,
and its custom VJP rules out ``jax.jvp`` (:func:`mrijax.attacks.local_lipschitz`).  The
measurements are in ``docs/performance.md``.

Memory
------
``remat=True`` stores only each cascade's input for the backward pass and recomputes the
block, so gradient memory scales with one block instead of ``n_cascades`` (measured in
``docs/performance.md``).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, Optional

import numpy as np
import jax
import jax.numpy as jnp
import flax.linen as nn

from mrijax import dc, operators
from mrijax._checks import check_coil_maps, check_image, check_mask, complex_dtype_for
from mrijax.models import registry

__all__ = ["CONV_IMPLS", "Cascade", "CascadeBlock", "SMALL_CONV_IMPLS", "SPEC", "block_apply",
           "conv_same_winograd", "count_params", "winograd_matrices"]

SMALL_CONV_IMPLS = ("auto", "conv", "matmul")
CONV_IMPLS = ("auto", "xla", "winograd", "winograd4")


def _resolve_small_conv_impl(impl: str) -> str:
    # Resolved at trace time: the backend is fixed for the life of a compiled function.
    if impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "conv"
    return impl


def _resolve_conv_impl(impl: str) -> str:
    # "auto" is the XLA convolution on every backend: on XLA:CPU the Winograd variants lose to
    # it (bench/cascade.py; see the module docstring), and accelerators have cuDNN / their own.
    if impl == "auto":
        return "xla"
    return impl


def _conv_same(x, kernel):
    """Cross-correlation with zero 'same' padding, NHWC x HWIO -> NHWC (what Flax's nn.Conv does)."""
    kh, kw = kernel.shape[:2]
    padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_same_im2col(x, kernel):
    """The same convolution as :func:`_conv_same` as one matmul; for few INPUT channels.

    ``patches[n, y, x, (dy*kw + dx)*C_in + c] = x_padded[n, y+dy, x+dx, c]``, which is the
    row order of ``kernel.reshape(kh*kw*C_in, C_out)`` for an HWIO kernel.
    """
    kh, kw, c_in, c_out = kernel.shape
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    patches = jnp.concatenate(
        [xp[:, dy:dy + h, dx:dx + w, :] for dy in range(kh) for dx in range(kw)], axis=-1)
    return patches @ kernel.reshape(kh * kw * c_in, c_out)


def _conv_same_shift_sum(x, kernel):
    """The same convolution as :func:`_conv_same` as one matmul and a shifted sum; for few OUTPUT channels.

    ``z[n, y, x, dy, dx, o] = sum_c x[n, y, x, c] kernel[dy, dx, c, o]`` is one matmul with
    ``C_out * kh * kw`` columns; then ``out[y, x] = sum_{dy,dx} z_padded[y+dy, x+dx, dy, dx]``
    (zero padding of ``x`` gives zero rows of ``z``, so padding ``z`` is the same thing).
    """
    kh, kw, c_in, c_out = kernel.shape
    n, h, w = x.shape[:3]
    k_mat = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c_in, kh * kw * c_out)
    z = (x @ k_mat).reshape(n, h, w, kh, kw, c_out)
    zp = jnp.pad(z, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0), (0, 0), (0, 0)))
    out = zp[:, 0:h, 0:w, 0, 0, :]
    for dy in range(kh):
        for dx in range(kw):
            if dy == 0 and dx == 0:
                continue
            out = out + zp[:, dy:dy + h, dx:dx + w, dy, dx, :]
    return out


# ----------------------------------------------------------------------------- Winograd

# Interpolation points of the Toom-Cook construction, in the order they are used: small
# magnitudes first, because the transforms' coefficients (and so the float32 rounding error)
# grow with the points.  F(m, r) uses the first m + r - 2 of them plus the point at infinity.
_WINOGRAD_POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2),
                    Fraction(1, 2), Fraction(-1, 2), Fraction(3), Fraction(-3))


def _inverse_exact(rows):
    """Inverse of a square matrix of Fractions by Gauss-Jordan elimination (exact)."""
    n = len(rows)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(rows)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [v / a[col][col] for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col])]
    return [row[n:] for row in a]


@functools.lru_cache(maxsize=None)
def winograd_matrices(tile: int, kernel_size: int):
    """Transforms ``(A^T, G, B^T)`` of the 1-D Winograd correlation F(tile, kernel_size).

    For ``d`` of length ``n = tile + kernel_size - 1`` and ``g`` of length ``kernel_size``,
    ``A^T ((G g) * (B^T d))`` is the correlation ``y[i] = sum_k g[k] d[i + k]``,
    ``i < tile``; the 2-D algorithm nests it, ``Y = A^T [(G g G^T) * (B^T d B)] A``.

    Built exactly (rational arithmetic) by Toom-Cook: correlation with ``g`` is the transpose
    of the product of polynomials of degrees ``tile - 1`` and ``kernel_size - 1``, which is
    evaluated at ``n - 1`` points and infinity and interpolated back; so ``A^T`` is the
    evaluation (Vandermonde) matrix of the degree ``tile - 1`` factor transposed, ``G`` that
    of the kernel, and ``B^T`` the transposed interpolation matrix.  The points are
    ``0, 1, -1, 2, -2, 1/2, -1/2, 3, -3`` in that order (F(2, 3): ``0, +-1``; F(4, 3): ``0, +-1,
    +-2``, those of Lavin & Gray 2016 up to scaling and signs).

    Returns:
      float64 NumPy arrays of shapes ``(tile, n)``, ``(n, kernel_size)`` and ``(n, n)``.
    """
    if not (isinstance(tile, int) and tile >= 1 and isinstance(kernel_size, int) and kernel_size >= 1):
        raise ValueError(f"tile and kernel_size must be positive ints, got {tile!r}, {kernel_size!r}")
    n = tile + kernel_size - 1
    if n - 1 > len(_WINOGRAD_POINTS):
        raise ValueError(f"F({tile}, {kernel_size}) needs {n - 1} finite points; at most "
                         f"{len(_WINOGRAD_POINTS)} are defined (and float32 would not survive more)")
    points = _WINOGRAD_POINTS[:n - 1]

    def vandermonde(degree_plus_one):
        rows = [[p ** j for j in range(degree_plus_one)] for p in points]
        rows.append([Fraction(0)] * (degree_plus_one - 1) + [Fraction(1)])   # the point at infinity
        return rows

    eval_out, eval_kernel = vandermonde(tile), vandermonde(kernel_size)
    interp = _inverse_exact(vandermonde(n))
    a_t = np.array([[float(eval_out[a][i]) for a in range(n)] for i in range(tile)])
    g = np.array([[float(v) for v in row] for row in eval_kernel])
    b_t = np.array([[float(interp[j][a]) for j in range(n)] for a in range(n)])
    return a_t, g, b_t


def _combine(coefficients, terms):
    """``sum_j c_j * terms[j]`` over the non-zero ``c_j``, without multiplying by +-1."""
    out = None
    for c, term in zip(coefficients, terms):
        c = float(c)
        if c == 0.0:
            continue
        v = term if c == 1.0 else (-term if c == -1.0 else c * term)
        out = v if out is None else out + v
    return out


def _strided(x, axis, start, count, step):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, start + step * (count - 1) + 1, step)
    return x[tuple(index)]


def _tile_transform(x, mat, tile, n_tiles, axis):
    """Row ``a`` of ``mat`` applied to the windows ``x[tile*p : tile*p + n]`` along ``axis``.

    Returns a list (one entry per row of ``mat``) of arrays with ``n_tiles`` on ``axis``;
    built from strided slices, so nothing of the windows' size is gathered.
    """
    windows = [_strided(x, axis, j, n_tiles, tile) for j in range(mat.shape[1])]
    return [_combine(row, windows) for row in mat]


def _interleave(parts, axis):
    """``out[..., tile*p + i, ...] = parts[i][..., p, ...]`` along ``axis``."""
    y = jnp.stack(parts, axis + 1)
    shape = list(y.shape)
    shape[axis:axis + 2] = [shape[axis] * shape[axis + 1]]
    return y.reshape(shape)


def _winograd_forward(x, kernel, tile):
    """'same' cross-correlation NHWC x HWIO by the 2-D Winograd algorithm F(tile x tile, k x k)."""
    kh, kw, c_in, c_out = kernel.shape
    n, h, w, _ = x.shape
    a_t, g, b_t = winograd_matrices(tile, kh)
    if kw != kh:
        raise ValueError(f"the Winograd convolution needs a square kernel, got {kh}x{kw}")
    t = tile + kh - 1
    n_h, n_w = -(-h // tile), -(-w // tile)
    pad = kh // 2
    # Zero padding: 'same' on the left, and on the right up to whole tiles (cropped at the end).
    xp = jnp.pad(x, ((0, 0), (pad, tile * n_h + kh - 1 - pad - h), (pad, tile * n_w + kh - 1 - pad - w), (0, 0)))
    # Kernel transform U = G g G^T for every (c_in, c_out): (t, t, C_in, C_out).
    g_ = jnp.asarray(g, kernel.dtype)
    u = jnp.einsum("ak,bl,klio->abio", g_, g_, kernel)
    # Input transform V = B^T d B of every tile, separably (W, then H): t*t arrays
    # (N, n_h, n_w, C_in).  Kept as a list: stacking them costs a slow concatenation on CPU.
    cols = _tile_transform(xp, b_t, tile, n_w, 2)
    v = [_tile_transform(col_b, b_t, tile, n_h, 1) for col_b in cols]   # v[b][a]
    # The element-wise product in the transform domain, summed over input channels: one
    # (N*n_h*n_w, C_in) @ (C_in, C_out) matrix product per point (a, b).
    m = [[(v[b][a].reshape(-1, c_in) @ u[a, b]).reshape(n, n_h, n_w, c_out) for b in range(t)] for a in range(t)]
    # Output transform Y = A^T M A, separably, and the tiles put back in place.
    rows = [[_combine(a_t[j], m[a]) for a in range(t)] for j in range(tile)]    # rows[j][a]: along W done
    out_rows = [_interleave([_combine(a_t[i], rows[j]) for j in range(tile)], 2) for i in range(tile)]
    return _interleave(out_rows, 1)[:, :h, :w]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_same_winograd(x, kernel, tile):
    """'same' cross-correlation NHWC x HWIO (as :func:`_conv_same`) by Winograd F(tile x tile, k x k).

    The input gradient of a 'same' correlation with an odd kernel is the 'same' correlation of
    the output cotangent with the kernel flipped in space and with C_in and C_out swapped, so
    the backward pass is itself a Winograd correlation (autodiff of the transforms would
    transpose every strided slice into a padded scatter).  The kernel gradient (training only;
    dead code in an input-gradient computation) uses XLA's own convolution gradient.
    """
    return _winograd_forward(x, kernel, tile)


def _conv_same_winograd_fwd(x, kernel, tile):
    return _winograd_forward(x, kernel, tile), (x, kernel)


def _conv_same_winograd_bwd(tile, residuals, dy):
    x, kernel = residuals
    flipped = jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))
    dx = _conv_same_winograd(dy, flipped, tile)
    dkernel = jax.vjp(lambda k: _conv_same(x, k), kernel)[1](dy)[0]
    return dx, dkernel


_conv_same_winograd.defvjp(_conv_same_winograd_fwd, _conv_same_winograd_bwd)


def conv_same_winograd(x, kernel, tile: int = 2):
    """Zero-padded 'same' cross-correlation ``NHWC x HWIO -> NHWC`` by Winograd's algorithm.

    The same function as ``jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))`` (what Flax's ``nn.Conv`` computes) for odd
    square kernels, up to rounding, with ``(tile + k - 1)**2 / tile**2`` multiplications per
    output and channel pair instead of ``k**2`` (F(2x2, 3x3): 4 instead of 9; F(4x4, 3x3):
    2.25).  Differentiable; the input gradient is again a Winograd correlation.

    Float32 accuracy: F(2x2) is as accurate as the direct convolution; F(4x4), whose
    transforms hold coefficients up to 5 and 1/6, about 10x less (``docs/performance.md``).

    Reverse mode only: the input gradient is a ``jax.custom_vjp`` (a Winograd correlation,
    much faster than autodiff through the transforms), so ``jax.jvp`` raises; use
    ``lax.conv_general_dilated`` where forward-mode derivatives are needed.

    Args:
      x: ``(N, H, W, C_in)`` real array; any ``H, W`` (tiles past the edge are zero padded).
      kernel: ``(k, k, C_in, C_out)`` with ``k`` odd.
      tile: output tile side ``m`` of F(m x m, k x k); 2 or 4 are the useful ones for k = 3.

    Returns:
      ``(N, H, W, C_out)`` in the promoted dtype of ``x`` and ``kernel``.
    """
    if kernel.ndim != 4 or x.ndim != 4 or kernel.shape[2] != x.shape[3]:
        raise ValueError(f"need x (N, H, W, C) and kernel (k, k, C, C_out); got {x.shape} and {kernel.shape}")
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 != 1:
        raise ValueError(f"the kernel must be square with an odd side, got {kernel.shape[:2]}")
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    winograd_matrices(tile, kernel.shape[0])   # raises for an F(tile, k) with too many points
    dtype = jnp.promote_types(x.dtype, kernel.dtype)
    return _conv_same_winograd(x.astype(dtype), kernel.astype(dtype), tile)


def _layer_impl(layer: int, n_convs: int, use_matmul: bool, conv_impl: str = "xla") -> str:
    """How convolution ``layer`` of a block is computed."""
    if use_matmul and layer == 0:
        return "im2col"      # C_in = 2: the patch matrix is only k*k*2 wide
    if use_matmul and layer == n_convs - 1:
        return "shift_sum"   # C_out = 2: the product is only k*k*2 wide
    if 0 < layer < n_convs - 1:
        return {"xla": "conv", "winograd": "winograd2", "winograd4": "winograd4"}[conv_impl]   # F -> F
    return "conv"


def _conv_layer(x, kernel, bias, impl):
    # Flax convention: compute in the promoted dtype of inputs and parameters, so float64
    # inputs (x64) with float32 parameters are computed in float64.
    dtype = jnp.promote_types(x.dtype, kernel.dtype)
    x, kernel, bias = x.astype(dtype), kernel.astype(dtype), bias.astype(dtype)
    if impl == "conv":
        y = _conv_same(x, kernel)
    elif impl == "im2col":
        y = _conv_same_im2col(x, kernel)
    elif impl == "shift_sum":
        y = _conv_same_shift_sum(x, kernel)
    elif impl in ("winograd2", "winograd4"):
        y = _conv_same_winograd(x, kernel, int(impl[-1]))
    else:  # pragma: no cover - _layer_impl returns only these
        raise ValueError(f"unknown conv impl {impl!r}")
    return y + bias


def block_apply(convs, x, small_conv_impl="auto", conv_impl="auto"):
    """One residual CNN block as a pure function: ``x + conv_{n-1}(relu(... relu(conv_0(x))))``.

    Args:
      convs: the block's parameters ``{'conv_0': {'kernel', 'bias'}, ...}`` (HWIO kernels), i.e.
        ``params['params']['block_{c}']``.
      x: real ``(N, H, W, 2)`` image (channels real, imag).
      small_conv_impl: ``"auto"``, ``"conv"`` or ``"matmul"`` (see the module docstring).
      conv_impl: ``"auto"``, ``"xla"``, ``"winograd"`` or ``"winograd4"``: how the hidden
        ``F -> F`` convolutions are computed (see the module docstring).
    """
    n_convs = len(convs)
    use_matmul = _resolve_small_conv_impl(small_conv_impl) == "matmul"
    conv_impl = _resolve_conv_impl(conv_impl)
    h = x
    for layer in range(n_convs):
        p = convs[f"conv_{layer}"]
        h = _conv_layer(h, p["kernel"], p["bias"], _layer_impl(layer, n_convs, use_matmul, conv_impl))
        if layer < n_convs - 1:
            h = jax.nn.relu(h)
    return x + h


class _ConvParams(nn.Module):
    """Declares one convolution's ``kernel`` (HWIO) and ``bias`` and returns them."""

    c_in: int
    c_out: int
    kernel_size: int
    # He et al. normal (untruncated), as Lasagne's HeNormal in the original.
    kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self):
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, self.c_in, self.c_out))
        bias = self.param("bias", self.bias_init, (self.c_out,))
        return {"kernel": kernel, "bias": bias}


class CascadeBlock(nn.Module):
    """One residual CNN block on 2-channel NHWC images; parameters ``conv_{l}/{kernel,bias}``.

    The computation is :func:`block_apply`; this module only declares the parameters.
    """

    n_convs: int = 5
    features: int = 64
    kernel_size: int = 3
    small_conv_impl: str = "auto"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        n_channels = x.shape[-1]
        convs = {}
        for layer in range(self.n_convs):
            c_in = n_channels if layer == 0 else self.features
            c_out = n_channels if layer == self.n_convs - 1 else self.features
            convs[f"conv_{layer}"] = _ConvParams(c_in, c_out, self.kernel_size, name=f"conv_{layer}")()
        return block_apply(convs, x, self.small_conv_impl, self.conv_impl)


def _to_channels(x):
    """Complex ``(N, H, W)`` -> real ``(N, H, W, 2)`` with channels (real, imag)."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def _from_channels(h):
    return jax.lax.complex(h[..., 0], h[..., 1])


class Cascade(nn.Module):
    """Deep Cascade of CNNs with data consistency (Schlemper et al. 2017; D5-C5 by default).

    Call as ``model.apply(params, x_zf, k0, mask)``:

    Args (of ``__call__``):
      x_zf: the zero-filled image ``A* y``, complex (real is promoted), shape ``(..., H, W)``
        with any number of leading batch axes (also none).
      k0: the measured *centred* k-space, zero off the mask, the same shape as ``x_zf``
        (``(..., C, H, W)`` when ``coil_maps`` is given).
      mask: the *centred* boolean sampling mask, broadcastable to ``x_zf``.
      coil_maps: optional sensitivity maps ``(..., C, H, W)``; DC is then the multi-coil DC
        of :func:`mrijax.dc.data_consistency`.  ``None`` (default) is single coil.

    Returns:
      The complex reconstruction, ``x_zf``'s shape, in the promoted dtype of input and
      parameters (complex128 for float64 parameters or inputs under x64).

    Attributes:
      n_cascades: number of CNN + DC blocks (the ``C`` in D5-C5).
      n_convs: convolutions per block (the ``D``), at least 1.
      features: channels of the hidden convolutions.
      kernel_size: odd spatial kernel size (3 in the paper).
      noise_level: ``None`` for exact replacement of the sampled k-space (the published
        network, ``lambda = inf``); a number ``lambda >= 0`` for the weighted average
        ``(k + lambda k0) / (1 + lambda)`` on the mask.
      learn_noise_level: learn one ``lambda_c > 0`` per cascade, stored as
        ``params['params']['log_noise_level']`` (shape ``(n_cascades,)``, initialised to
        ``log(noise_level)``; needs ``noise_level > 0``).
      remat: rematerialise each block in the backward pass (gradient checkpointing): the
        cascades run as a ``lax.scan`` over the stacked block parameters with a
        ``jax.checkpoint`` body, so only each cascade's input is stored and the block's
        activations are recomputed.  Gradient memory then scales with one block instead of
        ``n_cascades``.  Same parameters (the usual ``block_{c}`` names; stacked only inside
        the call) and same values; about one extra forward pass of compute.
      small_conv_impl: ``"auto"`` (matmul on the CPU backend, XLA convolution otherwise),
        ``"conv"`` or ``"matmul"``: how the thin first and last convolution of each block
        are computed (see the module docstring).  Parameters are identical.
      conv_impl: ``"auto"`` (XLA convolution on every backend), ``"xla"``, ``"winograd"``
        (F(2x2, 3x3)) or ``"winograd4"`` (F(4x4, 3x3)): how the hidden ``F -> F``
        convolutions are computed (see the module docstring).  Parameters are identical;
        the Winograd options support reverse-mode autodiff only (no ``jax.jvp``).

    Example::

      model = Cascade()
      params = model.init(jax.random.PRNGKey(0), x_zf, k0, mask)
      x_rec = jax.jit(model.apply)(params, x_zf, k0, mask)
    """

    n_cascades: int = 5
    n_convs: int = 5
    features: int = 64
    kernel_size: int = 3
    noise_level: Optional[float] = None
    learn_noise_level: bool = False
    remat: bool = False
    small_conv_impl: str = "auto"
    conv_impl: str = "auto"

    def __post_init__(self):
        for name in ("n_cascades", "n_convs", "features", "kernel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.kernel_size % 2 != 1:
            raise ValueError(
                f"kernel_size must be odd ('same' padding is symmetric only then), got {self.kernel_size}")
        if self.small_conv_impl not in SMALL_CONV_IMPLS:
            raise ValueError(f"small_conv_impl must be one of {SMALL_CONV_IMPLS}, got {self.small_conv_impl!r}")
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
        if self.noise_level is not None:
            if not isinstance(self.noise_level, (int, float)) or isinstance(self.noise_level, bool):
                raise TypeError(f"noise_level must be None or a number, got {type(self.noise_level).__name__}")
            if not self.noise_level >= 0 or math.isinf(self.noise_level):
                raise ValueError(
                    f"noise_level must be a finite number >= 0 (None means exact DC), got {self.noise_level}")
        if self.learn_noise_level and (self.noise_level is None or self.noise_level <= 0):
            raise ValueError(
                "learn_noise_level=True needs an initial noise_level > 0 (it is learned as its log), "
                f"got noise_level={self.noise_level!r}")
        super().__post_init__()

    def _noise_levels(self):
        """Per-cascade DC weights: a list of ``None`` / floats / learned scalars."""
        if self.learn_noise_level:
            init = math.log(self.noise_level)
            log_lam = self.param("log_noise_level",
                                 lambda key, shape: jnp.full(shape, init, jnp.float32),
                                 (self.n_cascades,))
            return [jnp.exp(log_lam[c]) for c in range(self.n_cascades)]
        return [self.noise_level] * self.n_cascades

    @nn.compact
    def __call__(self, x_zf, k0, mask, coil_maps=None):
        check_image(x_zf, "x_zf")
        check_image(k0, "k0")
        if coil_maps is None:
            if tuple(k0.shape) != tuple(x_zf.shape):
                raise ValueError(f"k0 must have x_zf's shape {tuple(x_zf.shape)}, got {tuple(k0.shape)}")
        else:
            check_coil_maps(coil_maps, x_zf.shape)
            if tuple(k0.shape[-2:]) != tuple(x_zf.shape[-2:]) or k0.ndim < 3:
                raise ValueError(
                    f"with coil_maps, k0 must have shape (..., C, H, W) with (H, W) = "
                    f"{tuple(x_zf.shape[-2:])}, got {tuple(k0.shape)}")
        check_mask(mask, x_zf.shape)

        x = jnp.asarray(x_zf)
        x = x.astype(complex_dtype_for(x))
        lead, (h, w) = x.shape[:-2], x.shape[-2:]
        noise_levels = self._noise_levels()
        blocks = [CascadeBlock(n_convs=self.n_convs, features=self.features, kernel_size=self.kernel_size,
                               small_conv_impl=self.small_conv_impl, conv_impl=self.conv_impl,
                               name=f"block_{c}")
                  for c in range(self.n_cascades)]

        def cascade_step(x, block_fn, noise_level):
            out = block_fn(_to_channels(x.reshape((-1, h, w))))
            x = _from_channels(out).reshape(lead + (h, w))
            # DC with the original measurements k0 (never the previous cascade's k-space).
            return dc.data_consistency(x, k0, mask, noise_level, coil_maps)

        if not self.remat or self.is_initializing():
            for c in range(self.n_cascades):
                x = cascade_step(x, blocks[c], noise_levels[c])
            return x

        # remat: a scan over the cascades whose body is checkpointed.  Only each cascade's input
        # is kept for the backward pass; the block's activations are recomputed there.  (Per-block
        # jax.checkpoint / nn.remat in unrolled code saves nothing on XLA:CPU: its CSE merges the
        # recomputation with the forward pass.  Across the two loops of a scan it cannot.)
        params = self.variables["params"]
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                         *[params[f"block_{c}"] for c in range(self.n_cascades)])
        learned = self.learn_noise_level

        def body(x, scanned):
            block_params, lam = scanned
            block_fn = lambda z: block_apply(block_params, z, self.small_conv_impl, self.conv_impl)
            return cascade_step(x, block_fn, lam if learned else self.noise_level), None

        lams = jnp.stack(noise_levels) if learned else None
        x, _ = jax.lax.scan(jax.checkpoint(body), x, (stacked, lams))
        return x


def count_params(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


SPEC = registry.register(registry.ModelSpec(
    name="cascade", cls=Cascade, apply=registry.apply_zero_filled, init=registry.init_zero_filled,
    inputs=("zero_filled", "measurements", "coil_maps"),
    operator_types=(operators.Cartesian, operators.Sense),
    hyperparameters=(
        registry.Hyper("n_cascades", 5, "Number of CNN + data-consistency blocks (C)."),
        registry.Hyper("n_convs", 5, "Convolutions per block (D)."),
        registry.Hyper("features", 32, "Channels of the hidden convolutions (64 in D5-C5)."),
        registry.Hyper("kernel_size", 3, "Convolution kernel size (odd)."),
        registry.Hyper("dc_noise_level", None, "Data-consistency weight lambda (default: exact replacement of the "
                       "sampled k-space).", type=float, kwarg="noise_level"),
        registry.Hyper("learn_noise_level", False, "Learn one DC weight per cascade (needs --dc_noise_level > 0)."),
        registry.Hyper("remat", False, "Recompute each block in the backward pass (less memory, slower on CPU)."),
        registry.Hyper("conv_impl", "auto", "How the hidden convolutions are computed (same function).",
                       choices=CONV_IMPLS)),
    train_defaults={"loss": "l1", "mask_mode": "per_image"},
    aliases=("Cascade",)))
