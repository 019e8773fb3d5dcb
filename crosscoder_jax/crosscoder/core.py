"""The sparse crosscoder: parameters, encode/decode, training loss and input-scaling folds.

Shapes (PAPER.md section 2): C checkpoints, D hidden size, F latents, B tokens.
`W_enc [C, D, F]`, `b_enc [F]`, `W_dec [F, C, D]`, `b_dec [C, D]`; one code `f [B, F]` shared by all
checkpoints, one decoder slice per checkpoint. C = 1 is a plain SAE.

Everything here is a pure function over a params dict; the activation function (l1, topk,
batchtopk, jumprelu, ...) is looked up in `activations` by `Spec.activation`.
Training runs in normalised space (each checkpoint scaled by `s_c = sqrt(D) / E||a_c||`);
`fold_scales` moves the scales into the weights so the exported crosscoder reads raw activations.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from crosscoder_jax.crosscoder import activations, matmul
from crosscoder_jax.crosscoder.spec import Spec

Params = dict[str, jax.Array]


def init_params(spec: Spec, key: jax.Array) -> Params:
    """The paper's init: W_dec ~ N(0, 1) with every row W_dec[i, c] rescaled to `dec_init_norm`,
    W_enc[c] = W_dec[:, c, :].T, zero biases, plus the activation function's own parameters."""
    C, D, F = spec.n_checkpoints, spec.d_model, spec.dict_size
    W_dec_FCD = jax.random.normal(key, (F, C, D), jnp.float32)
    W_dec_FCD = W_dec_FCD * (spec.dec_init_norm_resolved / jnp.linalg.norm(W_dec_FCD, axis=-1, keepdims=True))
    params = {
        "W_enc": jnp.transpose(W_dec_FCD, (1, 2, 0)),
        "b_enc": jnp.zeros((F,), jnp.float32),
        "W_dec": W_dec_FCD,
        "b_dec": jnp.zeros((C, D), jnp.float32),
    }
    params.update(activations.get(spec.activation).init_params(spec))
    return params


def _matmul(subscripts: str, x: jax.Array, y: jax.Array, spec: Spec) -> jax.Array:
    return matmul.matmul(subscripts, x, y, spec.matmul_dtype)


def encoder_pre(params: Params, x_BCD: jax.Array, spec: Spec) -> jax.Array:
    """Pre-activations `sum_c x_c @ W_enc[c] + b_enc`, float32 [B, F] (one [B, C*D] @ [C*D, F] matmul)."""
    C, D, F = params["W_enc"].shape
    return _matmul("bk,kf->bf", x_BCD.reshape(-1, C * D), params["W_enc"].reshape(C * D, F), spec) + params["b_enc"]


def decode(params: Params, f_BF: jax.Array, spec: Spec, bias: bool = True) -> jax.Array:
    """Reconstructions `xhat_c = f @ W_dec[:, c, :] + b_dec[c]`, float32 [B, C, D] (one matmul)."""
    F, C, D = params["W_dec"].shape
    xhat_BCD = _matmul("bf,fk->bk", f_BF, params["W_dec"].reshape(F, C * D), spec).reshape(-1, C, D)
    return xhat_BCD + params["b_dec"] if bias else xhat_BCD


# Folded (raw-space) params carry the normalised-space decoder-norm sums: the scores that top-k
# selection ranks are defined in normalised space, and folding does not scale them uniformly.
SCORE_NORMS = "decoder_norm_sum"


def decoder_norms(params: Params) -> jax.Array:
    """Per-latent, per-checkpoint decoder norms `||W_dec[i, c]||`, [F, C]."""
    return jnp.sqrt(jnp.sum(jnp.square(params["W_dec"].astype(jnp.float32)), axis=-1))


def score_norms(params: Params) -> jax.Array:
    """The weights of the top-k scores `relu(pre_i) * dn_i`, [F]: `sum_c ||W_dec[i, c]||` in the
    normalised space the crosscoder was trained in (stored in folded params, `fold_scales`)."""
    if SCORE_NORMS in params:
        return jnp.asarray(params[SCORE_NORMS], jnp.float32)
    return jnp.sum(decoder_norms(params), axis=-1)


def encode(params: Params, x_BCD: jax.Array, spec: Spec, act_state: Mapping[str, jax.Array]) -> jax.Array:
    """Inference-mode codes f [B, F] of one row each, independent of the other rows (batchtopk and
    jumprelu use their thresholds; batchtopk before it has one a per-row top-k). The same codes from
    normalised params on normalised inputs and from `fold_scales` params on raw inputs."""
    pre_BF = encoder_pre(params, x_BCD, spec)
    return activations.get(spec.activation).infer(pre_BF, params, act_state, spec, score_norms(params))


def reconstruct(params: Params, x_BCD: jax.Array, spec: Spec, act_state: Mapping[str, jax.Array]) -> jax.Array:
    """Inference-mode reconstruction xhat [B, C, D]."""
    return decode(params, encode(params, x_BCD, spec, act_state), spec)


