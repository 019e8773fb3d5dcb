"""Per-token TopK: each token keeps its k largest decoder-norm-weighted scores
`relu(pre_i) * sum_c ||W_dec[i, c]||` (values kept unscaled), with AuxK on dead latents."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crosscoder_jax.crosscoder.activations.base import TopKActivation, k_at, k_bound, keep_top, select_rows


class TopK(TopKActivation):
    def _codes(self, pre_BF, dn_F, k, bound):
        relu_BF = jax.nn.relu(pre_BF)
        return jnp.where(keep_top(relu_BF * dn_F, k, axis=-1, k_bound=bound), relu_BF, 0.0)

    def select(self, v_BF, spec, step, n_tokens, over_row=None, over_all=None):
        return select_rows(v_BF, k_at(spec, step), k_bound(spec), over_row)

    def train(self, pre_BF, params, state, spec, dn_F, step):
        relu_BF = jax.nn.relu(pre_BF)
        keep_BF = self.select(relu_BF * dn_F, spec, step, pre_BF.shape[0]).keep_BF
        return jnp.where(keep_BF, relu_BF, 0.0), {}

    def infer(self, pre_BF, params, state, spec, dn_F):
        return self._codes(pre_BF, dn_F, spec.k, spec.k)
