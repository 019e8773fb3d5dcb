"""Kernels run on the CPU host where XLA's own are slow: a per-row top-k, and the sparse step's
gathers and scatter-adds of rows; compiled with numba, the work split over the cores, and called
from jitted programs as XLA custom calls on XLA's own buffers (`host_ffi`, through `host_calls`,
which says where they are used). The `*_host` functions here run them on NumPy arrays (the same
numbers; the tests compare both).

Top-k. XLA's CPU top-k costs ~2.4 us a row even for 64 entries: 30 ms for [4096, 1024] at k 32 on a
2-core Xeon (2026-12-06), 10 ms for [4096, 64]. The train step's per-row selection calls it twice
a step (`crosscoder/activations/select.py`), ~17% of the step. The kernel here takes a lower bound
on the k-th largest in one pass (the smallest of the maxima of k disjoint groups: each holds an
entry >= it), lists the entries at or above it (~4k of them on the train step's scores), finds the
k-th largest among those bit by bit on their order-preserving integer keys, and ranks the k it
keeps: 6.0 and 4.1 ms on the step's two inputs, where XLA took 33 and 25 ms. Every loop but the
first is free of data-dependent branches; a sorted insertion of the listed entries instead took
9.7 and 7.8 ms (mispredicted branches). Same results as `lax.top_k` on NaN-free input: values
descending, equal values in ascending index order.

Rows. XLA's CPU backend gathers and scatter-adds whole rows entry by entry, in a loop over chunks
of entries (`crosscoder/sparse_decode.py`). Here each core takes a range of the output rows and
walks all the entries once, skipping the others' (no two cores add into one row, and no order of
the entries is needed). Sums run in entry order, so they round differently from XLA's.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # the kernels are a speed-up, never a requirement
    numba = None

_u32 = np.uint32


def _njit(**kw):
    """numba.njit where numba is installed (compiled on first call, cached in __pycache__)."""
    return (lambda f: numba.njit(cache=True, **kw)(f)) if numba is not None else (lambda f: f)


_prange = numba.prange if numba is not None else range


def threads() -> int:
    return numba.get_num_threads() if numba is not None else 1


@_njit(inline="always")
def _span(part, total, threads):
    """The rows [lo, hi) of the output that core `part` of `threads` owns."""
    return part * total // threads, (part + 1) * total // threads


# ---- top-k

@_njit(inline="always")
def _key(b):
    """float32 bits (as int32) -> uint32 in the floats' order (negatives flipped)."""
    return _u32(b ^ ((b >> 31) & 0x7FFFFFFF)) ^ _u32(0x80000000)


@_njit(parallel=True, nogil=True)
def _top_rows(x, k, vals, idx, threads):
    R, n = x.shape
    c = n // k
    bits = x.view(np.int32)
    for part in _prange(threads):
        ck, ci = np.empty(n, np.uint32), np.empty(n, np.int32)  # the row's candidates
        ok, oi = np.empty(k, np.uint32), np.empty(k, np.int32)  # its top k, in index order
        lo_r, hi_r = _span(part, R, threads)
        for r in range(lo_r, hi_r):
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
    _top_rows(x_Rn, k, vals, idx, threads())
    return vals, idx


# ---- rows

@_njit(inline="always")
def _widen(src, dst):
    """A row of W as float32 bits into dst (uint32): W's bits as they are (uint32: float32), or
    bfloat16 bits (uint16) shifted into the high half, exactly."""
    shift = 32 - 8 * src.itemsize
    for j in range(src.shape[0]):
        dst[j] = _u32(src[j]) << shift


@_njit(inline="always")
def _axpy(a, x, out):
    """out += a * x over a row."""
    for j in range(x.shape[0]):
        out[j] += a * x[j]


@_njit(parallel=True, nogil=True)
def _gather_sum(v, W, rows, cols, n, out, threads):
    B, K = out.shape
    for part in _prange(threads):
        lo, hi = _span(part, B, threads)
        out[lo:hi] = 0
        bits = np.empty(K, np.uint32)
        w = bits.view(np.float32)
        for i in range(n):
            if lo <= rows[i] < hi:
                _widen(W[cols[i]], bits)
                _axpy(v[i], w, out[rows[i]])


