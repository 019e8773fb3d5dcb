"""Sparse decoding for top-k codes: `xhat = f @ W_dec` from the kept entries of f only.

With k of F latents active per token the dense decoder spends its three matmuls (forward, the
code gradient, the decoder gradient) on zeros. Here the kept entries are listed once, then the
forward gathers their decoder rows and sums them per token, the code gradient is one dot per
entry and the decoder gradient a scatter-add: O(B k C D) instead of O(B F C D) each.

Listing the entries avoids a `nonzero` over all B*F codes: blocks of s latents that hold any
entry are listed first (B*F/s flags), then the entries inside those blocks (at most cap*s slots).
`cap`, a static bound on the number of entries, comes from k; exact ties at the top-k threshold can
keep more, and then `decode` falls back to the dense matmul for that step, so results never
depend on the bound. The loops run over the entries found, not over `cap`.

Gathers and scatters move C*D numbers per entry where the dense matmuls stream whole rows through
the matrix units, so sparse only pays when few codes are nonzero: on the 2-core development CPU it
ran 1.1-1.2x the dense step at a density k/F of 1/512 and 1/2048 (`benchmarks/README.md`).
`MAX_DENSITY` = 1/256 caps where it is used; above that the dense matmul runs. Like the compacted
top-k search it runs on a single device only (`select.single_device`): partitioned over several,
its data-dependent gathers cost 9x the dense step (8 data-parallel devices).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from crosscoder_jax.crosscoder import matmul
from crosscoder_jax.crosscoder.activations import select


class Entries(NamedTuple):
    """Up to `cap` nonzero code entries in row-major order: token rows [cap], latent cols [cap];
    `n` the number found, `fits` whether n <= cap (slots past n hold the last position, row B - 1
    and col F - 1, and must be masked). No flat B*F index: it would overflow int32 at 2^31 codes."""

    rows: jax.Array
    cols: jax.Array
    n: jax.Array
    fits: jax.Array


def _block(F: int) -> int:
    return next(b for b in (32, 16, 8, 4, 2, 1) if F % b == 0)


def entries(f_BF: jax.Array, cap: int) -> Entries:
    """The nonzero entries of f [B, F], listed by blocks (see the module docstring)."""
    B, F = f_BF.shape
    s = _block(F)
    nz_BF = lax.stop_gradient(f_BF) != 0
    any_BN = jnp.any(nz_BF.reshape(B, F // s, s), axis=-1)
    n_blocks = jnp.sum(any_BN, dtype=jnp.int32)
    blk, = jnp.nonzero(any_BN.reshape(-1), size=cap, fill_value=0)
    slots_Cs = nz_BF.reshape(B * (F // s), s)[blk] & (jnp.arange(cap) < n_blocks)[:, None]
    n = jnp.sum(slots_Cs, dtype=jnp.int32)
    pos, = jnp.nonzero(slots_Cs.reshape(-1), size=cap, fill_value=0)
    blk_n = blk[pos // s]
    used = jnp.arange(cap) < n
    rows = jnp.where(used, blk_n // (F // s), B - 1)  # unused slots last, so rows stay sorted
    cols = jnp.where(used, (blk_n % (F // s)) * s + pos % s, F - 1)
    return Entries(rows=rows, cols=cols, n=n, fits=(n <= cap) & (n_blocks <= cap))


MAX_DENSITY = 1 / 256  # above this fraction of nonzero codes the dense decoder runs
_CHUNK = 4096  # entries per loop step: gathered rows stay ~10-25 MB instead of k*B*C*D floats at once


def _slice(a: jax.Array, i: jax.Array, n: int) -> jax.Array:
    return lax.dynamic_slice_in_dim(a, i * n, n)


def _steps(n_entries: jax.Array, n: int) -> jax.Array:
    return (n_entries + n - 1) // n


def _rounded(vals: jax.Array, dtype) -> jax.Array:
    """vals rounded like the dense path's operands, so both compute the same products."""
    return vals.astype(dtype).astype(jnp.float32)


