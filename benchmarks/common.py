"""Shared by the benchmarks: this machine's matmul peak measured with the same JAX build, and timing."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp


def shape_args(ap, steps: int) -> None:
    """The crosscoder shape flags every step benchmark takes (defaults: the paper's C, F and batch at D = 512)."""
    ap.add_argument("--C", type=int, default=3)
    ap.add_argument("--D", type=int, default=512)
    ap.add_argument("--F", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=steps)


def timeit(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of `fn()` (blocked until ready) over `repeats`, after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def compile_and_time(fn: Callable[[], object], steps: int) -> tuple[float, list[float]]:
    """Seconds of the first (compiling) call of `fn` and of each of `steps` further calls, all blocked."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first, times


def matmul_peak(n: int = 4096, dtype=jnp.float32, accumulate=jnp.float32, repeats: int = 3) -> float:
    """Achieved FLOP/s of a jitted n x n x n matmul: the machine's practical matmul peak."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=accumulate))
    return 2 * n ** 3 / timeit(lambda: f(a, b), repeats=repeats)
