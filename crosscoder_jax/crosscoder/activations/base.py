"""The interface every activation function implements, and the pieces several of them share."""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from crosscoder_jax.crosscoder import scores
from crosscoder_jax.crosscoder.activations import select
from crosscoder_jax.crosscoder.activations.select import (  # noqa: F401 (re-exported)
    LOCAL, FlatBlocks, Over, RowBlocks, keep_top, keep_top_overall, kth_largest, row_blocks)

if TYPE_CHECKING:  # for annotations only: spec.py imports this package to check activation names
    from crosscoder_jax.crosscoder.spec import Spec


class PenaltyContext(NamedTuple):
    """What a loss term may look at: pre-activations and codes [B, F], the normalised batch and
    its reconstruction [B, C, D], summed decoder norms dn [F], the dead-latent mask [F], the step,
    and the crosscoder's decoder `decode(f_BF, bias=...) -> [B, C, D]` (passed
    in, so that activation functions need not import the crosscoder that imports them)."""

    pre_BF: jax.Array
    f_BF: jax.Array
    x_BCD: jax.Array
    xhat_BCD: jax.Array
    dn_F: jax.Array
    dead_F: jax.Array
    step: jax.Array
    params: Mapping[str, jax.Array]
    spec: "Spec"
    decode: Callable[..., jax.Array]


class Activation:
    """Defaults: no extra parameters or state, ReLU codes, no loss terms, nothing extra exported.

    `dec_init_norm`: the norm of every decoder row W_dec[i, c] at init when the spec sets none (the
    encoder starts as the decoder's transpose, so it sets the scale of the first pre-activations)."""

    dec_init_norm: float = 1.0

    def default_dec_init_norm(self, n_checkpoints: int) -> float:
        """Every decoder row's norm at init when the spec sets none."""
        return self.dec_init_norm

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


class Selected(NamedTuple):
    """A top-k selection: the mask keep [B, F], a static bound on its entries (ties aside), and
    where the search found them the blocks of latents that hold its entries (`RowBlocks` of a
    per-row search, `FlatBlocks` of a search over the whole block), or None."""

    keep_BF: jax.Array
    bound: int
    blocks: RowBlocks | FlatBlocks | None = None


class TopKActivation(Activation, abc.ABC):
    """Codes relu(pre) where a selection on the scores `v = relu(pre) * sum_c ||W_dec[i, c]||` keeps
    them, with AuxK on dead latents. `crosscoder.sparse_step` trains these from the kept entries,
    through `select` and `kept_update`.

    Decoder rows start at a joined norm sqrt(sum_c ||W_dec[i, c]||^2) of 1/sqrt(3), each snapshot's
    row at 1/sqrt(3 C): 0.577 for a plain SAE (sparsify's encoder scale: torch's Linear init),
    0.107 at C 29 (the demo, where 1.0 left 91-93% of the latents dead and 0.1 10%). Why not the
    paper's 1.0: Adam moves every weight by about lr a step whatever its size, so smaller rows turn
    faster; why not smaller: the codes must grow to the data's scale through the encoder, which
    starts as the decoder's transpose. Measured (benchmarks/README.md, "Quality per step"; C 1,
    D 512, F 16384, k 32, held-out FVU, 100 / 300 / 1,000 steps at lr 2e-4): power-law data 0.44 /
    0.34 / 0.25 at 0.1 and 0.35 / 0.14 / 0.048 at 0.577; planted features 0.46 / 0.11 / 0.055 at 0.1
    and 0.51 / 0.18 / 0.057 at 0.577 (sparsify 0.58 / 0.51 / 0.098). At lrs tuned for 1.0 (1e-3
    and up) smaller rows can leave more latents dead, so configs/paper.py and planted.py set 1.0."""

    def default_dec_init_norm(self, n_checkpoints: int) -> float:
        return 1.0 / math.sqrt(3.0 * n_checkpoints)

    @abc.abstractmethod
    def select(self, v_BF: scores.ScoresLike, spec: "Spec", step: jax.Array, n_tokens: int,
               over_row: Over | None = None, over_all: Over | None = None) -> "Selected":
        """Training-mode mask of the kept scores v [B, F] >= 0 (an array or `scores.Scores`; this
        device's block of an n_tokens-row batch, the others reached through `over_row` (same rows,
        other latents) and `over_all`), a static bound on how many this block can hold, ties aside,
        and, where the search found them, the blocks of latents that hold the kept entries."""

    def kept_update(self, min_kept: jax.Array) -> dict[str, jax.Array]:
        """What `update_state` needs, from the smallest kept score of the batch."""
        return {}

    def penalties(self, ctx: PenaltyContext) -> dict:
        return {"auxk": ctx.spec.aux_coeff * auxk_loss(ctx)}


def select_rows(v_BF: scores.ScoresLike, k: jax.Array, bound: int, over_row: Over | None = None) -> Selected:
    """The k (<= static `bound`) largest positive scores of each row of v [B, F] >= 0 (an array, or
    `scores.Scores` computed where read; ties at the k-th all kept): through `row_blocks` where
    this device holds whole rows (one device, or `over_row` is `LOCAL` inside shard_map), else the
    bisection of `keep_top`. The mask is an expression that XLA drops where nothing reads it."""
    if over_row is LOCAL or (over_row is None and select.single_device()):
        blocks = row_blocks(v_BF, jnp.broadcast_to(jnp.clip(k, 1, bound), v_BF.shape[:1]), bound)
        if blocks is not None:
            blocks = blocks._replace(t=jnp.where(k <= 0, jnp.inf, blocks.t), exact=blocks.exact & (k > 0))
            v = scores.full(v_BF)
            return Selected((v >= blocks.t[:, None]) & (v > 0), bound * v_BF.shape[0], blocks)
    return Selected(keep_top(scores.full(v_BF), k, axis=-1, k_bound=bound, over=over_row), bound * v_BF.shape[0])


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


def k_bound(spec: "Spec") -> int:
    """A static upper bound on `k_at(spec, step)` over all steps."""
    return max(spec.k, spec.k_start or 0)


def auxk_loss(ctx: PenaltyContext) -> jax.Array:
    """AuxK (Gao et al. 2024): the top `k_aux` dead latents of each token reconstruct the residual
    `x - xhat` (gradient stopped; the paper's reference code used `xhat - x`, a sign bug), without
    decoder bias, normalised by the residual's variance `mean_b sum ||e - mean_b e||^2`.
    0 when no latent is dead."""
    spec = ctx.spec
    n_dead = jnp.sum(ctx.dead_F, dtype=jnp.int32)

    def with_dead(_):
        relu_BF = jax.nn.relu(ctx.pre_BF)
        cand_BF = jnp.where(ctx.dead_F[None, :], relu_BF, 0.0)
        k_aux = jnp.minimum(spec.k_aux_resolved, n_dead)
        aux_f_BF = jnp.where(keep_top(cand_BF, k_aux, axis=-1, k_bound=spec.k_aux_resolved), relu_BF, 0.0)
        e_BCD = lax.stop_gradient(ctx.x_BCD - ctx.xhat_BCD)
        ehat_BCD = ctx.decode(aux_f_BF, bias=False)
        l2 = jnp.mean(jnp.sum(jnp.square(e_BCD - ehat_BCD), axis=(1, 2)))
        var = jnp.mean(jnp.sum(jnp.square(e_BCD - jnp.mean(e_BCD, axis=0, keepdims=True)), axis=(1, 2)))
        return jnp.where(var > 0, l2 / jnp.maximum(var, 1e-30), 0.0)

    return lax.cond(n_dead > 0, with_dead, lambda _: jnp.float32(0.0), None)
