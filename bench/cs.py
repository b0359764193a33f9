"""Benchmarks and the one-off tuning run of :mod:`mrijax.cs`.

Speed (default)::

    python bench/cs.py [--sizes 128 256] [--batches 1 8] [--iters 50] [--repeats 3] [--grad]

prints PDHG iterations per second (whole batch per iteration, and images x iterations
per second) for the default solver at each size and batch, timed with
``block_until_ready`` after a warm-up call (compilation excluded).  ``--grad`` also
times ``jax.grad`` of a loss through the solver (forward + backward).

``--tgv R`` times the solver with second-order TGV in place of TV (``tgv = R * tv``).

Tuning (how the defaults of :data:`mrijax.cs.DEFAULTS` were chosen)::

    python bench/cs.py tune [--size 128]

grid-searches the constrained single-coil solver over the weight ratio
``wavelet_weight / tv``, ``step_balance`` and ``iters`` (the constrained minimiser
depends only on the ratio), then the absolute ``tv`` of the penalised form, on
Shepp-Logan, random-ellipse and MNI152 brain slices at 25% and 33% Gaussian-density
Cartesian column sampling, and prints the PSNR gain over zero filling.

TGV (how the TGV advice in :mod:`mrijax.cs` was found)::

    python bench/cs.py tune-tgv [--size 128]

runs the same problems with second-order TGV (``tgv = ratio * tv``, ``wavelet_weight =
0.1 * tv``, constrained): ``iters`` and ``step_balance`` at ratio 2, then ``ratio`` at 400
iterations, beside TV, and prints the gains and the objective reached (TGV's minimum is
at most TV's).
"""

from __future__ import annotations

import argparse

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import cs, fourier, masks, metrics
from timing import best_time
from mrijax.data import mni, phantoms


def _psnr(x, ref):
    # mrijax.metrics.psnr on magnitudes, per image, as NumPy.
    return np.asarray(metrics.psnr(np.abs(np.asarray(x)), np.abs(np.asarray(ref))))


# ----------------------------------------------------------------------------- speed


def speed(sizes, batches, iters, repeats, with_grad, tgv_ratio=None):
    print(f"devices: {jax.devices()}")
    print(f"default solver: {cs.DEFAULTS} (iters overridden to {iters} for timing), constrained, one coil")
    tgv = None if tgv_ratio is None else tgv_ratio * cs.DEFAULTS["tv"]
    if tgv is not None:
        print(f"with second-order TGV in place of TV: tgv = {tgv:g}")
    header = f"{'size':>6} {'batch':>6} {'iters/s':>10} {'img*iters/s':>12} {'ms/iter':>9}"
    if with_grad:
        header += f" {'grad iters/s':>13}"
    print(header)
    for size in sizes:
        mask = jnp.asarray(masks.gaussian_lines((size, size), 4, sample_n=10, seed=0))
        image = jnp.asarray(phantoms.shepp_logan(size))
        recon = jax.jit(lambda k: cs.reconstruct(k, mask, iters=iters, tgv=tgv))
        loss_grad = jax.jit(jax.grad(lambda k: jnp.sum(jnp.abs(cs.reconstruct(k, mask, iters=iters, tgv=tgv)) ** 2)))
        for batch in batches:
            k = fourier.forward(jnp.broadcast_to(image, (batch, size, size)), mask)
            seconds = best_time(recon, k, repeats=repeats)
            row = (f"{size:>6} {batch:>6} {iters / seconds:>10.1f} {batch * iters / seconds:>12.1f} "
                   f"{1e3 * seconds / iters:>9.2f}")
            if with_grad:
                seconds_grad = best_time(loss_grad, k, repeats=repeats)
                row += f" {iters / seconds_grad:>13.1f}"
            print(row, flush=True)


# ----------------------------------------------------------------------------- tuning


