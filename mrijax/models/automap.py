"""AUTOMAP (Zhu et al., Nature 2018), as tested by Antun et al. (PNAS 2020, SI 2.1).

AUTOMAP maps the measurement vector ``y`` in ``C^m`` straight to the magnitude image,
without the adjoint as a first step::

    y (..., m) complex -> [Re y, Im y]            (..., 2m)   real
    fc1:   Dense(hidden) + tanh                   (..., hidden)
    fc2:   Dense(n * n), minus its mean per image (..., n*n)
    reshape                                       (..., n, n, 1)
    conv1: 5x5 conv, conv_features + tanh         (..., n, n, F)
    conv2: 5x5 conv, conv_features + ReLU         (..., n, n, F)   <- sown as 'activations'
    deconv: 7x7 transposed conv -> 1 channel      (..., n, n)      the magnitude image

All convolutions are stride 1 with 'same' padding.  At stride 1 a transposed convolution
is an ordinary convolution; Flax's ``nn.ConvTranspose`` (``transpose_kernel=False``) computes
it as a cross-correlation with the stored kernel, like the two ``nn.Conv`` layers (the
kernels are learned, so the convention only matters when importing weights).  ``y`` comes from
:func:`mrijax.fourier.gather` (row-major order over the centred grid), so the model is
tied to one sampling mask.  The paper's network has ``n = 128``, ``m = 9855`` (60 %),
``hidden = 25000``; the DL4IA tutorial uses ``hidden = 64``.

The L1 activation penalty of the paper (``lambda = 1e-4`` on the output of conv2) needs
those activations.  They are sown into the ``'intermediates'`` collection; read them by
making that collection mutable::

    out, state = model.apply(params, y, mutable=["intermediates"])
    acts = state["intermediates"]["activations"][0]      # (..., n, n, conv_features)
    loss = jnp.sum((out - target) ** 2) + 1e-4 * jnp.sum(jnp.abs(acts))

(``sow`` appends to a tuple, hence the ``[0]``.)  Without ``mutable`` nothing is stored and
``apply`` returns just the image.
"""

from __future__ import annotations

import flax.linen as nn
import numpy as np
import jax
import jax.numpy as jnp

from mrijax import operators
from mrijax._checks import check_image
from mrijax.models import registry

__all__ = ["Automap", "SPEC"]


class Automap(nn.Module):
    """AUTOMAP: ``model.apply(params, y)`` with complex ``y`` ``(..., m)`` -> real image ``(..., n, n)``.

    Attributes:
      n: the image side (the output is ``n x n``).
      m: the number of measurements (entries of ``y``; ``mask.sum()``).
      hidden: width of the first fully connected layer (25000 in the paper, 64 in DL4IA).
      conv_features: channels of the two 5x5 convolutions (64 in the paper).

    Any leading batch axes of ``y`` are kept.  Real ``y`` is accepted (imaginary part zero).
    """

    n: int
    m: int
    hidden: int = 64
    conv_features: int = 64

    def __post_init__(self):
        for name in ("n", "m", "hidden", "conv_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, y):
        check_image(y, "y", min_ndim=1)
        if y.shape[-1] != self.m:
            raise ValueError(f"y must have m = {self.m} entries on its last axis, got shape {tuple(y.shape)}")
        y = jnp.asarray(y)
        lead = y.shape[:-1]
        # 2m reals: all real parts, then all imaginary parts.
        h = jnp.concatenate([jnp.real(y), jnp.imag(y)], axis=-1).reshape((-1, 2 * self.m))
        h = jnp.tanh(nn.Dense(self.hidden, name="fc1")(h))
        h = nn.Dense(self.n * self.n, name="fc2")(h)
        h = h - jnp.mean(h, axis=-1, keepdims=True)
        h = h.reshape((-1, self.n, self.n, 1))
        h = jnp.tanh(nn.Conv(self.conv_features, (5, 5), padding="SAME", name="conv1")(h))
        h = nn.relu(nn.Conv(self.conv_features, (5, 5), padding="SAME", name="conv2")(h))
        self.sow("intermediates", "activations", h.reshape(lead + h.shape[1:]))
        h = nn.ConvTranspose(1, (7, 7), padding="SAME", name="deconv")(h)
        return h[..., 0].reshape(lead + (self.n, self.n))


def _check(model, op):
    try:
        mask = np.asarray(op.mask)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError("AUTOMAP needs a concrete mask (it fixes the length m of y): build its operator "
                        "from a NumPy array, not a traced value") from e
    if mask.ndim != 2:
        raise ValueError(f"AUTOMAP needs one 2-D mask (n, n), got shape {mask.shape}")
    if mask.shape != (model.n, model.n):
        raise ValueError(f"mask has shape {mask.shape} but the AUTOMAP model is for {model.n} x {model.n}")
    if int(mask.sum()) != model.m:
        raise ValueError(f"mask samples {int(mask.sum())} entries but the AUTOMAP model takes m = {model.m}")


def _apply(model, variables, op, y):
    return model.apply(variables, op.gather(y))


def _apply_with_activations(model, variables, op, y):
    out, state = model.apply(variables, op.gather(y), mutable=["intermediates"])
    return out, state.get("intermediates")


def _init(model, key, op, y):
    # The input length is the model's m, whatever the example operator samples.
    return model.init(key, jnp.zeros(y.shape[:-2] + (model.m,), jnp.complex64))


def _complete_kwargs(kwargs, image_size, fixed_operator):
    if fixed_operator is None:
        raise ValueError("AUTOMAP's input length is fixed by its mask: train it with one fixed mask "
                         "(mask mode 'fixed')")
    out = dict(kwargs)
    out.setdefault("n", int(image_size))
    out.setdefault("m", int(np.asarray(fixed_operator.mask).sum()))
    return out


SPEC = registry.register(registry.ModelSpec(
    name="automap", cls=Automap, apply=_apply, init=_init, trained=True, inputs=("measurement_vector",),
    operator_types=(operators.Cartesian,), static_operator=True, apply_with_activations=_apply_with_activations,
    complete_kwargs=_complete_kwargs, check=_check,
    hyperparameters=(
        registry.Hyper("hidden", 64, "Width of the first fully connected layer (25000 in the paper)."),
        registry.Hyper("conv_features", 64, "Channels of the two 5x5 convolutions.")),
    # Antun et al., SI 2.1.2: squared l2 of the magnitude error + 1e-4 l1 of conv2's activations.
    train_defaults={"loss": "magnitude_l2", "mask_mode": "fixed", "activation_penalty": 1e-4},
    aliases=("Automap",)))
