"""Speed of the D5-C5 network itself: forward, and forward + input gradient (one attack iteration).

For each variant (how the convolutions are computed, how the batch is fed), prints the
image-iterations per second of

* ``fwd``:  ``f(k)``, the reconstruction map of a ``Cascade()`` with random weights;
* ``iter``: ``value_and_grad`` of ``1/2 ||f(k) - p||^2`` with respect to ``k``, which is the
  network part of one iteration of :func:`mrijax.attacks.worst_case`,

with the FLOPs of the convolutions (counted by hand, 2 per multiply-add; XLA's own cost
analysis is printed beside them), the float32 4096^3 GEMM rate of NumPy (the "ceiling") and
the fraction of it reached.  The machine may be shared: every round runs the GEMM and each
variant once, in turn, so that a burst of someone else's load hits all of them alike; the
table gives the best and the median round, and the fraction uses the best GEMM and the best
variant time.  The process CPU time of the best round is printed too (with 2 cores, a value
near 2x the wall time means the run had both to itself).

    python bench/cascade.py                                  # 128x128, batch 8 and 1, all variants
    python bench/cascade.py --cases=128x8 --rounds=9 --variants=xla,winograd4
    python bench/cascade.py --feed=vmap                      # vmapped over images, as mrijax.attacks

Variants (``--variants``, comma list):
  ``plain``      small_conv_impl="conv", conv_impl="xla": every convolution an XLA convolution;
  ``xla``        small_conv_impl="matmul", conv_impl="xla" (the CPU default);
  ``winograd``   small_conv_impl="matmul", conv_impl="winograd"  (F(2x2, 3x3) hidden convs);
  ``winograd4``  small_conv_impl="matmul", conv_impl="winograd4" (F(4x4, 3x3) hidden convs);
  any of them with ``@C`` appended (``xla@4``): the batch split into chunks of C images inside
  the one jit (unrolled), ``--feed=batched`` only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier, masks
from mrijax.models import Cascade, reconstruction_map

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = {
    "plain": dict(small_conv_impl="conv", conv_impl="xla"),
    "xla": dict(small_conv_impl="matmul", conv_impl="xla"),
    "winograd": dict(small_conv_impl="matmul", conv_impl="winograd"),
    "winograd4": dict(small_conv_impl="matmul", conv_impl="winograd4"),
}


def gemm_seconds(a) -> float:
    t = time.perf_counter()
    a @ a
    return time.perf_counter() - t


def cascade_flops(side: int, n_cascades=5, n_convs=5, features=64, kernel=3) -> float:
    """FLOPs of one forward pass of the cascade's convolutions on one image (2 per MAC)."""
    chans = [2] + [features] * (n_convs - 1) + [2]
    macs = sum(kernel * kernel * cin * cout for cin, cout in zip(chans[:-1], chans[1:]))
    return 2.0 * macs * side * side * n_cascades


def build(variant: str, side: int, batch: int, feed: str):
    """Compiled ``fwd(k)`` and ``iteration(k)`` of a variant, and the argument to call them with."""

    name, _, chunk = variant.partition("@")
    chunk = int(chunk) if chunk else batch
    if feed == "vmap" and chunk != batch:
        raise ValueError("batch chunks (@C) need --feed=batched")
    model = Cascade(**VARIANTS[name])
    mask = masks.gaussian_lines((side, side), 3.0, sample_n=8, seed=0)
    zeros = jnp.zeros((side, side), jnp.complex64)
    params = model.init(jax.random.key(0), zeros, zeros, mask)   # random (He) weights, zero biases
    f = reconstruction_map(model, params, mask)
    if feed == "vmap":
        f = jax.vmap(f)
    elif chunk < batch:
        f_one = f
        f = lambda k: jnp.concatenate([f_one(k[i:i + chunk]) for i in range(0, batch, chunk)], axis=0)

    rng = np.random.default_rng(0)
    x = rng.random((batch, side, side)).astype(np.float32)
    k = fourier.fft2c(jnp.asarray(x, jnp.complex64))
    target = jax.jit(f)(k)   # p = f(y), as the attack's "prediction" target

    def objective(kk):
        return 0.5 * jnp.sum(jnp.abs(f(kk) - target) ** 2)

    k_start = k + 1e-3 * fourier.fft2c(jnp.asarray(rng.standard_normal(x.shape), jnp.complex64))
    return jax.jit(f), jax.jit(jax.value_and_grad(objective)), k_start


