"""Sparse kernels for top-k codes: the work after the encoder's pre-activations, from the kept
entries of the codes only.

With k of F latents active per token the dense step spends four of its five matmuls (decoder
forward, code gradient, decoder gradient, encoder gradient) on zeros. Here the kept entries are
listed once; then the reconstruction gathers their decoder rows and sums them per token
(`gather_sum`), the code gradient is one dot per entry and the decoder gradient a scatter-add
(`decoder_grads`), and the encoder's weight gradient a scatter-add of the input rows
(`scatter_rows`): O(B k C D) instead of O(B F C D) each. `sparse_step` puts them together.

Listing the entries avoids a `nonzero` over all B*F codes: blocks of s latents that hold any
entry are listed first (B*F/s flags), then the entries inside those blocks (at most cap*s slots).
`cap`, a static bound on the number of entries, comes from k (plus room for ties); the loops run
over the entries found, not over `cap`. Gathers and scatters move C*D numbers per entry where the
dense matmuls stream whole rows through the matrix units, so sparse pays only when few codes are
nonzero (`sparse_step.applies`). Left to XLA's partitioner, data-dependent gathers on sharded arrays
gather whole arrays onto every device, so on a mesh these run per device inside `shard_map`. On a
single CPU device the gathers and scatter-adds run as host kernels (`runtime.host_calls`), whose
cores each own a range of output rows: the train step ran 1.3x faster than with XLA's loops over
chunks of entries here (`benchmarks/README.md`, "Host kernels").
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from crosscoder_jax.crosscoder import scores
from crosscoder_jax.runtime import host_calls

_CHUNK = 4096  # most entries per loop step (a power of two); caps are whole multiples of it
_CHUNK_FLOATS = 1 << 22  # and at most this many gathered floats (16 MB) per step
# Rows whose ties spill out of their blocks (`entries_in_blocks`) are counted by gathering them, up to
# this many; a few such rows occur in most float32 batches at B 4096, a whole [B, F] count cost ~60 ms.
SPILL_ROWS = 64


class Entries(NamedTuple):
    """Up to `cap` nonzero code entries, rows ascending (row-major order, except `entries_of_rows`,
    which keeps its order within a row): token rows [cap], latent cols [cap];
    `n` the number listed (at most cap), `count` how many there are in all (more than n when cap
    was too small; slots past n hold the last position, row B - 1 and col F - 1, and must be
    masked). No flat B*F index: it would overflow int32 at 2^31 codes."""

    rows: jax.Array
    cols: jax.Array
    n: jax.Array
    count: jax.Array


def _block(F: int) -> int:
    return next(b for b in (32, 16, 8, 4, 2, 1) if F % b == 0)


def round_cap(cap: int) -> int:
    """`cap` rounded up to whole loop chunks: to a multiple of `_CHUNK`, or of 64 below it."""
    step = _CHUNK if cap > _CHUNK else 64
    return -(-max(cap, 1) // step) * step


def _nonzero(f_BF: jax.Array) -> jax.Array:
    return f_BF if f_BF.dtype == jnp.bool_ else lax.stop_gradient(f_BF) != 0


def _kept(f: jax.Array, t: jax.Array | None) -> jax.Array:
    """The flags of f: its nonzeros, or with a threshold t (broadcast against f) f >= t and f > 0."""
    if t is None:
        return _nonzero(f)
    f = lax.stop_gradient(f)
    return (f >= t) & (f > 0)


def _in_blocks(slots_Ns: jax.Array, blk_N: jax.Array, B: int, F: int, cap: int) -> Entries:
    """The entries flagged in slots [N, s] of the blocks of s latents with flat ids blk [N]
    (row * F/s + block, ascending); `count` counts the flags of these blocks only."""
    s = slots_Ns.shape[1]
    n = jnp.sum(slots_Ns, dtype=jnp.int32)
    pos, = jnp.nonzero(slots_Ns.reshape(-1), size=cap, fill_value=0)
    blk_n = blk_N[pos // s]
    used = jnp.arange(cap) < n
    rows = jnp.where(used, blk_n // (F // s), B - 1)  # unused slots last, so rows stay sorted
    cols = jnp.where(used, (blk_n % (F // s)) * s + pos % s, F - 1)
    return Entries(rows=rows, cols=cols, n=jnp.minimum(n, cap), count=n)


def entries(f_BF: jax.Array, cap: int, t: jax.Array | None = None) -> Entries:
    """The nonzero (or True) entries of f [B, F], or with a threshold t (scalar) those >= t and > 0,
    listed by blocks (see the module docstring); the first `round_cap(cap)` of them in row-major
    order when there are more."""
    B, F = f_BF.shape
    cap = round_cap(cap)
    s = _block(F)
    nz_BF = _kept(f_BF, t)
    any_BN = jnp.any(nz_BF.reshape(B, F // s, s), axis=-1)
    n_blocks = jnp.sum(any_BN, dtype=jnp.int32)
    blk, = jnp.nonzero(any_BN.reshape(-1), size=cap, fill_value=0)
    slots_Cs = nz_BF.reshape(B * (F // s), s)[blk] & (jnp.arange(cap) < n_blocks)[:, None]
    e = _in_blocks(slots_Cs, blk, B, F, cap)
    # past cap blocks the listed ones do not hold them all: count over everything then (rare)
    return e._replace(count=lax.cond(n_blocks <= cap, lambda: e.count, lambda: jnp.sum(nz_BF, dtype=jnp.int32)))


def entries_in_flat_blocks(f_BF: jax.Array, cap: int, blk_M: jax.Array, n_blocks: jax.Array, s: int,
                           t: jax.Array | None = None) -> Entries:
    """As `entries`, when the nonzeros of f [B, F] (or with a threshold t, scalar, its entries >= t
    and > 0) all lie in the first `n_blocks` of the blocks of s latents with flat ids blk [M]
    (row * F/s + block, ascending): reads M*s codes instead of B*F."""
    B, F = f_BF.shape
    cap = round_cap(cap)
    slots_Ms = _kept(f_BF.reshape(B * (F // s), s)[blk_M], t) & (jnp.arange(blk_M.shape[0]) < n_blocks)[:, None]
    return _in_blocks(slots_Ms, blk_M, B, F, cap)


def entries_in_blocks(f_BF: scores.ScoresLike, cap: int, ids_Bm: jax.Array, s: int, spill_B: jax.Array,
                      t_B: jax.Array | None = None) -> Entries:
    """As `entries`, when each row's nonzeros lie in its m strided blocks of s latents ids [B, m]
    (block j holds latents j, j + F/s, ...; `scores.block_cols`; ascending per row): reads B*m*s
    codes instead of B*F. Rows with `spill` True may hold nonzeros elsewhere too: those are not
    listed, but counted (over the spilling rows, or over all of f when more than `SPILL_ROWS` spill).

    With a threshold t [B] the entries are those of f >= t (per row) and > 0, compared inside the
    gathered blocks: a mask of f built beforehand is a [B, F] pass of its own (15-17 ms of a ~0.45 s
    step at D 512, F 16384, batch 4096 on a 2-core CPU; benchmarks/README.md). f may then be
    `scores.Scores`, computed in the blocks and rows read only."""
    B, F = f_BF.shape
    cap = round_cap(cap)
    t_B1 = None if t_B is None else t_B[:, None]
    slots_Bsm = _kept(scores.take_blocks(f_BF, ids_Bm, s), None if t_B1 is None else t_B1[..., None])
    n = jnp.sum(slots_Bsm, dtype=jnp.int32)
    pos, = jnp.nonzero(slots_Bsm.reshape(-1), size=cap, fill_value=0)  # row-major over (row, slot, block)
    used = jnp.arange(cap) < n
    rows = pos // (slots_Bsm.size // B)
    cols = scores.block_cols(ids_Bm, s, F).reshape(-1)[pos]  # ascending within a row (see block_cols)
    e = Entries(rows=jnp.where(used, rows, B - 1), cols=jnp.where(used, cols, F - 1), n=jnp.minimum(n, cap), count=n)
    r = min(B, SPILL_ROWS)

    def few():  # the spilling rows' entries outside their blocks, counted over those rows alone
        _, idx_r = lax.top_k(spill_B.astype(jnp.int32), r)  # every spilling row among the first r
        nz_rF = _kept(scores.take_rows(f_BF, idx_r), None if t_B1 is None else t_B1[idx_r])
        outside_r = jnp.sum(nz_rF, axis=1, dtype=jnp.int32) - jnp.sum(slots_Bsm[idx_r], axis=(1, 2), dtype=jnp.int32)
        return e.count + jnp.sum(jnp.where(spill_B[idx_r], outside_r, 0))

    n_spill = jnp.sum(spill_B, dtype=jnp.int32)
    how = jnp.where(n_spill == 0, 0, jnp.where(n_spill <= r, 1, 2))
    return e._replace(count=lax.switch(how, [lambda: e.count, few,
                                             lambda: jnp.sum(_kept(scores.full(f_BF), t_B1), dtype=jnp.int32)]))


def entries_of_rows(cols_Rk: jax.Array, cap: int, F: int) -> Entries:
    """The entries at latents cols [R, k] of each row (k per row, in the given order within a row),
    when those are all of them: no search at all. Padded to `round_cap(cap)` (>= R k) slots."""
    R, k = cols_Rk.shape
    cap = round_cap(cap)
    if cap < R * k:
        raise ValueError(f"room for {cap} entries, fewer than the {R} x {k} listed")
    pad = lambda a, v: jnp.concatenate([a.reshape(-1), jnp.full((cap - R * k,), v, jnp.int32)])  # noqa: E731
    rows = jnp.broadcast_to(jnp.arange(R, dtype=jnp.int32)[:, None], (R, k))
    n = jnp.int32(R * k)
    return Entries(rows=pad(rows, R - 1), cols=pad(cols_Rk.astype(jnp.int32), F - 1), n=n, count=n)


def _slice(a: jax.Array, i: jax.Array, n: int) -> jax.Array:
    return lax.dynamic_slice_in_dim(a, i * n, n)


def _steps(n_entries: jax.Array, n: int) -> jax.Array:
    return (n_entries + n - 1) // n


def chunk_len(cap: int, K: int) -> int:
    """Entries per loop step for rows of K floats: a power of two dividing cap (so that the steps
    tile it), gathering at most about `_CHUNK_FLOATS` floats."""
    n = 1 << max(0, min(_CHUNK, _CHUNK_FLOATS // max(K, 1)).bit_length() - 1)
    return math.gcd(cap, n)


def gatherable(W_FK: jax.Array, dtype) -> jax.Array:
    """W [F, K] in `dtype`, stored for row gathers (`rows_f32`): bfloat16 as its bits (uint16). XLA
    widens a bf16 matrix that is gathered and then converted to float32 whole, outside the loop
    (a float32 copy of W each step, gathered at 4 bytes a number); it cannot see through the bits."""
    W_FK = W_FK.astype(dtype)
    return lax.bitcast_convert_type(W_FK, jnp.uint16) if W_FK.dtype == jnp.bfloat16 else W_FK


def rows_f32(W_FK: jax.Array, idx_n: jax.Array) -> jax.Array:
    """Rows idx [n] of a `gatherable` W, float32 [n, K] (bf16 bits widened by a shift, exactly)."""
    r = W_FK[idx_n]
    if r.dtype == jnp.uint16:
        return lax.bitcast_convert_type(r.astype(jnp.uint32) << 16, jnp.float32)
    return r.astype(jnp.float32)


def rounded(vals: jax.Array, dtype) -> jax.Array:
    """vals rounded like the dense path's operands, so both compute the same products."""
    return vals.astype(dtype).astype(jnp.float32)