def loss_fn(params: Params, act_state: Mapping[str, jax.Array], x_BCD: jax.Array, spec: Spec,
            step: jax.Array, dead_F: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Training loss on a normalised batch x [B, C, D].

    loss = mean_b sum_c ||xhat_c - x_c||^2 + the activation function's terms (L1 or L0 penalty,
    AuxK). Returns (loss, aux) with aux["terms"] (each loss term), aux["f_BF"], aux["xhat_BCD"], aux["fvu"],
    aux["fired_F"] (latents with a nonzero code in the batch), aux["l0"] (mean nonzero codes per
    token) and aux["act_update"] (what the activation function needs to update its state, e.g. the
    batchtopk threshold candidate). Dense autodiff reference; top-k training runs the same math
    through `sparse_step.value_and_grad`.
    """
    act = activations.get(spec.activation)
    pre_BF = encoder_pre(params, x_BCD, spec)
    dn_F = jnp.sum(decoder_norms(params), axis=-1)
    f_BF, act_update = act.train(pre_BF, params, act_state, spec, dn_F, step)
    xhat_BCD = decode(params, f_BF, spec)
    x32_BCD = x_BCD.astype(jnp.float32)
    terms = {"recon": jnp.mean(jnp.sum(jnp.square(xhat_BCD - x32_BCD), axis=(1, 2)))}
    ctx = activations.PenaltyContext(pre_BF=pre_BF, f_BF=f_BF, x_BCD=x32_BCD, xhat_BCD=xhat_BCD, dn_F=dn_F,
                                     dead_F=dead_F, step=step, params=params, spec=spec,
                                     decode=functools.partial(decode, params, spec=spec))
    terms.update(act.penalties(ctx))
    loss = sum(terms.values())
    nz_BF = lax.stop_gradient(f_BF) > 0
    return loss, {"terms": terms, "f_BF": f_BF, "xhat_BCD": xhat_BCD, "fvu": fvu(x_BCD, xhat_BCD), "act_update": act_update,
                  "fired_F": jnp.any(nz_BF, axis=0), "l0": jnp.mean(jnp.sum(nz_BF, axis=-1))}


def fvu(x_BCD: jax.Array, xhat_BCD: jax.Array) -> jax.Array:
    """Fraction of variance unexplained per checkpoint, [C]:
    `sum_b ||x_c - xhat_c||^2 / sum_b ||x_c - mean_b x_c||^2`."""
    x_BCD = x_BCD.astype(jnp.float32)
    err_C = jnp.sum(jnp.square(x_BCD - xhat_BCD), axis=(0, 2))
    var_C = jnp.sum(jnp.square(x_BCD - jnp.mean(x_BCD, axis=0, keepdims=True)), axis=(0, 2))
    return err_C / jnp.maximum(var_C, 1e-30)


def absorb_shift(params: Params, shift_CD: jax.Array) -> Params:
    """Params trained on shifted inputs x - shift [C, D] rewritten to read x itself: the same codes
    and reconstructions, `b_enc -= sum_c shift_c W_enc[c]`, `b_dec += shift` (float32)."""
    shift_CD = jnp.asarray(shift_CD, jnp.float32)
    out = dict(params)
    out["b_enc"] = params["b_enc"] - jnp.einsum("cd,cdf->f", shift_CD, params["W_enc"].astype(jnp.float32),
                                                precision=lax.Precision.HIGHEST)
    out["b_dec"] = params["b_dec"] + shift_CD
    return out


def fold_scales(params: Params, scales_C: jax.Array) -> Params:
    """Moves the input scaling into the weights: the result reads raw activations.
    `W_enc[c] *= s_c`, `W_dec[:, c] /= s_c`, `b_dec[c] /= s_c`, plus `decoder_norm_sum` [F], the
    normalised-space score weights, so that `encode` selects the same latents on raw inputs."""
    s_C = jnp.asarray(scales_C, jnp.float32)
    out = dict(params)
    out[SCORE_NORMS] = score_norms(params)
    out["W_enc"] = params["W_enc"] * s_C[:, None, None]
    out["W_dec"] = params["W_dec"] / s_C[None, :, None]
    out["b_dec"] = params["b_dec"] / s_C[:, None]
    return out


def unfold_scales(params: Params, scales_C: jax.Array) -> Params:
    """Inverse of `fold_scales`: back to the normalised space the crosscoder was trained in (where
    the score weights follow from W_dec again)."""
    s_C = jnp.asarray(scales_C, jnp.float32)
    out = {k: v for k, v in params.items() if k != SCORE_NORMS}
    out["W_enc"] = params["W_enc"] / s_C[:, None, None]
    out["W_dec"] = params["W_dec"] * s_C[None, :, None]
    out["b_dec"] = params["b_dec"] * s_C[:, None]
    return out
