"""The published D5-C5 "Deep MRI" weights of Schlemper et al. (Deep-MRI-Reconstruction, Apache-2.0).

The file ``d5_c5.npz`` stores the Lasagne parameters of ``cascade_resnet`` blocks in order,
as ``arr_0, arr_1, ...``: for cascade ``c`` and convolution ``l`` of a network with ``D``
convolutions per cascade,

    W = arr_{2 (D c + l)}       shape (C_out, C_in, k, k)   (Theano OIHW)
    b = arr_{2 (D c + l) + 1}   shape (C_out,)

For D5-C5 (``D = 5``) that is ``arr_{10c + 2l}`` / ``arr_{10c + 2l + 1}``, 50 arrays.  Flax
wants HWIO, ``W.transpose(2, 3, 1, 0)``.

Convolution or cross-correlation?
---------------------------------
Flax (like cuDNN and every modern framework) computes a *cross-correlation*.  The original
was trained with Theano on the GPU (cuDNN); Lasagne's CPU ``Conv2DLayer`` would instead
*convolve*, i.e. use the kernels rotated by 180 degrees.  ``flip_filters=False`` (default)
uses the stored kernels as cross-correlation kernels; ``flip_filters=True`` rotates them.

A reconstruction-quality check cannot decide between the two.  Let ``R`` flip an image
array in both axes (a 180-degree rotation).  Zero-padded 'same' correlation with rotated
kernels is ``R conv_K R``, and ``R`` maps k-space to its index-reversed copy up to a
unit-modulus phase per frequency, so it commutes with data consistency once the mask is
mirrored too.  Hence the flipped network equals ``x -> R f(R x)`` with the mirrored mask: the
original network applied to rotated images under mirrored sampling.  Training images have no
preferred orientation and line masks are symmetric in distribution, so both conventions
reconstruct equally well (PSNR within noise).  They are nevertheless different functions,
and adversarial perturbations found for one do not carry over exactly to the other: pick the
convention deliberately and report it.

Input scaling
-------------
The network was trained on images whose *magnitude* lies in ``[0, 1]`` (each image divided
by its maximum magnitude).  It is not scale equivariant (biases, ReLUs): scale the ground
truth so that ``max |x| = 1`` before simulating k-space, or the reconstructions degrade.

Layout
------
The original used the *uncentred* orthonormal FFT, ``fft2(x, norm="ortho")``, with an
uncentred mask.  :class:`~mrijax.models.Cascade` uses the centred one; data consistency acts
frequency by frequency, so with the mask and k-space converted consistently
(:func:`mrijax.fourier.from_uncentred_mask`, :func:`mrijax.fourier.from_uncentred_kspace`)
the results are identical.  The tests check this against an independent NumPy/SciPy
implementation of the original layout.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib

import numpy as np
import jax.numpy as jnp

from mrijax.models.cascade import Cascade

__all__ = ["load_deepmri_npz"]

_KEY = re.compile(r"^arr_(\d+)$")


def _read_arrays(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"D5-C5 weights not found at {path!r}; the published file is d5_c5.npz from "
            "Deep-MRI-Reconstruction (models/pretrained/)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # an .npz is a zip archive
        raise ValueError(f"{path!r} is not a readable .npz archive (no zip header: another kind of file, or "
                         "corrupt or truncated); expected arr_0, arr_1, ...")
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {key: np.asarray(data[key]) for key in data.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ValueError(f"{path!r} holds object arrays (pickled data); refusing to load it") from e
        raise ValueError(f"{path!r} is corrupt or truncated (not a readable .npz archive: {e}); "
                         "download the published d5_c5.npz again") from e
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as e:
        raise ValueError(f"{path!r} is corrupt or truncated (not a readable .npz archive: "
                         f"{type(e).__name__}: {e}); download the published d5_c5.npz again") from e
    arrays = {}
    for key, a in raw.items():
        if not _KEY.match(key):
            raise ValueError(f"{path!r}: unexpected key {key!r} (expected only arr_0, arr_1, ...)")
        arrays[int(_KEY.match(key).group(1))] = a
    if not arrays:
        raise ValueError(f"{path!r} holds no arrays")
    count = max(arrays) + 1
    missing = [f"arr_{i}" for i in range(count) if i not in arrays]
    if missing:
        raise ValueError(f"{path!r} is missing key(s) {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    if count % 2:
        raise ValueError(f"{path!r} has {count} arrays; expected (weight, bias) pairs, an even number")
    return [arrays[i] for i in range(count)]


def _check_layer(arrays, i):
    """Validate arr_{2i} (OIHW weight) and arr_{2i+1} (bias); return them."""
    w, b = arrays[2 * i], arrays[2 * i + 1]
    wk, bk = f"arr_{2 * i}", f"arr_{2 * i + 1}"
    if w.dtype.kind != "f" or b.dtype.kind != "f":
        raise ValueError(f"{wk}/{bk} must be floating point, got {w.dtype}/{b.dtype}")
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 != 1:
        raise ValueError(f"{wk} must be a convolution weight (out, in, k, k) with odd k, got shape {w.shape}")
    if b.shape != (w.shape[0],):
        raise ValueError(f"{bk} must be the bias of {wk}, shape ({w.shape[0]},), got {b.shape}")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise ValueError(f"{wk}/{bk} contain non-finite values")
    return w, b


def load_deepmri_npz(path, flip_filters=False, noise_level=None):
    """Load the published Deep-MRI-Reconstruction D5-C5 weights as a :class:`Cascade` and its params.

    The architecture (number of cascades, convolutions per cascade, features, kernel size) is
    read from the array shapes: a cascade ends at the convolution with 2 outputs.

    **Inputs must be magnitude-scaled to [0, 1]** (divide the image by its maximum
    magnitude before simulating k-space), as in training; see the module docstring.

    Args:
      path: the ``.npz`` file (e.g. ``../shared/data/d5_c5.npz``).  Loaded with
        ``allow_pickle=False``.
      flip_filters: ``False`` (default): use the stored kernels as cross-correlation kernels
        (cuDNN, what the network was trained with).  ``True``: rotate them by 180 degrees
        (Lasagne's CPU convolution).  PSNR cannot tell these apart; see the module docstring.
      noise_level: passed to :class:`Cascade` (``None``: exact DC, as published).

    Returns:
      ``(model, params)``: ``model.apply(params, x_zf, k0, mask)`` runs the network;
      ``params['params']['block_{c}']['conv_{l}']['kernel'|'bias']`` (HWIO, float32).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: not an npz, a corrupt or truncated one (naming the file), keys missing or
        unexpected, inconsistent shapes (naming the key).
    """
    arrays = _read_arrays(path)
    layers = [_check_layer(arrays, i) for i in range(len(arrays) // 2)]

    kernel_size = layers[0][0].shape[2]
    blocks, current = [], []
    for i, (w, _) in enumerate(layers):
        expected_in = 2 if not current else current[-1][0].shape[0]
        if w.shape[1] != expected_in:
            raise ValueError(f"arr_{2 * i} has {w.shape[1]} input channels; expected {expected_in} "
                             f"(shape {w.shape})")
        if w.shape[2] != kernel_size:
            raise ValueError(f"arr_{2 * i} has kernel size {w.shape[2]}, the others {kernel_size}")
        current.append(layers[i])
        if w.shape[0] == 2:  # the 2-channel aggregation conv closes a cascade
            blocks.append(current)
            current = []
    if current:
        raise ValueError(f"the last cascade does not end in a 2-output convolution (arr_{len(arrays) - 2} "
                         f"has shape {layers[-1][0].shape})")
    n_convs = len(blocks[0])
    if any(len(b) != n_convs for b in blocks):
        raise ValueError(f"cascades have different depths {[len(b) for b in blocks]}")
    features = blocks[0][0][0].shape[0] if n_convs > 1 else 2
    for c, block in enumerate(blocks):
        for l, (w, _) in enumerate(block[:-1]):
            if w.shape[0] != features:
                key = f"arr_{2 * (c * n_convs + l)}"
                raise ValueError(f"{key} has {w.shape[0]} output channels, expected {features}")

    params = {}
    for c, block in enumerate(blocks):
        convs = {}
        for l, (w, b) in enumerate(block):
            kernel = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
            if flip_filters:
                kernel = kernel[::-1, ::-1]
            convs[f"conv_{l}"] = {"kernel": jnp.asarray(np.ascontiguousarray(kernel)), "bias": jnp.asarray(b)}
        params[f"block_{c}"] = convs
    model = Cascade(n_cascades=len(blocks), n_convs=n_convs, features=features,
                    kernel_size=kernel_size, noise_level=noise_level)
    return model, {"params": params}