def gather_sum(vals: jax.Array, W_FK: jax.Array, e: Entries, B: int, dtype=jnp.float32) -> jax.Array:
    """`f @ W` [B, K] float32 for the codes f [B, F] whose entries e hold vals [cap] (W [F, K] and
    vals read in `dtype`): each token's sum of its entries' rows of W."""
    Wg_FK = gatherable(W_FK, dtype)
    v = rounded(vals, dtype)
    if host_calls.available():
        return host_calls.gather_sum(v, Wg_FK, e.rows, e.cols, e.n, B)
    n = chunk_len(v.shape[0], W_FK.shape[1])

    def body(i, out_BK):
        upd = rows_f32(Wg_FK, _slice(e.cols, i, n)) * _slice(v, i, n)[:, None]
        return out_BK.at[_slice(e.rows, i, n)].add(upd, indices_are_sorted=True)

    return lax.fori_loop(0, _steps(e.n, n), body, jnp.zeros((B, W_FK.shape[1]), jnp.float32))


def decoder_grads(vals: jax.Array, W_FK: jax.Array, e: Entries, g_BK: jax.Array, dtype=jnp.float32,
                  d_W_FK: jax.Array | None = None, g_scale: float | jax.Array = 1.0,
                  weight_grad: bool = True) -> tuple[jax.Array, jax.Array | None]:
    """The backward of `gather_sum` for the cotangent `g_scale * g` [B, K]: the code gradient, one
    dot `<W[col], g[row]>` per entry [cap] (0 past e.n), and the gradient of W [F, K], the
    scatter-add of `val * g[row]` into row col (added to `d_W_FK` when given; None without
    `weight_grad`), float32. (The scale is applied to the gathered rows, so no scaled copy of g is made.)"""
    Wg_FK = gatherable(W_FK, dtype)
    v = rounded(vals, dtype)
    if host_calls.available():
        return host_calls.decoder_grads(v, Wg_FK, e.rows, e.cols, e.n, rounded(g_BK * g_scale, dtype),
                                          d_W_FK, weight_grad)
    n = chunk_len(v.shape[0], W_FK.shape[1])

    def body(i, carry):
        d_vals, d_W = carry
        g_nK = rounded(g_BK[_slice(e.rows, i, n)] * g_scale, dtype)
        cols = _slice(e.cols, i, n)
        dv = jnp.sum(rows_f32(Wg_FK, cols) * g_nK, axis=-1)  # products of rounded numbers: exact in float32
        if weight_grad:
            d_W = d_W.at[cols].add(_slice(v, i, n)[:, None] * g_nK)
        return lax.dynamic_update_slice_in_dim(d_vals, dv, i * n, 0), d_W

    if d_W_FK is None and weight_grad:
        d_W_FK = jnp.zeros(W_FK.shape, jnp.float32)
    d_vals, d_W_FK = lax.fori_loop(0, _steps(e.n, n), body, (jnp.zeros(v.shape, jnp.float32), d_W_FK))
    return jnp.where(jnp.arange(v.shape[0]) < e.n, d_vals, 0.0), d_W_FK


def scatter_rows(vals: jax.Array, e: Entries, X_BK: jax.Array, F: int, dtype=jnp.float32,
                 out_FK: jax.Array | None = None) -> jax.Array:
    """`f.T @ X` [F, K] float32 for the codes f whose entries e hold vals: the scatter-add of
    `val * X[row]` into row col (added to `out_FK` when given). With vals the pre-activation
    gradient and X the input it is the encoder's weight gradient, transposed."""
    v = rounded(vals, dtype)
    if host_calls.available():
        return host_calls.scatter_rows(v, rounded(X_BK, dtype), e.rows, e.cols, e.n, F, out_FK)
    n = chunk_len(v.shape[0], X_BK.shape[1])

    def body(i, out):
        upd = rounded(X_BK[_slice(e.rows, i, n)], dtype) * _slice(v, i, n)[:, None]
        return out.at[_slice(e.cols, i, n)].add(upd)

    if out_FK is None:
        out_FK = jnp.zeros((F, X_BK.shape[1]), jnp.float32)
    return lax.fori_loop(0, _steps(e.n, n), body, out_FK)
