"""The interface every activation function implements, and the pieces several of them share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

if TYPE_CHECKING:
    from crosscoder_jax.crosscoder import Spec


class PenaltyContext(NamedTuple):
    """What a loss term may look at: pre-activations and codes [B, F], the normalised batch and
    its reconstruction [B, C, D], summed decoder norms dn [F], the dead-latent mask [F], the step."""

    pre_BF: jax.Array
    f_BF: jax.Array
    x_BCD: jax.Array
    xhat_BCD: jax.Array
    dn_F: jax.Array
    dead_F: jax.Array
    step: jax.Array
    params: Mapping[str, jax.Array]
    spec: "Spec"


class Activation:
    """Defaults: no extra parameters or state, ReLU codes, no loss terms, nothing extra exported."""

    def init_params(self, spec: "Spec") -> dict[str, jax.Array]:
        return {}

    def init_state(self, spec: "Spec") -> dict[str, jax.Array]:
        return {}

    def train(self, pre_BF: jax.Array, params: Mapping[str, jax.Array], state: Mapping[str, jax.Array],
              spec: "Spec", dn_F: jax.Array, step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training-mode codes f [B, F] and what `update_state` needs."""
        return jax.nn.relu(pre_BF), {}

    def infer(self, pre_BF: jax.Array, params: Mapping[str, jax.Array], state: Mapping[str, jax.Array],
              spec: "Spec", dn_F: jax.Array) -> jax.Array:
        """Inference-mode codes f [B, F]."""
        return jax.nn.relu(pre_BF)

    def penalties(self, ctx: PenaltyContext) -> dict[str, jax.Array]:
        return {}

    def update_state(self, state: Mapping[str, jax.Array], update: Mapping[str, jax.Array], spec: "Spec",
                     step: jax.Array) -> dict[str, jax.Array]:
        return dict(state)

    def export(self, params: Mapping[str, jax.Array], state: Mapping[str, jax.Array], spec: "Spec",
               dn_F: jax.Array) -> dict[str, Any]:
        """Extra tensors for `crosscoder.safetensors` (e.g. a per-latent threshold [F] on the
        pre-activation, which folding the input scales leaves unchanged)."""
        return {}


def ramp(step: jax.Array, length: int) -> jax.Array:
    """0 -> 1 linearly over `length` steps (1 at once when length <= 0)."""
    if length <= 0:
        return jnp.float32(1.0)
    return jnp.clip(step.astype(jnp.float32) / length, 0.0, 1.0)


def k_at(spec: "Spec", step: jax.Array) -> jax.Array:
    """The (possibly annealed) k at `step`, int32: linear from k_start to k over k_anneal_steps."""
    if spec.k_start is None or spec.k_anneal_steps <= 0:
        return jnp.int32(spec.k)
    k = spec.k_start + (spec.k - spec.k_start) * ramp(step, spec.k_anneal_steps)
    return jnp.round(k).astype(jnp.int32)


_INF_BITS = 0x7F800000  # bit pattern of +inf: an upper bound for every finite non-negative float32


def kth_largest(v: jax.Array, k: jax.Array | int, axis: int | None = None) -> jax.Array:
    """Exact k-th largest value of a non-negative array, over the last axis or over all of it.

    Bisection on the float32 bit patterns (monotonic for non-negative floats): 31 rounds of
    "how many entries are >= t", each a compare and a sum. Unlike `lax.top_k` it needs no
    static k and no gather, and every round is a plain reduction, so it stays exact when v is
    sharded over batch and latents (the partitioner all-reduces the counts). k may be traced and
    per row; k <= 0 gives +inf (keep nothing). Returns a float32 scalar, or [rows] for axis=-1.
    """
    if axis not in (None, -1):
        raise ValueError("kth_largest reduces over the last axis (axis=-1) or everything (axis=None)")
    bits = lax.bitcast_convert_type(jnp.maximum(v, 0.0).astype(jnp.float32), jnp.int32)
    shape = () if axis is None else bits.shape[:-1]
    k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), shape)

    def count_at_least(t):
        if axis is None:
            return jnp.sum(bits >= t, dtype=jnp.int32)
        return jnp.sum(bits >= t[..., None], axis=-1, dtype=jnp.int32)

    def body(_, carry):
        lo, hi = carry  # invariant: count(bits >= lo) >= k > count(bits >= hi)
        mid = lo + (hi - lo) // 2
        enough = count_at_least(mid) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    lo = jnp.zeros(shape, jnp.int32)
    hi = jnp.full(shape, _INF_BITS + 1, jnp.int32)
    lo, _ = lax.fori_loop(0, 31, body, (lo, hi))
    return lax.bitcast_convert_type(lo, jnp.float32)


def keep_top(v: jax.Array, k: jax.Array | int, axis: int | None) -> jax.Array:
    """Mask of the k largest positive entries of v >= 0 (per row for axis=-1, overall for None).
    Exact ties at the k-th value are all kept; zeros never are."""
    t = kth_largest(v, k, axis)
    if axis == -1:
        t = t[..., None]
    return (v >= t) & (v > 0)


def auxk_loss(ctx: PenaltyContext) -> jax.Array:
    """AuxK (Gao et al. 2024): the top `k_aux` dead latents of each token reconstruct the residual
    `x - xhat` (gradient stopped; the paper's reference code used `xhat - x`, a sign bug), without
    decoder bias, normalised by the residual's variance `mean_b sum ||e - mean_b e||^2`.
    0 when no latent is dead."""
    from crosscoder_jax.crosscoder import decode  # crosscoder imports this package

    spec = ctx.spec
    n_dead = jnp.sum(ctx.dead_F, dtype=jnp.int32)

    def with_dead(_):
        relu_BF = jax.nn.relu(ctx.pre_BF)
        cand_BF = jnp.where(ctx.dead_F[None, :], relu_BF, 0.0)
        k_aux = jnp.minimum(spec.k_aux_resolved, n_dead)
        aux_f_BF = jnp.where(keep_top(cand_BF, k_aux, axis=-1), relu_BF, 0.0)
        e_BCD = lax.stop_gradient(ctx.x_BCD - ctx.xhat_BCD)
        ehat_BCD = decode(ctx.params, aux_f_BF, spec, bias=False)
        l2 = jnp.mean(jnp.sum(jnp.square(e_BCD - ehat_BCD), axis=(1, 2)))
        var = jnp.mean(jnp.sum(jnp.square(e_BCD - jnp.mean(e_BCD, axis=0, keepdims=True)), axis=(1, 2)))
        return jnp.where(var > 0, l2 / jnp.maximum(var, 1e-30), 0.0)

    return lax.cond(n_dead > 0, with_dead, lambda _: jnp.float32(0.0), None)
