"""`lax.top_k` over rows, run by a compiled host kernel where XLA's own is slow: on one CPU device.

XLA's CPU top-k costs ~2.4 us a row even for 64 entries: 30 ms for [4096, 1024] at k 32 on a
2-core Xeon (2026-12-06), 10 ms for [4096, 64]. The train step's per-row selection calls it twice
a step (`crosscoder/activations/select.py`), ~17% of the step. The kernel here (numba, rows split
over the cores) takes a lower bound on the k-th largest in one pass (the smallest of the maxima of
k disjoint groups: each holds an entry >= it), lists the entries at or above it (~4k of them on
the train step's scores), finds the k-th largest among those bit by bit on their order-preserving
integer keys, and ranks the k it keeps: 6.0 and 4.1 ms on the step's two inputs, where XLA took
33 and 25 ms. Every loop but the first is free of data-dependent branches; a sorted insertion of
the listed entries instead took 9.7 and 7.8 ms (mispredicted branches).

Same results as `lax.top_k` on NaN-free input: values descending, equal values in ascending index
order. Used only where it gives the same numbers faster: a single CPU device (a callback inside a
program sharded over devices would gather the rows onto the host), float32 rows of at least k
entries, numba importable, and `CROSSCODER_HOST_TOP_K` not "0" (for timing one against the other);
elsewhere `lax.top_k` runs. No gradient flows through its values (the callers use them as
thresholds).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

try:
    import numba
except ImportError:  # the kernel is a speed-up, never a requirement
    numba = None


if numba is not None:  # compiled on first call, cached in __pycache__
    _u32 = np.uint32

    @numba.njit(inline="always")
    def _key(b):
        """float32 bits (as int32) -> uint32 in the floats' order (negatives flipped)."""
        return _u32(b ^ ((b >> 31) & 0x7FFFFFFF)) ^ _u32(0x80000000)

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _top_rows(x, k, vals, idx, threads):
        R, n = x.shape
        c = n // k
        per = (R + threads - 1) // threads
        bits = x.view(np.int32)
        for part in numba.prange(threads):
            ck, ci = np.empty(n, np.uint32), np.empty(n, np.int32)  # the row's candidates
            ok, oi = np.empty(k, np.uint32), np.empty(k, np.int32)  # its top k, in index order
            for r in range(part * per, min(R, (part + 1) * per)):
                row, brow = x[r], bits[r]
                # The smallest of k group maxima: k entries are >= it, so the k-th largest is too.
                lo = np.inf
                for g in range(k):
                    mx = -np.inf
                    for j in range(g * c, n if g == k - 1 else (g + 1) * c):
                        if row[j] > mx:
                            mx = row[j]
                    if mx < lo:
                        lo = mx
                m = 0
                for j in range(n):  # branch-free listing of the entries >= lo
                    ck[m] = _key(brow[j])
                    ci[m] = j
                    m += row[j] >= lo
                if m < k:  # NaN (never >= lo, and skipped by the maxima) hid entries: rank the row
                    m = n
                    for j in range(n):
                        ck[j] = _key(brow[j])
                        ci[j] = j
                # the k-th largest key, bit by bit: the largest tk with at least k keys >= it
                tk = _u32(0)
                for bit in range(31, -1, -1):
                    trial = tk | _u32(1 << bit)
                    cnt = 0
                    for i in range(m):
                        cnt += ck[i] >= trial
                    if cnt >= k:
                        tk = trial
                ties = k
                for i in range(m):
                    ties -= ck[i] > tk
                o = 0
                for i in range(m):  # those above tk and the first ties at it, in index order
                    take = (ck[i] > tk) | ((ck[i] == tk) & (ties > 0))
                    ties -= (ck[i] == tk) & (ties > 0)
                    ok[o], oi[o] = ck[i], ci[i]
                    o += take
                for i in range(k):  # rank: key descending, then index ascending
                    rank = 0
                    for j in range(k):
                        rank += (ok[j] > ok[i]) | ((ok[j] == ok[i]) & (j < i))
                    vals[r, rank] = row[oi[i]]
                    idx[r, rank] = oi[i]


def top_k_host(x_Rn: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of x [R, n] float32 (n >= k) and their positions, on the
    host: values [R, k] descending, positions [R, k] int32 (ties in ascending index order)."""
    x_Rn = np.ascontiguousarray(x_Rn, dtype=np.float32)
    R, n = x_Rn.shape
    if not 1 <= k <= n:
        raise ValueError(f"top_k_host needs 1 <= k <= n; got k {k} for rows of {n} entries")
    vals = np.full((R, k), -np.inf, np.float32)
    idx = np.zeros((R, k), np.int32)
    _top_rows(x_Rn, k, vals, idx, numba.get_num_threads())
    return vals, idx


def available() -> bool:
    """Whether `top_k` runs the host kernel in programs traced now (see the module docstring)."""
    return (numba is not None and os.environ.get("CROSSCODER_HOST_TOP_K", "1") != "0"
            and jax.default_backend() == "cpu" and jax.device_count() == 1)


def top_k(x_Rn: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`lax.top_k(x, k)` for x [R, n]: values [R, k] descending and int32 positions [R, k], by the
    host kernel where `available()` (float32, n >= k; values then without gradient), else by XLA."""
    R, n = x_Rn.shape
    if not (available() and x_Rn.dtype == jnp.float32 and 1 <= k <= n and R >= 1):
        return lax.top_k(x_Rn, k)
    out = (jax.ShapeDtypeStruct((R, k), jnp.float32), jax.ShapeDtypeStruct((R, k), jnp.int32))
    return jax.pure_callback(lambda a: top_k_host(a, k), out, lax.stop_gradient(x_Rn))
