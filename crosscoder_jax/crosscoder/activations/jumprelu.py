"""JumpReLU (Rajamanoharan et al. 2024): `f_i = pre_i * H(pre_i - theta_i)` with a learned
per-latent threshold theta = exp(log_threshold), an L0 penalty `lambda(t) * mean_b sum_i H(pre_i -
theta_i)`, and straight-through gradients for theta through a rectangle kernel of width `bandwidth`:
dH(z - theta)/dtheta := -(1/eps) * 1{|z - theta| < eps/2}."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from crosscoder_jax.crosscoder.activations.base import Activation, PenaltyContext, ramp


def _rect(u):
    return (jnp.abs(u) < 0.5).astype(jnp.float32)


def _sum_to(g, theta):
    return jnp.sum(g, axis=tuple(range(g.ndim - theta.ndim)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jump(x, theta, bandwidth):
    """x * H(x - theta); gradient to theta via the straight-through estimator."""
    return x * (x > theta)


def _jump_fwd(x, theta, bandwidth):
    return jump(x, theta, bandwidth), (x, theta)


def _jump_bwd(bandwidth, res, g):
    x, theta = res
    dtheta = -(theta / bandwidth) * _rect((x - theta) / bandwidth) * g
    return g * (x > theta), _sum_to(dtheta, theta)


jump.defvjp(_jump_fwd, _jump_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def heaviside(x, theta, bandwidth):
    """H(x - theta); no gradient to x, straight-through gradient to theta."""
    return (x > theta).astype(jnp.float32)


def _heaviside_fwd(x, theta, bandwidth):
    return heaviside(x, theta, bandwidth), (x, theta)


def _heaviside_bwd(bandwidth, res, g):
    x, theta = res
    dtheta = -(1.0 / bandwidth) * _rect((x - theta) / bandwidth) * g
    return jnp.zeros_like(x), _sum_to(dtheta, theta)


heaviside.defvjp(_heaviside_fwd, _heaviside_bwd)


class JumpReLU(Activation):
    def init_params(self, spec):
        return {"log_threshold": jnp.full((spec.dict_size,), jnp.log(spec.init_threshold), jnp.float32)}

    def train(self, pre_BF, params, state, spec, dn_F, step):
        return jump(pre_BF, jnp.exp(params["log_threshold"]), spec.bandwidth), {}

    def infer(self, pre_BF, params, state, spec, dn_F):
        return jump(pre_BF, jnp.exp(params["log_threshold"]), spec.bandwidth)

    def penalties(self, ctx: PenaltyContext) -> dict:
        lam = ctx.spec.sparsity_coeff * ramp(ctx.step, ctx.spec.sparsity_warmup_steps)
        theta_F = jnp.exp(ctx.params["log_threshold"])
        l0 = jnp.mean(jnp.sum(heaviside(ctx.pre_BF, theta_F, ctx.spec.bandwidth), axis=-1))
        return {"l0": lam * l0}

    def export(self, params, state, spec, dn_F):
        return {"threshold": jnp.exp(params["log_threshold"])}