@_njit(parallel=True, nogil=True, fastmath={"reassoc"})  # reassoc: the dot's sum in vector lanes
def _decoder_grads(v, W, rows, cols, n, g, dv, dW, weight_grad, zero_dW, threads):
    F, K = W.shape
    N = dv.shape[0]
    for part in _prange(threads):
        lo, hi = _span(part, F, threads)
        if weight_grad and zero_dW:
            dW[lo:hi] = 0
        pad_lo, pad_hi = _span(part, N - n, threads)
        dv[n + pad_lo:n + pad_hi] = 0
        bits = np.empty(K, np.uint32)
        w = bits.view(np.float32)
        for i in range(n):
            if lo <= cols[i] < hi:
                _widen(W[cols[i]], bits)
                gr = g[rows[i]]
                acc = np.float32(0.0)
                for j in range(K):
                    acc += w[j] * gr[j]
                dv[i] = acc
                if weight_grad:
                    _axpy(v[i], gr, dW[cols[i]])


@_njit(parallel=True, nogil=True)
def _scatter_rows(v, X, rows, cols, n, out, zero, threads):
    for part in _prange(threads):
        lo, hi = _span(part, out.shape[0], threads)
        if zero:
            out[lo:hi] = 0
        for i in range(n):
            if lo <= cols[i] < hi:
                _axpy(v[i], X[rows[i]], out[cols[i]])


def _bits(W: np.ndarray) -> np.ndarray:
    """W as the kernels read it: float32 as its uint32 bits, bfloat16 bits (uint16) as they are."""
    W = np.ascontiguousarray(W)
    if W.dtype == np.float32:
        return W.view(np.uint32)
    if W.dtype != np.uint16:
        raise TypeError(f"rows of float32, or bfloat16 as uint16 bits, expected; got {W.dtype}")
    return W


def gather_sum_host(v_N, W_FK, rows_N, cols_N, n, B: int) -> np.ndarray:
    """out [B, K] float32: the sum over entries i < n of v[i] * W[cols[i]] into row rows[i]
    (W float32, or bfloat16 bits as uint16)."""
    out = np.empty((B, W_FK.shape[1]), np.float32)
    _gather_sum(np.asarray(v_N, np.float32), _bits(W_FK), np.asarray(rows_N, np.int32),
                np.asarray(cols_N, np.int32), int(n), out, threads())
    return out


def decoder_grads_host(v_N, W_FK, rows_N, cols_N, n, g_BK, dW_FK=None, weight_grad: bool = True):
    """(dv [N], dW [F, K]) float32: dv[i] = <W[cols[i]], g[rows[i]]> for i < n (0 past it), and dW
    (dW_FK, or zeros) plus the sum of v[i] * g[rows[i]] into row cols[i]; dW None without
    `weight_grad`."""
    N, (F, K) = np.shape(v_N)[0], W_FK.shape
    dv = np.empty((N,), np.float32)
    dW = (np.array(dW_FK, np.float32) if dW_FK is not None else np.empty((F, K), np.float32)) if weight_grad \
        else np.empty((1, K), np.float32)
    _decoder_grads(np.asarray(v_N, np.float32), _bits(W_FK), np.asarray(rows_N, np.int32),
                   np.asarray(cols_N, np.int32), int(n), np.asarray(g_BK, np.float32), dv, dW,
                   weight_grad, dW_FK is None, threads())
    return dv, (dW if weight_grad else None)


def scatter_rows_host(v_N, X_BK, rows_N, cols_N, n, F: int, out_FK=None) -> np.ndarray:
    """out [F, K] float32 (out_FK, or zeros) plus the sum of v[i] * X[rows[i]] into row cols[i]."""
    out = np.array(out_FK, np.float32) if out_FK is not None else np.empty((F, X_BK.shape[1]), np.float32)
    _scatter_rows(np.asarray(v_N, np.float32), np.asarray(X_BK, np.float32), np.asarray(rows_N, np.int32),
                  np.asarray(cols_N, np.int32), int(n), out, out_FK is None, threads())
    return out