def _gather_sum(vals: jax.Array, W_FK: jax.Array, e: Entries, B: int, dtype) -> jax.Array:
    W_FK = W_FK.astype(dtype)
    v = _rounded(vals, dtype)
    n = min(_CHUNK, v.shape[0])

    def body(i, out_BK):
        upd = W_FK[_slice(e.cols, i, n)].astype(jnp.float32) * _slice(v, i, n)[:, None]
        return out_BK.at[_slice(e.rows, i, n)].add(upd, indices_are_sorted=True)

    return lax.fori_loop(0, _steps(e.n, n), body, jnp.zeros((B, W_FK.shape[1]), jnp.float32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _sparse_matmul(vals: jax.Array, W_FK: jax.Array, e: Entries, B: int, dtype) -> jax.Array:
    return _gather_sum(vals, W_FK, e, B, dtype)


def _sparse_fwd(vals, W_FK, e, B, dtype):
    return _gather_sum(vals, W_FK, e, B, dtype), (vals, W_FK, e)


def _sparse_bwd(B, dtype, res, g_BK):
    # The code gradient is one dot per entry; the decoder gradient a scatter-add of g into the
    # entries' rows, accumulated in float32 (the dense path's weight gradient is float32 too).
    vals, W_FK, e = res
    Wc_FK, g_BK = W_FK.astype(dtype), g_BK.astype(dtype)
    v = _rounded(vals, dtype)
    n = min(_CHUNK, v.shape[0])

    def body(i, carry):
        d_vals, d_W = carry
        g_nK = g_BK[_slice(e.rows, i, n)]
        cols = _slice(e.cols, i, n)
        dv = jnp.einsum("nk,nk->n", Wc_FK[cols], g_nK, preferred_element_type=jnp.float32)
        d_W = d_W.at[cols].add(_slice(v, i, n)[:, None] * g_nK.astype(jnp.float32))
        return lax.dynamic_update_slice_in_dim(d_vals, dv, i * n, 0), d_W

    d_vals, d_W = lax.fori_loop(0, _steps(e.n, n), body,
                                (jnp.zeros(v.shape, jnp.float32), jnp.zeros(W_FK.shape, jnp.float32)))
    e_zero = jax.tree.map(lambda a: np.zeros(a.shape, jax.dtypes.float0), e)
    return d_vals.astype(vals.dtype), d_W.astype(W_FK.dtype), e_zero


_sparse_matmul.defvjp(_sparse_fwd, _sparse_bwd)


def decode(f_BF: jax.Array, W_FK: jax.Array, cap: int, dtype: str = "float32") -> jax.Array:
    """`f @ W` [B, K] in float32 from at most `cap` nonzero entries of f [B, F] (W [F, K] read in
    `dtype`), or the dense matmul when more are nonzero, `cap` is above `MAX_DENSITY` of B*F, or
    more than one device is present.
    Differentiable in f and W; the gradient in f is returned at f's nonzero entries only (zero
    elsewhere), which is exact for top-k codes, whose zeros pass no gradient to the pre-activations."""
    B, F = f_BF.shape

    def dense(_=None):
        return matmul.matmul("bf,fk->bk", f_BF, W_FK, dtype)

    cap = min(cap, int(B * F * MAX_DENSITY))
    if cap < 1 or not select.single_device():
        return dense()
    if cap > _CHUNK:
        cap = -(-cap // _CHUNK) * _CHUNK
    e = entries(f_BF, cap)
    valid = jnp.arange(cap) < e.n
    vals = jnp.where(valid, f_BF[e.rows, e.cols], 0.0)

    def sparse(_):
        return _sparse_matmul(vals, W_FK, e, B, jnp.dtype(dtype))

    return lax.cond(e.fits, sparse, dense, None)
