"""fastMRI's baseline U-Net and NormUnet (Zbontar et al. 2018; Sriram et al. 2020), in Flax.

:class:`Unet` is the U-Net of Ronneberger et al. (2015) as the fastMRI repository defines it
(``fastmri/models/unet.py``), a function of a real ``(N, H, W, in_chans)`` array (NHWC)::

    down_0 ... down_{L-1}:  ConvBlock(chans * 2**i), keep it for the skip, then 2x2 average pooling
    bottleneck:             ConvBlock(chans * 2**L)
    up_0 ... up_{L-1}:      TransposeConvBlock(chans * 2**(L-1-i)) (2x size), reflect-pad by one row /
                            column at the bottom / right when the skip is one larger (odd sizes),
                            concatenate [upsampled, skip] on channels, ConvBlock(chans * 2**(L-1-i))
    final:                  1x1 convolution (with bias) to out_chans

    ConvBlock(F)          = 2 x [3x3 conv (zero 'same' padding, no bias) -> InstanceNorm -> LeakyReLU(0.2)
                                 -> channel dropout]
    TransposeConvBlock(F) = 2x2 stride-2 transposed conv (no bias) -> InstanceNorm -> LeakyReLU(0.2)

with ``L = num_pool_layers``.  InstanceNorm is PyTorch's ``InstanceNorm2d`` default: per image
and channel over ``(H, W)``, biased variance, ``eps = 1e-5``, no affine parameters (so the
only parameters are the convolution kernels and the final bias).  Average pooling floors odd
sizes, as ``F.avg_pool2d``.  For ``chans=32, num_pool_layers=4`` and one input and output
channel (fastMRI's single-coil baseline) that is 7,756,097 parameters; with two (complex as
two channels, as here) 7,756,418 (``tests/test_unet.py`` counts them by hand).

:class:`NormUnet` is fastMRI's ``NormUnet`` (``fastmri/models/varnet.py``): a complex image
``(..., H, W)`` as two channels (real, imaginary), each channel normalised by its own mean and
(unbiased) standard deviation over the image, zero-padded to a multiple of 16 on each side
(half before, the rest after), through the U-Net, cropped, un-normalised and made complex
again.  One difference: each channel's standard deviation is floored at ``std_floor`` times
the root mean square of both channels' (``std_floor=0`` is fastMRI's normalisation), because
fastMRI's divides 0 by 0 when the imaginary part is identically zero (a real image seen
through a conjugate-symmetric mask, e.g. fully sampled), and a tiny imaginary part divided by
its own tiny standard deviation would turn rounding into an O(1) input.  The floor is
homogeneous of degree one in the input, so ``NormUnet(c x) = c NormUnet(x)`` for ``c > 0``
still holds exactly (up to rounding).

:class:`UnetRecon` (registry name ``"unet"``) is the reconstruction network: NormUnet on the
zero-filled image ``A* y`` (with SENSE the coil-combined adjoint ``sum_c conj(S_c) F^-1 y_c``),
optionally followed by one exact data consistency (``dc=True``,
:func:`mrijax.dc.data_consistency`, multi-coil with the operator's coil maps).  ``dc`` is off
by default: fastMRI's baseline U-Net is a pure image-to-image network.

Dropout
-------
:class:`Unet` and :class:`NormUnet` implement fastMRI's ``Dropout2d`` (whole channels per
image): pass ``deterministic=False`` and a ``'dropout'`` rng to ``apply`` to train with it.
:class:`UnetRecon` has no dropout: a reconstruction map is pure (``f(y)``, no rng), and the
library's training step (``ModelSpec.apply``) passes no rng, so a ``drop_prob`` there could
only be ignored.  fastMRI's baseline trains with ``drop_prob=0.0`` too.

Conventions that matter only for importing PyTorch weights (not done here): kernels are HWIO;
Flax's transposed convolution with ``transpose_kernel=False`` uses the spatially flipped kernel
of ``torch.nn.ConvTranspose2d``, i.e. a torch weight ``w[c_in, c_out, a, b]`` is the Flax kernel
``k[1 - a, 1 - b, c_in, c_out]``.  Initialisation follows PyTorch's default scale (uniform,
variance ``1 / (3 fan_in)`` with PyTorch's fan-in), except the final bias, which starts at 0.

Parameter names::

    params['params']['norm_unet']['unet']['down_{i}']['conv_{0,1}']['kernel']      # (3, 3, C_in, C_out)
    params['params']['norm_unet']['unet']['bottleneck']['conv_{0,1}']['kernel']
    params['params']['norm_unet']['unet']['up_transpose_{i}']['conv']['kernel']     # (2, 2, C_in, C_out)
    params['params']['norm_unet']['unet']['up_{i}']['conv_{0,1}']['kernel']
    params['params']['norm_unet']['unet']['final']['kernel' | 'bias']              # (1, 1, chans, 2), (2,)
"""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp
import flax.linen as nn

