"""Transformer primitives shared by the LM families: norms, linear maps, activations, attention.

Weights keep the Hugging Face layout: a `nn.Linear` weight is `W_OI` ([out, in]) and is applied as
`x @ W_OI.T`; GPT-2's `Conv1D` weight is `W_IO` ([in, out]). Norms and the attention softmax run
in float32 whatever the parameter dtype; their outputs are cast back to the input dtype.
Letters in names: B batch, T query positions, S key positions, D model width, H query heads,
G key/value heads, K head width, V vocabulary.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # additive mask value: finite, so a fully padded row gives a uniform softmax, not NaN


def linear(x_BTI: jax.Array, W_OI: jax.Array, b_O: jax.Array | None = None) -> jax.Array:
    """`nn.Linear`: x @ W.T + b, W in [out, in] layout."""
    y = jnp.einsum("...i,oi->...o", x_BTI, W_OI.astype(x_BTI.dtype))
    return y if b_O is None else y + b_O.astype(y.dtype)


def conv1d(x_BTI: jax.Array, W_IO: jax.Array, b_O: jax.Array | None = None) -> jax.Array:
    """GPT-2 `Conv1D`: x @ W + b, W in [in, out] layout."""
    y = jnp.einsum("...i,io->...o", x_BTI, W_IO.astype(x_BTI.dtype))
    return y if b_O is None else y + b_O.astype(y.dtype)


def layer_norm(x_BTD: jax.Array, scale_D: jax.Array | None, bias_D: jax.Array | None, eps: float) -> jax.Array:
    """LayerNorm over the last axis in float32; `scale_D`/`bias_D` None for OLMo's non-parametric norm."""
    x = x_BTD.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    if scale_D is not None:
        y = y * scale_D.astype(jnp.float32)
    if bias_D is not None:
        y = y + bias_D.astype(jnp.float32)
    return y.astype(x_BTD.dtype)


def rms_norm(x_BTD: jax.Array, scale_D: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis in float32 (Llama, OLMo-2)."""
    x = x_BTD.astype(jnp.float32)
    y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + eps)
    return (y * scale_D.astype(jnp.float32)).astype(x_BTD.dtype)


def _gelu_exact(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def _bloom_gelu(x: jax.Array) -> jax.Array:
    return x * 0.5 * (1.0 + jnp.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": _gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "bloom_gelu": _bloom_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function named by a Hugging Face `hidden_act`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def positions(mask_BT: jax.Array) -> jax.Array:
    """Position ids from the attention mask (cumsum - 1, clipped at 0): correct for left and right padding."""
    return jnp.maximum(jnp.cumsum(mask_BT.astype(jnp.int32), axis=-1) - 1, 0)


def attention(q_BTHK: jax.Array, k_BSGK: jax.Array, v_BSGK: jax.Array, mask_BS: jax.Array, scale: float,
              bias_BHTS: jax.Array | None = None) -> jax.Array:
    """Causal softmax attention with key padding; grouped-query when G < H (H = G * R).

    Scores and softmax in float32; `bias_BHTS` (ALiBi) is added to the scaled scores. Returns o_BTHK
    in the dtype of `v`.
    """
    B, T, H, K = q_BTHK.shape
    G = k_BSGK.shape[2]
    S = k_BSGK.shape[1]
    q_BTGRK = q_BTHK.reshape(B, T, G, H // G, K)
    scores = jnp.einsum("btgrk,bsgk->bgrts", q_BTGRK, k_BSGK, preferred_element_type=jnp.float32) * scale
    if bias_BHTS is not None:
        scores = scores + bias_BHTS.astype(jnp.float32).reshape(B, G, H // G, T, S)
    causal_TS = jnp.arange(S)[None, :] <= jnp.arange(T)[:, None] + (S - T)
    valid = causal_TS[None, None, None] & (mask_BS[:, None, None, None, :] > 0)
    scores = jnp.where(valid, scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BSGK.dtype)
    o_BTGRK = jnp.einsum("bgrts,bsgk->btgrk", probs, v_BSGK)
    return o_BTGRK.reshape(B, T, H, K)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
