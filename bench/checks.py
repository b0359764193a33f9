"""What the input checks cost: nothing inside ``jit``, microseconds at the boundary.

The library's checks (``mrijax._checks``) look at shapes and dtypes when a function is traced and
at values only for concrete arrays outside ``jit``.  This prints, for the Cartesian operator at
``--size`` with a batch of ``--batch`` images:

* the jitted ``fourier.forward`` (checks included) against the same maths written without any
  check (``jnp.where(mask, fftshift(fft2(ifftshift(x))))``), interleaved, best of ``--repeats``;
* whether the two compiled programs consist of the same operations (the checks leave nothing behind);
* the eager cost of the boundary checks alone: building an operator from a concrete float 0/1
  mask (a value check) and from a boolean one (dtype only).

    python bench/checks.py                 # 128 x 128, batch 8
    python bench/checks.py --size=256 --batch=1
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np
import jax
import jax.numpy as jnp

from mrijax import fourier, masks, operators
from timing import best_time


def _unchecked_forward(x, mask):
    # fourier.forward's operations, in its order, with every check left out.
    x = jnp.asarray(x).astype(jnp.complex64)
    k = jnp.fft.fftshift(jnp.fft.fft2(jnp.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    k = k.astype(jnp.complex64)
    return jnp.where(jnp.asarray(mask).astype(bool), k, jnp.zeros((), k.dtype))


def _program(fn, *args):
    """The operations of the optimised HLO of ``jit(fn)``: sorted ``(opcode, result type)`` pairs
    (names, source locations and metadata differ between two functions and are left out)."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return sorted(re.findall(r"= (\S+) ([a-z][a-z0-9-]*)\(", text))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)

    n = args.size
    mask = masks.gaussian_lines((n, n), 3.0, sample_n=8, seed=0)
    x = (np.random.default_rng(0).standard_normal((args.batch, n, n)) + 0j).astype(np.complex64)
    checked = jax.jit(fourier.forward)
    unchecked = jax.jit(_unchecked_forward)
    same = _program(fourier.forward, x, mask) == _program(_unchecked_forward, x, mask)
    np.testing.assert_allclose(checked(x, mask), unchecked(x, mask), rtol=1e-6, atol=1e-6)
    t_checked = t_unchecked = np.inf
    for _ in range(5):   # interleaved rounds, so load changes hit both alike
        t_checked = min(t_checked, best_time(checked, x, mask, repeats=args.repeats // 5))
        t_unchecked = min(t_unchecked, best_time(unchecked, x, mask, repeats=args.repeats // 5))
    float_mask = mask.astype(np.float32)
    t_float = best_time(operators.cartesian, float_mask, repeats=args.repeats)
    t_bool = best_time(operators.cartesian, mask, repeats=args.repeats)
    print(f"backend {jax.default_backend()}  jax {jax.__version__}  {n}x{n} batch {args.batch}")
    print(f"jit fourier.forward (checks included): {t_checked * 1e3:.3f} ms; the same maths without checks: "
          f"{t_unchecked * 1e3:.3f} ms; same compiled operations: {same}")
    print(f"eager boundary checks: operators.cartesian(float 0/1 mask) {t_float * 1e6:.1f} us (value check), "
          f"(bool mask) {t_bool * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