def _tuning_set(size):
    images = [phantoms.shepp_logan(size)] + [phantoms.random_ellipses(size, seed) for seed in range(3)]
    n_phantoms = len(images)
    images += list(mni.mni_slices(size, count=4))
    images = np.stack(images)
    # Every image under both sampling rates: 25% (R = 4) and 33% (R = 3).
    mask_list = [masks.gaussian_lines((size, size), acceleration, sample_n=10, seed=i)
                 for acceleration in (4, 3) for i in range(len(images))]
    images = np.concatenate([images, images])
    is_phantom = np.tile(np.arange(len(images) // 2) < n_phantoms, 2)
    return images, np.stack(mask_list), is_phantom


def tune(size):
    images, mask, is_phantom = _tuning_set(size)
    k = fourier.forward(jnp.asarray(images), jnp.asarray(mask))
    base = _psnr(fourier.zero_filled(k, mask), images)
    print(f"{len(images)} problems of {size}x{size}: {int(is_phantom.sum())} phantom, "
          f"{int((~is_phantom).sum())} MNI152; sampling rates {sorted(set(np.round(mask.mean((1, 2)), 3)))}")
    print(f"zero-filled PSNR: phantoms {base[is_phantom].mean():.2f} dB, brain {base[~is_phantom].mean():.2f} dB")

    def report(label, x):
        gain = _psnr(x, images) - base
        print(f"{label}  gain phantoms {gain[is_phantom].mean():6.2f}  brain {gain[~is_phantom].mean():6.2f}  "
              f"min {gain.min():6.2f} dB", flush=True)
        return gain

    print("\nconstrained (depends on the ratio wavelet_weight / tv only):")
    results = {}
    for iters in (100, 200):
        for balance in (0.1, 0.2, 0.3, 1.0):
            solve = jax.jit(lambda k, t, w: cs.reconstruct(k, mask, tv=t, wavelet_weight=w, iters=iters,
                                                           step_balance=balance))
            for ratio in (0.0, 0.05, 0.1, 0.2, 0.5):
                x = solve(k, jnp.float32(1.0), jnp.float32(ratio))
                label = f"  iters {iters:4d}  step_balance {balance:4.2f}  ratio {ratio:4.2f}"
                results[(iters, balance, ratio)] = report(label, x)

    print("\npenalised (constrained=False), ratio 0.1, step_balance 0.2, 100 iterations:")
    solve = jax.jit(lambda k, t, w: cs.reconstruct(k, mask, tv=t, wavelet_weight=w, iters=100,
                                                   step_balance=0.2, constrained=False))
    for tv in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2):
        report(f"  tv {tv:7.0e}  wavelet_weight {0.1 * tv:7.1e}", solve(k, jnp.float32(tv), jnp.float32(0.1 * tv)))

    print("\ndefaults:", cs.DEFAULTS)
    report(f"  default reconstruct(), {size}x{size}", cs.reconstruct(k, mask))
    for other in (64, 256):
        images_o, mask_o, phantom_o = _tuning_set(other)
        k_o = fourier.forward(jnp.asarray(images_o), jnp.asarray(mask_o))
        gain = _psnr(cs.reconstruct(k_o, mask_o), images_o) - _psnr(fourier.zero_filled(k_o, mask_o), images_o)
        for rate in (0.25, 0.33):
            sel = np.abs(mask_o.mean((1, 2)) - rate) < 0.02
            print(f"  default reconstruct(), {other}x{other}, {rate:.0%} sampling: gain phantoms "
                  f"{np.round(gain[sel & phantom_o], 2)}  brain {np.round(gain[sel & ~phantom_o], 2)} dB", flush=True)


def tune_tgv(size):
    images, mask, is_phantom = _tuning_set(size)
    k = fourier.forward(jnp.asarray(images), jnp.asarray(mask))
    base = _psnr(fourier.zero_filled(k, mask), images)
    print(f"{len(images)} problems of {size}x{size} (as in `tune`); constrained, wavelet_weight = 0.1 tv; "
          "objective: mean over problems of the normalised objective reached")

    def report(label, x, objective):
        gain = _psnr(x, images) - base
        print(f"{label}  gain phantoms {gain[is_phantom].mean():6.2f}  brain {gain[~is_phantom].mean():6.2f}  "
              f"min {gain.min():6.2f} dB  objective {float(np.mean(objective)):.4f}", flush=True)

    def solve(iters, balance, ratio):
        tgv = None if ratio is None else jnp.float32(ratio)
        return jax.jit(lambda k: cs.reconstruct(k, mask, tv=jnp.float32(1.0), wavelet_weight=jnp.float32(0.1),
                                                tgv=tgv, iters=iters, step_balance=balance, return_info=True,
                                                history=True))(k)

    for iters in (100, 400, 1600):
        x, info = solve(iters, 0.2, None)
        report(f"  TV          iters {iters:5d}  step_balance 0.20", x, info["objective"][-1])
    # Convergence at ratio 2 (iterations, step balance), then the ratio at 400 iterations.
    for iters in (100, 200, 400, 1600):
        for balance in (0.1, 0.2):
            x, info = solve(iters, balance, 2.0)
            report(f"  TGV ratio 2.0 iters {iters:5d}  step_balance {balance:4.2f}", x, info["objective"][-1])
    for ratio in (1.0, 1.5, 3.0, 5.0, 10.0):
        x, info = solve(400, 0.1, ratio)
        report(f"  TGV ratio {ratio:4.1f} iters   400  step_balance 0.10", x, info["objective"][-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="speed", choices=("speed", "tune", "tune-tgv"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grad", action="store_true", help="also time jax.grad through the solver")
    parser.add_argument("--tgv", type=float, default=None, metavar="RATIO",
                        help="time second-order TGV in place of TV, with tgv = RATIO * tv")
    parser.add_argument("--size", type=int, default=128, help="image size for tuning")
    args = parser.parse_args()
    if args.mode == "tune":
        tune(args.size)
    elif args.mode == "tune-tgv":
        tune_tgv(args.size)
    else:
        speed(args.sizes, args.batches, args.iters, args.repeats, args.grad, args.tgv)


if __name__ == "__main__":
    main()
