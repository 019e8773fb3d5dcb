"""GPT-2: learned absolute positions, Conv1D weights ([in, out]), pre-LayerNorm blocks, tied unembedding.

Mirrors transformers' `GPT2LMHeadModel`, including `scale_attn_weights` and
`scale_attn_by_inverse_layer_idx` (Stanford CRFM "mistral" GPT-2 checkpoints).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from crosscoder_jax.models import layers

MODEL_TYPE = "gpt2"
BASE_PREFIX = "transformer."


@dataclasses.dataclass(frozen=True)
class Config:
    """Static GPT-2 hyperparameters."""
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    vocab_size: int
    n_positions: int = 1024
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def config_from_hf(hf: dict[str, Any]) -> Config:
    """Config from a config.json dict (GPT-2 names n_embd/n_layer/n_head/n_inner or standard ones)."""
    d = int(hf.get("n_embd", hf.get("hidden_size", 768)))
    return Config(
        n_layers=int(hf.get("n_layer", hf.get("num_hidden_layers", 12))), d_model=d,
        n_heads=int(hf.get("n_head", hf.get("num_attention_heads", 12))),
        d_mlp=int(hf.get("n_inner") or 4 * d), vocab_size=int(hf.get("vocab_size", 50257)),
        n_positions=int(hf.get("n_positions", hf.get("max_position_embeddings", 1024))),
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        hidden_act=hf.get("activation_function", "gelu_new"),
        scale_attn_weights=bool(hf.get("scale_attn_weights", True)),
        scale_attn_by_inverse_layer_idx=bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        bos_token_id=hf.get("bos_token_id", 50256), eos_token_id=hf.get("eos_token_id", 50256))


def config_to_hf(cfg: Config) -> dict[str, Any]:
    """A config.json dict that transformers' GPT2Config reads back to the same model."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": MODEL_TYPE, "n_layer": cfg.n_layers,
            "n_embd": cfg.d_model, "n_head": cfg.n_heads, "n_inner": cfg.d_mlp, "vocab_size": cfg.vocab_size,
            "n_positions": cfg.n_positions, "layer_norm_epsilon": cfg.layer_norm_eps,
            "activation_function": cfg.hidden_act, "scale_attn_weights": cfg.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": cfg.scale_attn_by_inverse_layer_idx,
            "tie_word_embeddings": cfg.tie_word_embeddings, "initializer_range": cfg.initializer_range,
            "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}


def tensor_specs(cfg: Config):
    """(global, per-layer) specs: our key -> (HF names, canonical first; HF shape). `{i}` = layer index.
    Conv1D weights are [in, out]."""
    D, F, V = cfg.d_model, cfg.d_mlp, cfg.vocab_size
    g = {
        "embed": (("transformer.wte.weight",), (V, D)),
        "pos_embed": (("transformer.wpe.weight",), (cfg.n_positions, D)),
        "ln_f_scale": (("transformer.ln_f.weight",), (D,)),
        "ln_f_bias": (("transformer.ln_f.bias",), (D,)),
    }
    if not cfg.tie_word_embeddings:
        g["unembed"] = (("lm_head.weight",), (V, D))
    p = "transformer.h.{i}."
    lyr = {
        "ln1_scale": ((p + "ln_1.weight",), (D,)),
        "ln1_bias": ((p + "ln_1.bias",), (D,)),
        "ln2_scale": ((p + "ln_2.weight",), (D,)),
        "ln2_bias": ((p + "ln_2.bias",), (D,)),
        "qkv_w": ((p + "attn.c_attn.weight",), (D, 3 * D)),
        "qkv_bias": ((p + "attn.c_attn.bias",), (3 * D,)),
        "o_w": ((p + "attn.c_proj.weight",), (D, D)),
        "o_bias": ((p + "attn.c_proj.bias",), (D,)),
        "up_w": ((p + "mlp.c_fc.weight",), (D, F)),
        "up_bias": ((p + "mlp.c_fc.bias",), (F,)),
        "down_w": ((p + "mlp.c_proj.weight",), (F, D)),
        "down_bias": ((p + "mlp.c_proj.bias",), (D,)),
    }
    return g, lyr


def embed(params: dict, cfg: Config, ids_BT: jax.Array, pos_BT: jax.Array) -> jax.Array:
    """Token plus learned position embedding: x_BTD."""
    return jnp.take(params["embed"], ids_BT, axis=0) + jnp.take(params["pos_embed"], pos_BT, axis=0)


def context(cfg: Config, pos_BT: jax.Array, mask_BT: jax.Array) -> dict:
    """No per-forward constants beyond the mask."""
    return {}


def block(p: dict, cfg: Config, x_BTD: jax.Array, ctx: dict) -> jax.Array:
    """One GPT-2 layer; `p` holds this layer's weights (no L axis); ctx["layer"] is its index."""
    B, T, D = x_BTD.shape
    H, K, eps = cfg.n_heads, cfg.head_dim, cfg.layer_norm_eps
    h = layers.layer_norm(x_BTD, p["ln1_scale"], p["ln1_bias"], eps)
    qkv = layers.conv1d(h, p["qkv_w"], p["qkv_bias"])
    q, k, v = (a.reshape(B, T, H, K) for a in jnp.split(qkv, 3, axis=-1))
    scale = 1.0 / math.sqrt(K) if cfg.scale_attn_weights else 1.0
    if cfg.scale_attn_by_inverse_layer_idx:
        scale = scale / (ctx["layer"] + 1).astype(jnp.float32)
    o_BTHK = layers.attention(q, k, v, ctx["mask"], scale)
    x_BTD = x_BTD + layers.conv1d(o_BTHK.reshape(B, T, D), p["o_w"], p["o_bias"])
    h = layers.layer_norm(x_BTD, p["ln2_scale"], p["ln2_bias"], eps)
    act = layers.activation(cfg.hidden_act)
    return x_BTD + layers.conv1d(act(layers.conv1d(h, p["up_w"], p["up_bias"])), p["down_w"], p["down_bias"])


def final(params: dict, cfg: Config, x_BTD: jax.Array) -> jax.Array:
    """Final LayerNorm and unembedding: logits_BTV in float32."""
    h = layers.layer_norm(x_BTD, params["ln_f_scale"], params["ln_f_bias"], cfg.layer_norm_eps)
    W_VD = params["embed"] if cfg.tie_word_embeddings else params["unembed"]
    return jnp.einsum("btd,vd->btv", h, W_VD.astype(h.dtype), preferred_element_type=jnp.float32)
