"""The top-k training loss and its gradient with the encoder forward as the only dense matmul.

For topk and batchtopk codes everything after the encoder's pre-activations depends on the kept
entries only (about k of F per token): the reconstruction sums k decoder rows per token, the code
gradient is one dot per entry, and both weight gradients are scatter-adds of one row per entry (the
decoder's of the reconstruction error, the encoder's of the input). AuxK is the same on the dead
latents' entries. So `value_and_grad` writes the loss and its gradient by hand with the kernels of
`sparse_decode`: the same numbers as `jax.value_and_grad(core.loss_fn)` (tested against it), in
O(B k C D) beyond the forward matmul, holding O(B k) numbers for the backward where autodiff of the
dense loss keeps several [B, F] arrays (and runs the encoder's weight gradient as a second
B x C D x F matmul).

It is written for one device's block of a `data x snapshot x latent` mesh, with the collectives
named by `Axes` (none on one device): the selection counts over the devices that hold the other
latents (and, for batchtopk, the other rows), the pre-activation is summed over snapshot shards,
the reconstruction over latent shards, and the code gradient over snapshot shards. The gradient
comes back summed over everything but the data axis, which the caller reduces (a reduce-scatter
under ZeRO; `training.sharding.sparse_value_and_grad`).

Ties: every entry tied at the k-th score is kept, as on the dense path, up to room for
`max(64, cap / 64)` of them beyond k per token; ties past that (constant inputs, say) are dropped in
row-major order and counted in aux["dropped"].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from crosscoder_jax.crosscoder import activations, core, matmul, scores, sparse_decode
from crosscoder_jax.crosscoder.activations.base import (FlatBlocks, RowBlocks, Selected, TopKActivation, k_bound,
                                                         select_rows)
from crosscoder_jax.crosscoder.activations.select import LOCAL, Over
from crosscoder_jax.crosscoder.spec import Spec

MAX_DENSITY = 1 / 64  # above this share of kept codes (k / F) the dense step runs (see `applies`)


def applies(spec: Spec) -> bool:
    """Whether `spec` trains through this module: a top-k activation with `sparse_decode` on and
    at most `MAX_DENSITY` of the codes kept. Measured at C 3, D 512, F 16384, batch 4096, bf16 on
    a 2-core CPU: k 32 (1/512) ran 2.27x the dense step, k 200 (1/82) 0.98x
    (`benchmarks/README.md`); beyond 1/64 the gathers would cost more than the matmuls they replace.
    A static k bound decides: an annealed k (the paper's 1000 -> 200) takes the dense step throughout."""
    act = activations.get(spec.activation)
    return spec.sparse_decode and isinstance(act, TopKActivation) and k_bound(spec) <= spec.dict_size * MAX_DENSITY


@dataclasses.dataclass(frozen=True)
class Axes:
    """Mesh axis names of this device's block (None: not split, no collective)."""

    data: str | None = None
    snapshot: str | None = None
    latent: str | None = None
    # the data axis when W_enc comes in, and both weight gradients leave, split over it along F
    # (ZeRO): the forward streams the encoder's shards around this ring (`encoder_pre`) and the
    # weight gradients are built one shard at a time as they pass around it (`ring_weight_grads`),
    # so no device holds a whole encoder or a whole unreduced gradient
    ring: str | None = None

    def _names(self, which: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in (getattr(self, w) for w in which) if n)

    def sum(self, x: jax.Array, *which: str) -> jax.Array:
        names = self._names(which)
        return lax.psum(x, names) if names else x

    def max(self, x: jax.Array, *which: str) -> jax.Array:
        names = self._names(which)
        return lax.pmax(x, names) if names else x

    def min(self, x: jax.Array, *which: str) -> jax.Array:
        names = self._names(which)
        return lax.pmin(x, names) if names else x

    def over(self, *which: str) -> Over:
        if not self._names(which):
            return LOCAL
        return Over(sum=lambda a: self.sum(a, *which), max=lambda a: self.max(a, *which))


def _cap(bound: int) -> int:
    return bound + max(64, bound // 64)


AUX_ENTRIES = 1 << 17  # AuxK entries per chunk of rows


def _row_chunk(B: int, k_aux: int) -> int:
    """Rows per AuxK chunk: the largest divisor of B whose chunk holds at most ~`AUX_ENTRIES` entries."""
    target = max(1, AUX_ENTRIES // k_aux)
    return max(d for d in range(1, min(B, target) + 1) if B % d == 0)


def encoder_pre(x_BK: jax.Array, W_enc_CDF: jax.Array, axes: Axes, dtype) -> jax.Array:
    """This device's pre-activations x W_enc [B, F] before the bias and the snapshot sum.

    With `axes.ring` the block holds 1/n of its latents' columns (n the ring's size, its own
    shard at its ring index): n matmuls against the shards as they pass around the ring (a collective
    matmul), so no device holds more than two shards of the encoder at once."""
    C, D, f = W_enc_CDF.shape
    if axes.ring is None:
        return matmul.matmul("bk,kf->bf", x_BK, W_enc_CDF.reshape(C * D, f), dtype)
    ring = axes.ring
    n = lax.psum(1, ring)
    me = lax.axis_index(ring)
    shift = [(j, (j - 1) % n) for j in range(n)]  # device j receives the shard of j + 1

    def turn(i, carry):
        pre_BF, W_KF = carry
        blk = matmul.matmul("bk,kf->bf", x_BK, W_KF, dtype)
        pre_BF = lax.dynamic_update_slice_in_dim(pre_BF, blk, ((me + i) % n) * f, axis=1)
        return pre_BF, lax.ppermute(W_KF, ring, shift)

    pre_BF = jnp.zeros((x_BK.shape[0], n * f), jnp.float32)
    pre_BF, W_KF = lax.fori_loop(0, n - 1, turn, (pre_BF, W_enc_CDF.reshape(C * D, f)))
    blk = matmul.matmul("bk,kf->bf", x_BK, W_KF, dtype)
    return lax.dynamic_update_slice_in_dim(pre_BF, blk, ((me + n - 1) % n) * f, axis=1)


class Deferred(NamedTuple):
    """Weight-gradient terms listed instead of scattered (with `axes.ring`): entry j adds
    `wdec[j] * S[srow[j]]` to row col[j] of the decoder's gradient and `wenc[j] * x[xrow[j]]` to the
    encoder's (transposed); col F marks an unused slot. S [2B, K] holds the scaled cotangent rows:
    the reconstruction's (rows :B) and AuxK's (rows B:)."""

    cols: jax.Array
    xrows: jax.Array
    srows: jax.Array
    wdec: jax.Array
    wenc: jax.Array
    S_RK: jax.Array

    def put(self, at: int | jax.Array, cols, xrows, srows, wdec, wenc) -> "Deferred":
        upd = lambda a, b: lax.dynamic_update_slice_in_dim(a, b.astype(a.dtype), at, 0)  # noqa: E731
        return self._replace(cols=upd(self.cols, cols), xrows=upd(self.xrows, xrows), srows=upd(self.srows, srows),
                             wdec=upd(self.wdec, wdec), wenc=upd(self.wenc, wenc))


def _deferred(n_slots: int, B: int, K: int, F: int) -> Deferred:
    i = jnp.zeros((n_slots,), jnp.int32)
    z = jnp.zeros((n_slots,), jnp.float32)
    return Deferred(jnp.full((n_slots,), F, jnp.int32), i, i, z, z, jnp.zeros((2 * B, K), jnp.float32))


def ring_weight_grads(d: Deferred, x_BK: jax.Array, F: int, ring: str, dtype) -> tuple[jax.Array, jax.Array]:
    """(dW_dec [F/n, K], dW_enc [F/n, K]): this device's shard (its ring index) of the weight
    gradients summed over the ring, from the listed terms of every device: a ring reduce-scatter in
    which each device adds, turn by turn, its terms for the shard that is passing through. The terms
    are sorted by latent once, so each turn visits only its shard's; products are rounded as
    `sparse_decode.decoder_grads` and `scatter_rows` round them."""
    n = lax.psum(1, ring)
    me = lax.axis_index(ring)
    f, K = F // n, x_BK.shape[1]
    order = jnp.argsort(d.cols, stable=True)
    cols, xrows, srows = d.cols[order], d.xrows[order], d.srows[order]
    wdec, wenc = (sparse_decode.rounded(w[order], dtype) for w in (d.wdec, d.wenc))
    bounds = jnp.searchsorted(cols, jnp.arange(n + 1, dtype=jnp.int32) * f).astype(jnp.int32)
    m = sparse_decode.chunk_len(sparse_decode.round_cap(cols.shape[0]), K)
    pad = lambda a, v: jnp.concatenate([a, jnp.full((m,), v, a.dtype)])  # noqa: E731 (slices never clamp)
    cols, xrows, srows, wdec, wenc = pad(cols, F), pad(xrows, 0), pad(srows, 0), pad(wdec, 0.0), pad(wenc, 0.0)

    def add_shard(b, acc):
        start, stop = bounds[b], bounds[b + 1]

        def chunk(i, acc):
            dec, enc = acc
            at = start + i * m
            sl = lambda a: lax.dynamic_slice_in_dim(a, at, m)  # noqa: E731
            c = jnp.where(at + jnp.arange(m) < stop, sl(cols) - b * f, f)  # f: past the shard, dropped
            dec = dec.at[c].add(sparse_decode.rounded(d.S_RK[sl(srows)], dtype) * sl(wdec)[:, None], mode="drop")
            enc = enc.at[c].add(sparse_decode.rounded(x_BK[sl(xrows)], dtype) * sl(wenc)[:, None], mode="drop")
            return dec, enc

        return lax.fori_loop(0, (stop - start + m - 1) // m, chunk, acc)

    shift = [(j, (j + 1) % n) for j in range(n)]  # device j passes its partial sums to j + 1

    def turn(i, acc):  # turn i adds to shard me - 1 - i, so that the last turn ends on one's own
        acc = add_shard((me + 2 * n - 1 - i) % n, acc)
        return jax.tree.map(lambda a: lax.ppermute(a, ring, shift), acc)

    acc = (jnp.zeros((f, K), jnp.float32), jnp.zeros((f, K), jnp.float32))
    return add_shard(me, lax.fori_loop(0, n - 1, turn, acc))


def _to_CDF(g_fCD: jax.Array) -> jax.Array:
    """g [f, C, D] transposed to [C, D, f], materialised once.

    Left alone, XLA fuses the transpose into a consumer of the encoder's gradient (the clipping
    divide) as a strided copy: a fusion of 0.5 s at C 3, D 2048, F 16384 and of 4.6 s at F 65536,
    where doing it once took the step from 30.4 to 25.0 s (benchmarks/README.md). So the blocked
    transpose (`matmul.transpose`) runs in a fusion of its own (`matmul.apart`). CPU only: GPU and
    TPU compilers lay transposes out themselves."""
    if jax.default_backend() != "cpu":
        return jnp.transpose(g_fCD, (1, 2, 0))
    f, C, D = g_fCD.shape
    return matmul.apart(lambda g: matmul.transpose(g.reshape(f, C * D)).reshape(C, D, f), g_fCD)


def list_kept(sel: Selected, v_BF: scores.ScoresLike, xw_BF: jax.Array, b_enc_F: jax.Array, axes: Axes,
              over: tuple[str, ...]):
    """The kept entries (rows, cols, relu(pre) there, 0 past n, with pre = xw + b_enc) of the
    selection on the scores v [B, F] (an array or `scores.Scores`), and how many ties were dropped.
    Where the search found the blocks that hold them, they are listed there by comparing the scores
    with its threshold, so that the mask `sel.keep_BF` is never built; the bias and relu are applied
    to the gathered entries, so that the encoder product xw [B, F] is the only full array of
    pre-activations XLA keeps (and, with `Scores` and a per-row search, the only [B, F] array)."""
    b, cap = sel.blocks, _cap(sel.bound)
    if isinstance(b, RowBlocks):
        # where every row holds exactly the bound (a TopK at its k, no ties at the k-th score), the
        # search found the entries already; searching the blocks for them (a prefix sum over B*m*s
        # slots) cost ~6% of the step at B 4096, F 16384, k 32 (benchmarks/README.md)
        e = lax.cond(jnp.all(b.exact), lambda: sparse_decode.entries_of_rows(b.cols, cap, v_BF.shape[1]),
                     lambda: sparse_decode.entries_in_blocks(v_BF, cap, b.ids, b.s, b.spill, b.t))
    elif isinstance(b, FlatBlocks):
        v_BF = scores.full(v_BF)
        e = lax.cond(b.ok, lambda: sparse_decode.entries_in_flat_blocks(v_BF, cap, b.ids, b.n, b.s, b.t),
                     lambda: sparse_decode.entries(v_BF, cap, b.t))
    else:
        e = sparse_decode.entries(sel.keep_BF, cap)
    valid = jnp.arange(e.rows.shape[0]) < e.n
    vals = jnp.where(valid, jax.nn.relu(xw_BF[e.rows, e.cols] + b_enc_F[e.cols]), 0.0)
    return e, vals, axes.sum(e.count - e.n, *over)


def value_and_grad(params: Mapping[str, jax.Array], act_state: Mapping[str, jax.Array], x_BCD: jax.Array,
                   spec: Spec, step: jax.Array, dead_F: jax.Array, axes: Axes = Axes(),
                   n_tokens: int | None = None,
                   reduce_data: Callable[[str, jax.Array, int], jax.Array] | None = None,
                   ) -> tuple[tuple[jax.Array, dict[str, Any]], dict[str, jax.Array]]:
    """((loss, aux), grads) of `core.loss_fn` for a top-k activation, from the kept entries.

    Block shapes: params W_enc [C, D, F] (F / n with `axes.ring`), b_enc [F], W_dec [F, C, D],
    b_dec [C, D]; x [B, C, D] this block's normalised batch; dead_F [F]. `n_tokens`: rows of the
    whole batch (default B).
    aux: "terms" (recon, auxk), "fvu" [C] (`core.fvu`), "fired_F" [F] (any kept entry in the batch),
    "l0" (mean kept per token), "act_update", "dropped" (ties past the room for them). grads: the
    block's gradient, passed through `reduce_data(name, grad, leaf_axes)` (the caller's reduction over
    the data axis; the grad's axis i is the parameter's axis leaf_axes[i]) before the encoder's is
    transposed from [F, C, D] to [C, D, F], so that a reduce-scatter along F, the major axis of both
    weight gradients, never needs a transposed copy of the whole block.
    """
    act = activations.get(spec.activation)
    dtype = jnp.dtype(spec.matmul_dtype)
    x_BCD = x_BCD.astype(jnp.float32)
    B, C, D = x_BCD.shape
    F = params["W_dec"].shape[0]
    N = n_tokens or B
    x_BK = x_BCD.reshape(B, C * D)
    W_FK = params["W_dec"].reshape(F, C * D)

    # The bias is added where the pre-activations are read (the scores, the listed entries, AuxK's
    # chunks): added once into an array of their own, it was a [B, F] pass of its own (25 ms of a
    # 0.5 s step at C 1, D 512, F 16384, batch 4096; benchmarks/README.md "Speed through a whole run").
    xw_BF = axes.sum(encoder_pre(x_BK, params["W_enc"], axes, spec.matmul_dtype), "snapshot")
    b_enc_F = params["b_enc"]
    # apart: fused with the [B, F] product below, XLA's CPU backend ran the norms as a library
    # fusion (118-127 ms at C 1, D 512, F 16384) that took 2.5x as long as that product alone (48 ms)
    dn_F = axes.sum(matmul.apart(lambda W: jnp.sum(core.decoder_norms({"W_dec": W}), axis=-1), params["W_dec"]),
                    "snapshot")
    v_BF = scores.Scores(xw_BF, b_enc_F, dn_F)
    sel = act.select(v_BF, spec, step, N, over_row=axes.over("latent"), over_all=axes.over("data", "latent"))
    e, vals, dropped = list_kept(sel, v_BF, xw_BF, b_enc_F, axes, ("data", "latent"))
    listed = jnp.arange(e.rows.shape[0]) < e.n
    # from the entries, not from passes over [B, F] (ties past the room aside: equal to the listed)
    fired_F = axes.max(jnp.zeros((F,), jnp.int32).at[e.cols].max(listed.astype(jnp.int32)), "data") > 0
    l0 = axes.sum(e.count, "data", "latent") / N
    min_kept = axes.min(jnp.min(jnp.where(listed, vals * dn_F[e.cols], jnp.inf)), "data", "latent")

    xhat_BK = axes.sum(sparse_decode.gather_sum(vals, W_FK, e, B, dtype), "latent")
    xhat_BK = xhat_BK + params["b_dec"].reshape(C * D)
    r_BK = xhat_BK - x_BK
    err_C = axes.sum(jnp.sum(jnp.square(r_BK.reshape(B, C, D)), axis=(0, 2)), "data")
    recon = axes.sum(jnp.sum(err_C), "snapshot") / N
    mean_CD = axes.sum(jnp.sum(x_BCD, axis=0), "data") / N
    var_C = axes.sum(jnp.sum(jnp.square(x_BCD - mean_CD), axis=(0, 2)), "data")
    ring = axes.ring
    d_vals, dW_FK = sparse_decode.decoder_grads(vals, W_FK, e, r_BK, dtype, g_scale=2.0 / N, weight_grad=ring is None)
    d_vals = axes.sum(d_vals, "snapshot")
    db_enc_F = jnp.zeros((F,), jnp.float32).at[e.cols].add(d_vals)

    # AuxK (`activations.base.auxk_loss`): the top k_aux dead latents of each token reconstruct the
    # residual x - xhat without decoder bias, normalised by its variance; 0 with none dead. In
    # chunks of rows, so that its entries (up to k_aux per token, D / 2 by default) stay small.
    n_dead = axes.sum(jnp.sum(dead_F, dtype=jnp.int32), "latent")
    k_aux = min(spec.k_aux_resolved, F)
    rows = _row_chunk(B, k_aux)

    # the weight gradients: scatter-added here (relu' = 1 at every kept entry: its score, hence its
    # pre-activation, is > 0), or with a ring listed and reduce-scattered at the end
    if ring is None:
        wg: Any = (dW_FK, sparse_decode.scatter_rows(d_vals, e, x_BK, F, dtype))
    else:
        cap_main, cap_aux = e.rows.shape[0], sparse_decode.round_cap(_cap(k_aux * rows))
        wg = _deferred(cap_main + (B // rows) * cap_aux, B, C * D, F).put(
            0, jnp.where(listed, e.cols, F), e.rows, e.rows, vals, d_vals)
        wg = wg._replace(S_RK=lax.dynamic_update_slice_in_dim(wg.S_RK, r_BK * (2.0 / N), 0, 0))

    def with_dead(carry):
        err_BK = -r_BK
        mean_K = axes.sum(jnp.sum(err_BK, axis=0), "data") / N
        var = axes.sum(jnp.sum(jnp.square(err_BK - mean_K)), "data", "snapshot") / N
        inv = jnp.where(var > 0, spec.aux_coeff / jnp.maximum(var, 1e-30), 0.0)
        scale = (-2.0 / N) * inv

        def chunk(i, c):
            l2, dropped, wg, db_enc_F = c
            xw_bF, err_bK, x_bK = (lax.dynamic_slice_in_dim(a, i * rows, rows) for a in (xw_BF, err_BK, x_BK))
            # relu(pre) * 1 is relu(pre) exactly, so these are the dead latents' pre-activations
            cand_bF = scores.Scores(xw_bF, b_enc_F, dead_F.astype(jnp.float32))
            sel = select_rows(cand_bF, jnp.minimum(spec.k_aux_resolved, n_dead), k_aux, axes.over("latent"))
            ea, vals, drop = list_kept(sel, cand_bF, xw_bF, b_enc_F, axes, ("data", "latent"))
            diff_bK = err_bK - axes.sum(sparse_decode.gather_sum(vals, W_FK, ea, rows, dtype), "latent")
            d_vals, dW_FK = sparse_decode.decoder_grads(vals, W_FK, ea, diff_bK, dtype, wg[0] if ring is None else None,
                                                        scale, weight_grad=ring is None)
            d_vals = axes.sum(d_vals, "snapshot")
            if ring is None:
                wg = (dW_FK, sparse_decode.scatter_rows(d_vals, ea, x_bK, F, dtype, wg[1]))
            else:
                assert ea.rows.shape[0] == cap_aux, (ea.rows.shape, cap_aux)
                used = jnp.arange(cap_aux) < ea.n
                wg = wg.put(cap_main + i * cap_aux, jnp.where(used, ea.cols, F), i * rows + ea.rows,
                            B + i * rows + ea.rows, vals, d_vals)
                wg = wg._replace(S_RK=lax.dynamic_update_slice_in_dim(wg.S_RK, diff_bK * scale, B + i * rows, 0))
            return (l2 + jnp.sum(jnp.square(diff_bK)), dropped + drop, wg, db_enc_F.at[ea.cols].add(d_vals))

        l2, dropped, *carry = lax.fori_loop(0, B // rows, chunk, (jnp.float32(0.0), jnp.int32(0), *carry))
        return inv * axes.sum(l2, "data", "snapshot") / N, dropped, *carry

    def none_dead(carry):
        return jnp.float32(0.0), jnp.int32(0), *carry

    auxk, dropped_a, wg, db_enc_F = lax.cond(n_dead > 0, with_dead, none_dead, (wg, db_enc_F))

    reduce_data = reduce_data or (lambda name, g, leaf_axes: g)
    # top-k activations have no parameters of their own; any other leaf gets a zero gradient
    grads = {name: jnp.zeros_like(p) for name, p in params.items() if name not in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if ring is None:
        dW_fCD = reduce_data("W_dec", wg[0].reshape(F, C, D), (0, 1, 2))
        dW_enc_fCD = reduce_data("W_enc", wg[1].reshape(F, C, D), (2, 0, 1))
    else:  # reduced over the ring (the data axis) already, this device's shard of F
        dW_fCD, dW_enc_fCD = (g.reshape(-1, C, D) for g in ring_weight_grads(wg, x_BK, F, ring, dtype))
    grads.update(W_enc=_to_CDF(dW_enc_fCD), b_enc=reduce_data("b_enc", db_enc_F, (0,)),
                 W_dec=dW_fCD, b_dec=reduce_data("b_dec", (2.0 / N) * jnp.sum(r_BK, axis=0).reshape(C, D), (0, 1)))
    aux = {"terms": {"recon": recon, "auxk": auxk}, "fvu": err_C / jnp.maximum(var_C, 1e-30), "fired_F": fired_F,
           "l0": l0, "act_update": act.kept_update(min_kept), "dropped": dropped + dropped_a}
    return (recon + auxk, aux), grads
