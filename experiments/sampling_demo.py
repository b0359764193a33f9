"""Simulate an undersampled acquisition of the Shepp-Logan phantom and look at it.

Builds a sampling mask (``mrijax.masks.make``), measures the modified Shepp-Logan
phantom with ``A = P_Omega F`` (optionally with complex white Gaussian noise on the
samples), forms the zero-filled reconstruction ``A* y`` and scores it.  Writes into
``--out_dir`` (created if needed), each file atomically (a temporary name in the same
folder, then ``os.replace``):

* ``sampling.png``: target / mask / zero-filled magnitude, PSNR and SSIM in the titles;
* ``results.json``: sampling rate, PSNR (dB, peak from the target), SSIM, NMSE and the
  flags;
* ``arrays.npz``: ``target`` (float32), ``mask`` (bool), ``kspace`` (the measured,
  masked centred k-space, complex64) and ``zero_filled`` (complex64).  Read it with
  ``np.load(path, allow_pickle=False)``.

Example::

    python -m experiments.sampling_demo --out_dir=/tmp/demo --size=128 \\
        --mask=gaussian_lines --acceleration=3

``--acceleration`` means ``R`` for every kind: the line and Poisson-disc masks take
it directly, ``variable_density_2d`` gets ``rate = 1 / R`` and ``radial`` the
smallest number of golden-angle spokes whose mask samples at least ``1 / R`` of
k-space.  ``--noise`` is the standard deviation of the complex noise per sample
(real and imaginary parts each ``noise / sqrt(2)``); the FFT is orthonormal, so it is
also the noise level per pixel of a fully sampled image whose values lie in ``[0, 1]``.
"""

from __future__ import annotations

import io
import math
import os
import sys

import jax
import numpy as np
from absl import flags

from experiments import common
from mrijax import checkpoint, fourier, masks, metrics
from mrijax.data import phantoms

_IMAGE_MIN_SIZE = 7  # SSIM's 7x7 window


def define_flags() -> flags.FlagValues:
    """A fresh set of this script's flags (a private ``FlagValues``, so that no value
    leaks between two calls of :func:`main` in one process)."""
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Folder for sampling.png, results.json and arrays.npz.", **d)
    flags.mark_flag_as_required("out_dir", flag_values=fv)
    flags.DEFINE_integer("size", 128, "Image side in pixels.", lower_bound=_IMAGE_MIN_SIZE, **d)
    flags.DEFINE_enum("mask", "gaussian_lines", list(masks.KINDS), "Mask kind (mrijax.masks.KINDS).", **d)
    flags.DEFINE_float("acceleration", 3.0, "Acceleration factor R >= 1 (sampling rate about 1/R).",
                       lower_bound=1.0, **d)
    flags.DEFINE_integer("seed", 0, "Seed of the mask and of the noise.", lower_bound=0, **d)
    flags.DEFINE_float("noise", 0.0, "Std of complex white Gaussian noise on each k-space sample.",
                       lower_bound=0.0, **d)
    return fv


def simulate(size: int, mask: np.ndarray, noise: float, seed: int) -> dict:
    """Measure the Shepp-Logan phantom through ``mask`` and reconstruct by zero filling.

    Returns a dict of NumPy arrays: ``target``, ``mask``, ``kspace``, ``zero_filled``.
    """
    target = phantoms.shepp_logan(size)
    kspace = fourier.forward(target, mask)
    if noise > 0:
        # jax.random's complex normal has E|z|^2 = 1: real and imaginary parts of variance 1/2.
        z = jax.random.normal(jax.random.key(seed), kspace.shape, kspace.dtype)
        kspace = fourier.apply_mask(kspace + noise * z, mask)
    zero_filled = fourier.adjoint(kspace, mask)
    return dict(target=target, mask=np.asarray(mask, bool), kspace=np.asarray(kspace),
                zero_filled=np.asarray(zero_filled))


