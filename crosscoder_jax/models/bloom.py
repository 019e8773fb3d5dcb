"""BLOOM: ALiBi position bias, LayerNorm on the embeddings, fused per-head qkv, tied unembedding.

Mirrors transformers' `BloomForCausalLM` (pretraining_tp slicing is numerically the plain linear map).
ALiBi adds slope_h * key_position to the scores, with key positions from the attention mask.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crosscoder_jax.models import layers

MODEL_TYPE = "bloom"
BASE_PREFIX = "transformer."


@dataclasses.dataclass(frozen=True)
class Config:
    """Static BLOOM hyperparameters (the MLP width is 4 * d_model)."""
    n_layers: int
    d_model: int
    n_heads: int
    vocab_size: int
    layer_norm_eps: float = 1e-5
    apply_residual_connection_post_layernorm: bool = False
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 3

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def config_from_hf(hf: dict[str, Any]) -> Config:
    """Config from a config.json dict (accepts BLOOM's n_embed/n_layer/n_head and the standard names)."""
    return Config(
        n_layers=int(hf.get("n_layer", hf.get("num_hidden_layers", 2))),
        d_model=int(hf.get("n_embed") or hf.get("hidden_size", 64)),
        n_heads=int(hf.get("n_head", hf.get("num_attention_heads", 8))),
        vocab_size=int(hf.get("vocab_size", 250880)),
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        apply_residual_connection_post_layernorm=bool(hf.get("apply_residual_connection_post_layernorm", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        bos_token_id=hf.get("bos_token_id", 1), eos_token_id=hf.get("eos_token_id", 2),
        pad_token_id=hf.get("pad_token_id", 3))


def config_to_hf(cfg: Config) -> dict[str, Any]:
    """A config.json dict that transformers' BloomConfig reads back to the same model."""
    return {"architectures": ["BloomForCausalLM"], "model_type": MODEL_TYPE, "n_layer": cfg.n_layers,
            "hidden_size": cfg.d_model, "n_head": cfg.n_heads, "vocab_size": cfg.vocab_size,
            "layer_norm_epsilon": cfg.layer_norm_eps,
            "apply_residual_connection_post_layernorm": cfg.apply_residual_connection_post_layernorm,
            "tie_word_embeddings": cfg.tie_word_embeddings, "initializer_range": cfg.initializer_range,
            "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id}


def tensor_specs(cfg: Config):
    """(global, per-layer) specs: our key -> (HF names, canonical first; HF shape). `{i}` = layer index."""
    D, V = cfg.d_model, cfg.vocab_size
    g = {
        "embed": (("transformer.word_embeddings.weight",), (V, D)),
        "ln_emb_scale": (("transformer.word_embeddings_layernorm.weight",), (D,)),
        "ln_emb_bias": (("transformer.word_embeddings_layernorm.bias",), (D,)),
        "ln_f_scale": (("transformer.ln_f.weight",), (D,)),
        "ln_f_bias": (("transformer.ln_f.bias",), (D,)),
    }
    if not cfg.tie_word_embeddings:
        g["unembed"] = (("lm_head.weight",), (V, D))
    p = "transformer.h.{i}."
    lyr = {
        "ln1_scale": ((p + "input_layernorm.weight",), (D,)),
        "ln1_bias": ((p + "input_layernorm.bias",), (D,)),
        "ln2_scale": ((p + "post_attention_layernorm.weight",), (D,)),
        "ln2_bias": ((p + "post_attention_layernorm.bias",), (D,)),
        "qkv_w": ((p + "self_attention.query_key_value.weight",), (3 * D, D)),
        "qkv_bias": ((p + "self_attention.query_key_value.bias",), (3 * D,)),
        "o_w": ((p + "self_attention.dense.weight",), (D, D)),
        "o_bias": ((p + "self_attention.dense.bias",), (D,)),
        "up_w": ((p + "mlp.dense_h_to_4h.weight",), (4 * D, D)),
        "up_bias": ((p + "mlp.dense_h_to_4h.bias",), (4 * D,)),
        "down_w": ((p + "mlp.dense_4h_to_h.weight",), (D, 4 * D)),
        "down_bias": ((p + "mlp.dense_4h_to_h.bias",), (D,)),
    }
    return g, lyr


def alibi_slopes(n_heads: int) -> np.ndarray:
    """ALiBi slopes [H] (transformers' `_get_alibi_slopes`, including non-power-of-2 head counts)."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = np.float32(2 ** (-(2 ** -(math.log2(closest) - 3))))
    slopes = base ** np.arange(1, 1 + closest, dtype=np.float32)
    if closest != n_heads:
        extra_base = np.float32(2 ** (-(2 ** -(math.log2(2 * closest) - 3))))
        n_rest = min(closest, n_heads - closest)
        slopes = np.concatenate([slopes, extra_base ** np.arange(1, 1 + 2 * n_rest, 2, dtype=np.float32)])
    return slopes.astype(np.float32)


def embed(params: dict, cfg: Config, ids_BT: jax.Array, pos_BT: jax.Array) -> jax.Array:
    """Token embedding followed by the embedding LayerNorm: x_BTD."""
    x = jnp.take(params["embed"], ids_BT, axis=0)
    return layers.layer_norm(x, params["ln_emb_scale"], params["ln_emb_bias"], cfg.layer_norm_eps)


def context(cfg: Config, pos_BT: jax.Array, mask_BT: jax.Array) -> dict:
    """ALiBi bias [B, H, 1, S] = slope_h * key position (a per-query constant shift is irrelevant)."""
    key_pos_BS = (pos_BT * mask_BT).astype(jnp.float32)
    alibi = jnp.asarray(alibi_slopes(cfg.n_heads))[None, :, None, None] * key_pos_BS[:, None, None, :]
    return {"alibi": alibi}


def block(p: dict, cfg: Config, x_BTD: jax.Array, ctx: dict) -> jax.Array:
    """One BLOOM layer; `p` holds this layer's weights (no L axis)."""
    B, T, D = x_BTD.shape
    H, K, eps = cfg.n_heads, cfg.head_dim, cfg.layer_norm_eps
    h = layers.layer_norm(x_BTD, p["ln1_scale"], p["ln1_bias"], eps)
    residual = h if cfg.apply_residual_connection_post_layernorm else x_BTD
    qkv = layers.linear(h, p["qkv_w"], p["qkv_bias"]).reshape(B, T, H, 3, K)
    bias_BHTS = jnp.broadcast_to(ctx["alibi"], (B, H, T, T))
    o_BTHK = layers.attention(qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :], ctx["mask"],
                              layers.default_scale(K), bias_BHTS)
    x_BTD = residual + layers.linear(o_BTHK.reshape(B, T, D), p["o_w"], p["o_bias"])
    h = layers.layer_norm(x_BTD, p["ln2_scale"], p["ln2_bias"], eps)
    residual = h if cfg.apply_residual_connection_post_layernorm else x_BTD
    mlp = layers.linear(layers.activation("bloom_gelu")(layers.linear(h, p["up_w"], p["up_bias"])),
                        p["down_w"], p["down_bias"])
    return residual + mlp


def final(params: dict, cfg: Config, x_BTD: jax.Array) -> jax.Array:
    """Final LayerNorm and unembedding: logits_BTV in float32."""
    h = layers.layer_norm(x_BTD, params["ln_f_scale"], params["ln_f_bias"], cfg.layer_norm_eps)
    W_VD = params["embed"] if cfg.tie_word_embeddings else params["unembed"]
    return jnp.einsum("btd,vd->btv", h, W_VD.astype(h.dtype), preferred_element_type=jnp.float32)
