"""ReLU codes with the decoder-norm-weighted L1 penalty (Anthropic's crosscoder, the paper's L1 runs):
`lambda(t) * mean_b sum_i f_i * sum_c ||W_dec[i, c]||`, lambda warmed up linearly from 0."""

from __future__ import annotations

import jax.numpy as jnp

from crosscoder_jax.crosscoder.activations.base import Activation, PenaltyContext, ramp


class L1(Activation):
    dec_init_norm = 0.08  # the paper's L1 runs

    def penalties(self, ctx: PenaltyContext) -> dict:
        lam = ctx.spec.sparsity_coeff * ramp(ctx.step, ctx.spec.sparsity_warmup_steps)
        return {"l1": lam * jnp.mean(jnp.sum(ctx.f_BF * ctx.dn_F, axis=-1))}
