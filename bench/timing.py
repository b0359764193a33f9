"""The timing helper the benchmark scripts share (run them as files: ``python bench/NAME.py``)."""

import time

import numpy as np
import jax


def best_time(fn, *args, repeats: int, warmup: bool = True) -> float:
    """The best wall time in seconds of ``fn(*args)`` (results waited for) over ``repeats`` calls.

    ``warmup``: one untimed call first (compilation and the first run)."""
    if warmup:
        jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best
