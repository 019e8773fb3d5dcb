"""Selection scores computed where they are read, never written out whole.

A top-k step ranks the scores `v = relu(pre + b) * w` [R, n] (w the summed decoder norms, or for
AuxK the dead-latent mask), but reads few of them: each block's maximum, the entries of the blocks
that can hold the top k, a few rows. Written out as an array of their own they cost a full pass
over [R, n] (read the pre-activations, write the scores) before a second one reads them for the
block maxima: XLA's CPU backend runs a row reduction as a fusion of its own and does not fuse an
elementwise producer into it. So the blocks of a per-row search are strided (block j holds latents
j, j + n/s, ...): their maxima are the elementwise maximum of s contiguous slices of the row, one
pass that fuses with the scores, reads the pre-activations once and writes only [R, n/s]. Timed
alone at R 4096, n 16384, s 16 on a 2-core CPU: 14-23 ms, against 113-167 ms for the scores
written and then reduced, and 59-93 ms for contiguous blocks taken as s strided slices (which fuse
too, but read with stride s). The train step ran 9% faster (`benchmarks/README.md`, "Scores never
written").

Every function here takes either a plain array of scores (>= 0) or `Scores`, and gives the same
numbers for both (the same float32 operations on the same operands).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp


class Scores(NamedTuple):
    """v = relu(pre + b) * w: pre [R, n] (before the bias), b [n], w [n] >= 0."""

    pre: jax.Array
    b: jax.Array
    w: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pre.shape


ScoresLike = Union[jax.Array, Scores]


def _score(pre, b, w):
    p = pre + b
    return jnp.where(p > 0, p * w, 0.0)


def full(v: ScoresLike) -> jax.Array:
    """All the scores [R, n] (an array is returned as it is)."""
    return _score(v.pre, v.b, v.w) if isinstance(v, Scores) else v


def block_max(v: ScoresLike, s: int) -> jax.Array:
    """Each row's block maxima [R, n/s] over the strided blocks of s latents (block j holds
    j, j + n/s, ..., j + (s - 1) n/s): the elementwise maximum of s contiguous slices [R, n/s]."""
    R, n = v.shape
    if isinstance(v, Scores):
        pre, b, w = v.pre.reshape(R, s, n // s), v.b.reshape(s, n // s), v.w.reshape(s, n // s)
        return functools.reduce(jnp.maximum, [_score(pre[:, i], b[i], w[i]) for i in range(s)])
    v = v.reshape(R, s, n // s)
    return functools.reduce(jnp.maximum, [v[:, i] for i in range(s)])


def block_cols(ids_Rm: jax.Array, s: int, n: int) -> jax.Array:
    """The latents [R, s, m] of each row's strided blocks ids [R, m]: ascending over (slot, block)
    when the ids ascend, so a row-major listing of them is in ascending latent order."""
    return ids_Rm[:, None, :] + (n // s) * jnp.arange(s, dtype=ids_Rm.dtype)[:, None]


def take_blocks(v: ScoresLike, ids_Rm: jax.Array, s: int) -> jax.Array:
    """The scores [R, s, m] of each row's strided blocks ids [R, m], at `block_cols`."""
    R, n = v.shape
    cols_Rsm = block_cols(ids_Rm, s, n)
    take = lambda a: jnp.take_along_axis(a, cols_Rsm.reshape(R, -1), axis=1).reshape(cols_Rsm.shape)  # noqa: E731
    if isinstance(v, Scores):
        return _score(take(v.pre), v.b[cols_Rsm], v.w[cols_Rsm])
    return take(v)


def take_rows(v: ScoresLike, idx_r: jax.Array) -> jax.Array:
    """The scores of rows idx [r], [r, n]."""
    return _score(v.pre[idx_r], v.b, v.w) if isinstance(v, Scores) else v[idx_r]