from mrijax import operators
from mrijax._checks import check_image, complex_dtype_for
from mrijax.dc import data_consistency
from mrijax.models import registry

__all__ = ["ConvBlock", "INSTANCE_NORM_EPS", "NormUnet", "PAD_MULTIPLE", "SPEC", "TransposeConvBlock", "Unet",
           "UnetRecon", "instance_norm"]

INSTANCE_NORM_EPS = 1e-5
"""``eps`` of the instance normalisation (PyTorch's ``InstanceNorm2d`` default)."""

PAD_MULTIPLE = 16
"""NormUnet pads each image side to a multiple of this (fastMRI's)."""

# PyTorch's default initialisation of Conv2d / ConvTranspose2d weights: kaiming_uniform with
# a = sqrt(5), i.e. uniform with variance 1 / (3 fan_in).  PyTorch's fan-in of a ConvTranspose2d
# weight (C_in, C_out, kh, kw) is C_out * kh * kw, which is Flax's fan-out of (kh, kw, C_in, C_out).
_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
_TRANSPOSE_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


def _check_positive_int(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_drop_prob(value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"drop_prob must be a number in [0, 1), got {value!r}")


def _check_std_floor(value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < math.inf:
        raise ValueError(f"std_floor must be a finite number >= 0, got {value!r}")


def instance_norm(x, eps: float = INSTANCE_NORM_EPS):
    """Normalise each image and channel of NHWC ``x`` over ``(H, W)``: ``(x - mean) / sqrt(var + eps)``.

    The biased variance and no affine parameters, as PyTorch's ``InstanceNorm2d`` default;
    the variance is computed from the centred values (not ``E[x^2] - E[x]^2``).
    """
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    centred = x - mean
    var = jnp.mean(centred * centred, axis=(1, 2), keepdims=True)
    return centred * jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype))


class ConvBlock(nn.Module):
    """Two ``[3x3 conv (no bias) -> InstanceNorm -> LeakyReLU(0.2) -> channel dropout]``, NHWC."""

    features: int
    drop_prob: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        for i in range(2):
            x = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, kernel_init=_CONV_INIT,
                        name=f"conv_{i}")(x)
            x = nn.leaky_relu(instance_norm(x), negative_slope=0.2)
            if self.drop_prob > 0:
                # Dropout2d: one draw per image and channel, shared over (H, W).
                x = nn.Dropout(self.drop_prob, broadcast_dims=(1, 2))(x, deterministic=deterministic)
        return x


class TransposeConvBlock(nn.Module):
    """``2x2 stride-2 transposed conv (no bias) -> InstanceNorm -> LeakyReLU(0.2)``: doubles H and W."""

    features: int

    @nn.compact
    def __call__(self, x):
        x = nn.ConvTranspose(self.features, (2, 2), strides=(2, 2), padding="VALID", use_bias=False,
                             kernel_init=_TRANSPOSE_CONV_INIT, name="conv")(x)
        return nn.leaky_relu(instance_norm(x), negative_slope=0.2)


