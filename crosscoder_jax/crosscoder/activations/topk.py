"""Per-token TopK: each token keeps its k largest decoder-norm-weighted scores
`relu(pre_i) * sum_c ||W_dec[i, c]||` (values kept unscaled), with AuxK on dead latents."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crosscoder_jax.crosscoder.activations.base import Activation, PenaltyContext, auxk_loss, k_at, k_bound, keep_top


class TopK(Activation):
    def _codes(self, pre_BF, dn_F, k, bound):
        relu_BF = jax.nn.relu(pre_BF)
        return jnp.where(keep_top(relu_BF * dn_F, k, axis=-1, k_bound=bound), relu_BF, 0.0)

    def train(self, pre_BF, params, state, spec, dn_F, step):
        return self._codes(pre_BF, dn_F, k_at(spec, step), k_bound(spec)), {}

    def infer(self, pre_BF, params, state, spec, dn_F):
        return self._codes(pre_BF, dn_F, spec.k, spec.k)

    def penalties(self, ctx: PenaltyContext) -> dict:
        return {"auxk": ctx.spec.aux_coeff * auxk_loss(ctx)}
