"""Speed of the worst-case search on the D5-C5 architecture (random weights).

Prints, for each case (image side, batch), the image-iterations per second of
``mrijax.attacks.worst_case`` end to end (the compiled search, timed on its second call so
that compilation is excluded), the FLOPs of one image-iteration (forward + input gradient
of the network), the float32 GEMM rates NumPy and XLA reach on this machine in the same run
(4096 x 4096 matmul; the larger is the "ceiling") and the fraction of it the search reaches.

    python bench/attack.py                       # 128x128 batch 1 and 8, 256x256 batch 1
    python bench/attack.py --cases=128x8 --loop=scan --steps=10
    python bench/attack.py --small_conv_impl=conv   # thin convolutions as lax convolutions

``--loop=host`` (the CPU default of mrijax.attacks) runs one compiled iteration per call;
``--loop=scan`` forces the rolled ``lax.scan`` used on accelerators, for comparison.
Numbers depend on the machine and its load: quote them with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import attacks, masks
from mrijax.models import Cascade, reconstruction_map

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gemm_rate(n: int = 4096, repeats: int = 5) -> float:
    """Best float32 ``n x n`` matmul rate of NumPy, in FLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def xla_gemm_rate(n: int = 4096, repeats: int = 5) -> float:
    """Best float32 ``n x n`` matmul rate of XLA (``jnp.dot`` under ``jit``), in FLOP/s.

    NumPy's BLAS is not always the faster of the two (its OpenBLAS picks an AVX2 kernel on
    some AMD CPUs), so the ceiling is the larger rate."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    mm = jax.jit(jnp.dot)
    mm(a, a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def cascade_flops(side: int, n_cascades=5, n_convs=5, features=64, kernel=3) -> float:
    """FLOPs of one forward pass of the cascade's convolutions on one image (2 per MAC)."""
    chans = [2] + [features] * (n_convs - 1) + [2]
    macs = sum(kernel * kernel * cin * cout for cin, cout in zip(chans[:-1], chans[1:]))
    return 2.0 * macs * side * side * n_cascades


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="128x1,128x8,256x1", help="comma list of SIDExBATCH")
    ap.add_argument("--steps", type=int, default=20, help="iterations per timed search")
    ap.add_argument("--repeats", type=int, default=2, help="timed searches per case (best is kept)")
    ap.add_argument("--loop", choices=["host", "scan"], default=None,
                    help="force the iteration loop (default: mrijax's choice for the backend)")
    ap.add_argument("--small_conv_impl", choices=["auto", "conv", "matmul"], default="auto")
    ap.add_argument("--conv_impl", choices=["auto", "xla", "winograd", "winograd4"], default="auto",
                    help="how the hidden 64 -> 64 convolutions are computed (Cascade(conv_impl=...))")
    ap.add_argument("--remat", action="store_true", help="Cascade(remat=True)")
    args = ap.parse_args(argv)

    loop = args.loop or "auto"
    numpy_gemm, xla_gemm = gemm_rate(), xla_gemm_rate()
    ceiling = max(numpy_gemm, xla_gemm)
    print(f"backend {jax.default_backend()}  devices {jax.devices()}  jax {jax.__version__}")
    print(f"float32 4096^3 GEMM: NumPy {numpy_gemm / 1e9:.1f} GFLOP/s, XLA {xla_gemm / 1e9:.1f} GFLOP/s "
          f"(the ceiling: the larger)")
    print(f"loop {args.loop or ('host' if jax.default_backend() == 'cpu' else 'scan') + ' (auto)'}  "
          f"small_conv_impl {args.small_conv_impl}  conv_impl {args.conv_impl}  remat {args.remat}  steps {args.steps}")
    model = Cascade(small_conv_impl=args.small_conv_impl, conv_impl=args.conv_impl, remat=args.remat)
    for case in args.cases.split(","):
        side, batch = (int(v) for v in case.lower().split("x"))
        rng = np.random.default_rng(0)
        x = rng.random((batch, side, side)).astype(np.float32)
        mask = masks.gaussian_lines((side, side), 3.0, sample_n=8, seed=0)
        k = jnp.zeros((side, side), jnp.complex64)
        params = model.init(jax.random.key(0), k, k, mask)
        recon = reconstruction_map(model, params, mask)
        kw = dict(key=jax.random.key(1), steps=args.steps, radius=0.02, radius_relative_to="x", loop=loop)
        t = time.perf_counter()
        jax.block_until_ready(attacks.worst_case(recon, x, mask, **kw).r)
        first = time.perf_counter() - t
        best = np.inf
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(attacks.worst_case(recon, x, mask, **kw).r)
            best = min(best, time.perf_counter() - t)
        rate = batch * args.steps / best
        flops = 2.0 * cascade_flops(side)  # forward + input gradient
        achieved = rate * flops
        print(f"{side}x{side} batch {batch}: {rate:7.2f} image-iter/s  ({best / args.steps * 1e3:8.1f} ms/iter; "
              f"first call {first:.1f} s)  {flops / 1e9:.1f} GFLOP/image-iter  {achieved / 1e9:6.1f} GFLOP/s  "
              f"= {100 * achieved / ceiling:5.1f}% of the GEMM ceiling", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