class Unet(nn.Module):
    """fastMRI's U-Net: real ``(N, H, W, in_chans)`` -> ``(N, H, W, out_chans)`` (see the module docstring).

    Attributes:
      chans: channels of the first ConvBlock; doubled at every pooling layer.
      num_pool_layers: number of poolings (and of upsamplings); ``H`` and ``W`` must be at
        least ``2**num_pool_layers``.  Any sizes from there work (odd ones by reflect padding).
      drop_prob: channel dropout probability, active only with ``deterministic=False`` (then
        ``apply`` needs a ``'dropout'`` rng).
      in_chans, out_chans: input and output channels.

    The computation runs in the promoted dtype of input and parameters (float64 under x64
    with float64 inputs).
    """

    chans: int = 32
    num_pool_layers: int = 4
    drop_prob: float = 0.0
    in_chans: int = 2
    out_chans: int = 2

    def __post_init__(self):
        for name in ("chans", "num_pool_layers", "in_chans", "out_chans"):
            _check_positive_int(getattr(self, name), name)
        _check_drop_prob(self.drop_prob)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if not hasattr(x, "shape") or x.ndim != 4 or x.shape[-1] != self.in_chans:
            raise ValueError(f"Unet takes a real (N, H, W, {self.in_chans}) array, got shape "
                             f"{tuple(getattr(x, 'shape', ()))}")
        if np.dtype(x.dtype).kind not in "biuf":
            raise TypeError(f"Unet takes a real array (complex images: NormUnet), got dtype {x.dtype}")
        smallest = 2 ** self.num_pool_layers
        if x.shape[1] < smallest or x.shape[2] < smallest:
            raise ValueError(f"images of {x.shape[1]}x{x.shape[2]} are too small for {self.num_pool_layers} "
                             f"pooling layers: each side needs at least {smallest} pixels")
        skips = []
        h = x
        features = self.chans
        for i in range(self.num_pool_layers):
            h = ConvBlock(features, self.drop_prob, name=f"down_{i}")(h, deterministic)
            skips.append(h)
            h = nn.avg_pool(h, (2, 2), strides=(2, 2), padding="VALID")
            features *= 2
        h = ConvBlock(features, self.drop_prob, name="bottleneck")(h, deterministic)
        for i in range(self.num_pool_layers):
            features //= 2
            skip = skips.pop()
            h = TransposeConvBlock(features, name=f"up_transpose_{i}")(h)
            # An odd side was floored by the pooling: the upsampled map is one short; reflect-pad it.
            pad_h, pad_w = skip.shape[1] - h.shape[1], skip.shape[2] - h.shape[2]
            if pad_h or pad_w:
                h = jnp.pad(h, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            h = jnp.concatenate([h, skip], axis=-1)
            h = ConvBlock(features, self.drop_prob, name=f"up_{i}")(h, deterministic)
        return nn.Conv(self.out_chans, (1, 1), use_bias=True, kernel_init=_CONV_INIT, name="final")(h)


def _pad_amounts(n: int):
    total = (-n) % PAD_MULTIPLE
    return total // 2, total - total // 2


class NormUnet(nn.Module):
    """fastMRI's NormUnet: complex ``(..., H, W)`` -> complex ``(..., H, W)`` (see the module docstring).

    Each image (over any leading axes) is normalised on its own, so the images of a batch do
    not interact.  Real input is read as complex with zero imaginary part.

    Attributes:
      chans, num_pool_layers, drop_prob: those of the :class:`Unet` (2 channels in and out).
      std_floor: each channel's standard deviation is at least this times the RMS of both
        channels' (0: fastMRI's normalisation, which is undefined for an identically real image).
    """

    chans: int = 32
    num_pool_layers: int = 4
    drop_prob: float = 0.0
    std_floor: float = 1e-2

    def __post_init__(self):
        for name in ("chans", "num_pool_layers"):
            _check_positive_int(getattr(self, name), name)
        _check_drop_prob(self.drop_prob)
        _check_std_floor(self.std_floor)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        check_image(x, "x")
        x = jnp.asarray(x)
        x = x.astype(complex_dtype_for(x))
        lead, (h, w) = x.shape[:-2], x.shape[-2:]
        if h * w < 2:
            raise ValueError(f"NormUnet needs images of at least 2 pixels, got {h}x{w}")
        z = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1).reshape((-1, h, w, 2))
        # Per image and channel: mean and unbiased standard deviation (torch.std), with the floor.
        mean = jnp.mean(z, axis=(1, 2), keepdims=True)
        var = jnp.sum((z - mean) ** 2, axis=(1, 2), keepdims=True) / (h * w - 1)
        floor = (self.std_floor ** 2) * jnp.mean(var, axis=-1, keepdims=True)
        std = jnp.sqrt(var + floor + jnp.finfo(z.dtype).tiny)   # tiny: an all-zero image gives 0, not NaN
        z = (z - mean) / std
        (top, bottom), (left, right) = _pad_amounts(h), _pad_amounts(w)
        z = jnp.pad(z, ((0, 0), (top, bottom), (left, right), (0, 0)))
        z = Unet(self.chans, self.num_pool_layers, self.drop_prob, in_chans=2, out_chans=2, name="unet")(
            z, deterministic)
        z = z[:, top:top + h, left:left + w] * std + mean
        return jax.lax.complex(z[..., 0], z[..., 1]).reshape(lead + (h, w))


