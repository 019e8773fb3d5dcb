"""BatchTopK (Bussmann et al. 2024; Minder et al. 2025's crosscoders): keep the k*B largest scores
`v = relu(pre_i) * sum_c ||W_dec[i, c]||` over the whole batch. At inference a threshold theta on v
replaces the batch top-k: an EMA (beta 0.999) of the smallest kept score, started after
`threshold_start_step` steps (a run that ends before has it estimated at export; without one,
inference keeps each row's top k). AuxK on dead latents."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from crosscoder_jax.crosscoder import scores
from crosscoder_jax.crosscoder.activations.base import (Selected, TopKActivation, k_at, k_bound, keep_top,
                                                         keep_top_overall)


class BatchTopK(TopKActivation):
    def init_state(self, spec):
        return {"threshold": jnp.float32(-1.0)}  # < 0: not estimated yet

    def select(self, v_BF, spec, step, n_tokens, over_row=None, over_all=None):
        v_BF = scores.full(v_BF)  # the search over the whole batch counts every score in its rounds
        keep_BF, blocks = keep_top_overall(v_BF, k_at(spec, step) * n_tokens, k_bound=k_bound(spec) * n_tokens,
                                           over=over_all)
        # one block may hold every kept entry of the batch
        return Selected(keep_BF, min(k_bound(spec) * n_tokens, v_BF.size), blocks)

    def kept_update(self, min_kept):
        return {"min_kept": lax.stop_gradient(jnp.where(jnp.isfinite(min_kept), min_kept, 0.0))}

    def train(self, pre_BF, params, state, spec, dn_F, step):
        relu_BF = jax.nn.relu(pre_BF)
        v_BF = relu_BF * dn_F
        keep_BF = self.select(v_BF, spec, step, pre_BF.shape[0]).keep_BF
        return jnp.where(keep_BF, relu_BF, 0.0), self.kept_update(jnp.min(jnp.where(keep_BF, v_BF, jnp.inf)))

    def infer(self, pre_BF, params, state, spec, dn_F):
        relu_BF = jax.nn.relu(pre_BF)
        v_BF = relu_BF * dn_F
        theta = state["threshold"]
        # Before any threshold exists: each row's own top k (its expected share of a batch top-k),
        # never a top-k over the rows at hand, which would make a row's codes depend on the others.
        keep_BF = lax.cond(theta >= 0, lambda: v_BF > theta, lambda: keep_top(v_BF, spec.k, axis=-1, k_bound=spec.k))
        return jnp.where(keep_BF, relu_BF, 0.0)

    def update_state(self, state, update, spec, step):
        theta, m = state["threshold"], update["min_kept"]
        ema = jnp.where(theta < 0, m, spec.threshold_beta * theta + (1 - spec.threshold_beta) * m)
        return {"threshold": jnp.where(step >= spec.threshold_start_step, ema, theta)}

    def export(self, params, state, spec, dn_F):
        # v > theta  <=>  relu(pre_i) > theta / dn_i: a per-latent threshold on the pre-activation,
        # which folding the input scales into the weights leaves unchanged.
        theta = float(state["threshold"])
        if theta < 0:  # none yet: no threshold, whose rule would keep every positive code
            return {}
        return {"threshold": theta / jnp.maximum(dn_F, 1e-30)}