def scores(zero_filled, target) -> dict:
    """Sampling-independent scores of the zero-filled image against the target, as floats."""
    return dict(psnr_db=float(metrics.psnr(zero_filled, target)),
                ssim=float(metrics.ssim(zero_filled, target)),
                nmse=float(metrics.nmse(zero_filled, target)))


def _json_number(value: float):
    # JSON has no infinity; an exact reconstruction's PSNR is written as null.
    return value if math.isfinite(value) else None


def _figure_png(arrays: dict, kind: str, rate: float, result: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = arrays["target"].shape[0]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    try:
        panels = [
            (arrays["target"], f"target (Shepp-Logan {size}x{size})"),
            (arrays["mask"], f"mask: {kind}, rate {rate:.3f}"),
            (np.abs(arrays["zero_filled"]),
             f"zero-filled: PSNR {result['psnr_db']:.2f} dB, SSIM {result['ssim']:.3f}"),
        ]
        for ax, (image, title) in zip(axes, panels):
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def run(size: int = 128, mask: str = "gaussian_lines", acceleration: float = 3.0, seed: int = 0,
        noise: float = 0.0, out_dir: str | None = None) -> dict:
    """The whole experiment; writes the three files into ``out_dir`` and returns the JSON dict."""
    if out_dir is None:
        raise ValueError("out_dir is required")
    if size < _IMAGE_MIN_SIZE:
        raise ValueError(f"size must be >= {_IMAGE_MIN_SIZE} (the SSIM window), got {size}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    flag_values = dict(size=size, mask=mask, acceleration=acceleration, seed=seed, noise=noise,
                       out_dir=out_dir)
    # Build the mask first: it validates kind/acceleration/seed before any heavier work.
    sampling = masks.for_acceleration(mask, (size, size), acceleration, seed)
    os.makedirs(out_dir, exist_ok=True)

    arrays = simulate(size, sampling, noise, seed)
    rate = masks.sampling_rate(arrays["mask"])
    measured = scores(arrays["zero_filled"], arrays["target"])
    result = dict(sampling_rate=rate, samples=int(arrays["mask"].sum()),
                  psnr_db=_json_number(measured["psnr_db"]), ssim=measured["ssim"],
                  nmse=measured["nmse"], psnr_definition="10 log10(max|target|^2 / MSE), magnitude images",
                  flags=flag_values)

    png = _figure_png(arrays, mask, rate, measured)
    common.save_npz(os.path.join(out_dir, "arrays.npz"), **arrays)
    checkpoint.write_atomically(os.path.join(out_dir, "sampling.png"), lambda f: f.write(png))
    common.save_json(os.path.join(out_dir, "results.json"), result)
    return result


def main(argv=None) -> int:
    """Parse ``argv`` (``sys.argv`` style, program name first), run, return the exit code.

    ``--help`` prints the usage (0); a bad flag or an impossible mask prints one ``error: ...``
    line (2); Ctrl-C prints one line (130).
    """
    try:
        fv = common.parse(define_flags, argv)
    except SystemExit as e:   # --help (0) or a bad flag (2), its message already printed
        return int(e.code or 0)
    try:
        result = run(size=fv.size, mask=fv.mask, acceleration=fv.acceleration, seed=fv.seed,
                     noise=fv.noise, out_dir=fv.out_dir)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; nothing to resume (every file is written whole or not at all): rerun it\n")
        return 130
    except (ValueError, OSError) as e:  # e.g. a mask that cannot exist at this size / acceleration
        sys.stderr.write("error: " + " ".join(str(e).splitlines()) + "\n")
        return 2
    psnr = "inf" if result["psnr_db"] is None else f"{result['psnr_db']:.2f}"
    print(f"{fv.mask} R={fv.acceleration:g}: rate {result['sampling_rate']:.4f}, "
          f"PSNR {psnr} dB, SSIM {result['ssim']:.4f} -> {fv.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