class UnetRecon(nn.Module):
    """The U-Net reconstruction network (registry name ``"unet"``): NormUnet on ``A* y``, optional exact DC.

    Call as ``model.apply(params, x_zf, k0, mask, coil_maps=None)``:

    Args (of ``__call__``):
      x_zf: the zero-filled image ``A* y``, complex ``(..., H, W)`` (any leading axes).
      k0: the measured centred k-space (``(..., H, W)``, or ``(..., C, H, W)`` with
        ``coil_maps``); read only with ``dc=True``.
      mask: the centred boolean mask, broadcastable to ``x_zf``; read only with ``dc=True``.
      coil_maps: optional ``(..., C, H, W)`` maps for the multi-coil DC.

    Returns:
      The complex reconstruction, ``x_zf``'s shape.

    Attributes:
      chans, num_pool_layers: the U-Net's (fastMRI's baseline: 32 and 4).
      dc: end with exact data consistency (the output's k-space equals ``k0`` on the mask).
        Off by default, as fastMRI's baseline.
      std_floor: :class:`NormUnet`'s floor on the normalisation.
    """

    chans: int = 32
    num_pool_layers: int = 4
    dc: bool = False
    std_floor: float = 1e-2

    def __post_init__(self):
        for name in ("chans", "num_pool_layers"):
            _check_positive_int(getattr(self, name), name)
        if not isinstance(self.dc, (bool, np.bool_)):
            raise ValueError(f"dc must be a bool, got {self.dc!r}")
        _check_std_floor(self.std_floor)
        super().__post_init__()

    @nn.compact
    def __call__(self, x_zf, k0=None, mask=None, coil_maps=None):
        x = NormUnet(self.chans, self.num_pool_layers, 0.0, self.std_floor, name="norm_unet")(x_zf)
        if not self.dc:
            return x
        if k0 is None or mask is None:
            raise ValueError("UnetRecon with dc=True needs the measurements k0 and the mask")
        return data_consistency(x, k0, mask, None, coil_maps)


SPEC = registry.register(registry.ModelSpec(
    name="unet", cls=UnetRecon, apply=registry.apply_zero_filled, init=registry.init_zero_filled,
    inputs=("zero_filled", "measurements", "coil_maps"),
    operator_types=(operators.Cartesian, operators.Sense),
    hyperparameters=(
        registry.Hyper("chans", 32, "Channels of the U-Net's first block, doubled per pooling layer (fastMRI: 32)."),
        registry.Hyper("num_pool_layers", 4, "Pooling (and upsampling) layers of the U-Net (fastMRI: 4)."),
        registry.Hyper("dc", False, "End with exact data consistency (fastMRI's baseline has none).")),
    # fastMRI trains its baseline with an L1 loss; a new mask per image as the cascade.
    train_defaults={"loss": "l1", "mask_mode": "per_image"},
    aliases=("UnetRecon",)))