def xla_flops(compiled_fn, arg) -> float:
    try:
        cost = compiled_fn.lower(arg).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # cost analysis is best effort: not every backend / version has it
        return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="128x8,128x1", help="comma list of SIDExBATCH")
    ap.add_argument("--variants", default="plain,xla,winograd,winograd4,xla@4,winograd@4")
    ap.add_argument("--feed", choices=["batched", "vmap"], default="batched",
                    help="call the map on the batch (batched) or vmap it over images (as mrijax.attacks)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--what", default="fwd,iter", help="fwd, iter or both")
    args = ap.parse_args(argv)

    a = np.random.default_rng(1).standard_normal((4096, 4096), dtype=np.float32)
    gemm_seconds(a)
    print(f"backend {jax.default_backend()}  jax {jax.__version__}  cores {os.cpu_count()}  "
          f"feed {args.feed}  rounds {args.rounds}")
    variants = args.variants.split(",")
    whats = args.what.split(",")
    for case in args.cases.split(","):
        side, batch = (int(v) for v in case.lower().split("x"))
        flops = {"fwd": cascade_flops(side), "iter": 2.0 * cascade_flops(side)}
        runs = {}
        for v in variants:
            if "@" in v and (args.feed == "vmap" or int(v.split("@")[1]) >= batch):
                continue
            fwd, it, k = build(v, side, batch, args.feed)
            for what, fn in (("fwd", fwd), ("iter", it)):
                if what not in whats:
                    continue
                t = time.perf_counter()
                jax.block_until_ready(fn(k))
                runs[(v, what)] = dict(fn=fn, k=k, first=time.perf_counter() - t, wall=[], cpu=[],
                                       xla=xla_flops(fn, k) / batch)
        gemm = []
        for _ in range(args.rounds):
            gemm.append(gemm_seconds(a))
            for r in runs.values():
                c, t = time.process_time(), time.perf_counter()
                jax.block_until_ready(r["fn"](r["k"]))
                r["wall"].append(time.perf_counter() - t)
                r["cpu"].append(time.process_time() - c)
        ceiling = 2.0 * 4096 ** 3 / min(gemm)
        print(f"\n{side}x{side} batch {batch}: NumPy float32 GEMM best {ceiling / 1e9:.1f} GFLOP/s, median "
              f"{2.0 * 4096 ** 3 / np.median(gemm) / 1e9:.1f}  (hand-counted GFLOP/image: fwd "
              f"{flops['fwd'] / 1e9:.2f}, iter {flops['iter'] / 1e9:.2f})")
        print(f"{'variant':14s} {'what':5s} {'img-it/s best':>13s} {'median':>7s} {'ms best':>8s} {'cpu ms':>8s} "
              f"{'GFLOP/s':>8s} {'% GEMM':>7s} {'XLA GFLOP/img':>13s} {'compile+1st s':>13s}")
        for (v, what), r in runs.items():
            best, med = min(r["wall"]), float(np.median(r["wall"]))
            cpu = r["cpu"][int(np.argmin(r["wall"]))]
            rate = flops[what] * batch / best
            print(f"{v:14s} {what:5s} {batch / best:13.2f} {batch / med:7.2f} {best * 1e3:8.1f} {cpu * 1e3:8.1f} "
                  f"{rate / 1e9:8.1f} {100 * rate / ceiling:6.1f}% {r['xla'] / 1e9:13.2f} {r['first']:13.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
