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
the throughput of the F -> F ones (7-12 against ~150 GFLOP/s on a quiet machine): so few
channels do not vectorise well in the convolution emitter.  ``small_conv_impl="matmul"``
computes them as matrix products instead, with *the same kernel pytree*:

* first conv: im2col over the ``k x k`` neighbourhood, ``(N*H*W, k*k*2) @ (k*k*2, F)``;
* last conv: ``(N*H*W, F) @ (F, k*k*2)`` then a sum of the ``k*k`` shifted 2-channel
  planes (the transpose of im2col, so nothing of size ``k*k*F`` is materialised).

``"auto"`` (the default) picks ``"matmul"`` on the CPU backend and ``"conv"`` (cuDNN /
XLA's convolution) elsewhere.  Both give the same function up to rounding, including
gradients; the tests check that in float64.  The F -> F convolutions dominate the cost of
D5-C5 either way, so the whole-network gain is modest.

Memory
------
``remat=True`` stores only each cascade's input for the backward pass and recomputes the
block; for an input gradient of D5-C5 at 256 x 256, batch 8, float32, XLA's buffer
assignment drops from 2.6 GiB to 0.7 GiB of temporaries.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import flax.linen as nn

from mrijax import dc
from mrijax._checks import check_coil_maps, check_image, check_mask, complex_dtype_for

SMALL_CONV_IMPLS = ("auto", "conv", "matmul")


def _resolve_small_conv_impl(impl: str) -> str:
    # Resolved at trace time: the backend is fixed for the life of a compiled function.
    if impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "conv"
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


def _layer_impl(layer: int, n_convs: int, use_matmul: bool) -> str:
    """How convolution ``layer`` of a block is computed."""
    if not use_matmul:
        return "conv"
    if layer == 0:
        return "im2col"      # C_in = 2: the patch matrix is only k*k*2 wide
    if layer == n_convs - 1:
        return "shift_sum"   # C_out = 2: the product is only k*k*2 wide
    return "conv"            # F -> F convolutions are already fast as convolutions


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
    else:  # pragma: no cover - _layer_impl returns only these
        raise ValueError(f"unknown conv impl {impl!r}")
    return y + bias


def block_apply(convs, x, small_conv_impl="auto"):
    """One residual CNN block as a pure function: ``x + conv_{n-1}(relu(... relu(conv_0(x))))``.

    Args:
      convs: the block's parameters ``{'conv_0': {'kernel', 'bias'}, ...}`` (HWIO kernels), i.e.
        ``params['params']['block_{c}']``.
      x: real ``(N, H, W, 2)`` image (channels real, imag).
      small_conv_impl: ``"auto"``, ``"conv"`` or ``"matmul"`` (see the module docstring).
    """
    n_convs = len(convs)
    use_matmul = _resolve_small_conv_impl(small_conv_impl) == "matmul"
    h = x
    for layer in range(n_convs):
        p = convs[f"conv_{layer}"]
        h = _conv_layer(h, p["kernel"], p["bias"], _layer_impl(layer, n_convs, use_matmul))
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

    @nn.compact
    def __call__(self, x):
        n_channels = x.shape[-1]
        convs = {}
        for layer in range(self.n_convs):
            c_in = n_channels if layer == 0 else self.features
            c_out = n_channels if layer == self.n_convs - 1 else self.features
            convs[f"conv_{layer}"] = _ConvParams(c_in, c_out, self.kernel_size, name=f"conv_{layer}")()
        return block_apply(convs, x, self.small_conv_impl)


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
                               small_conv_impl=self.small_conv_impl, name=f"block_{c}")
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
            block_fn = lambda z: block_apply(block_params, z, self.small_conv_impl)
            return cascade_step(x, block_fn, lam if learned else self.noise_level), None

        lams = jnp.stack(noise_levels) if learned else None
        x, _ = jax.lax.scan(jax.checkpoint(body), x, (stacked, lams))
        return x


def count_params(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
