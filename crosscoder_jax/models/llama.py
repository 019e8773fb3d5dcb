"""Llama: RMSNorm, SwiGLU, grouped-query attention, rotary (default / linear / llama3 scaling).

The OLMo (`olmo.py`) and OLMo-2 (`olmo2.py`) families share these weights' names and most of the
math; they reuse this module with `Config.variant`:

- "llama": pre-norm RMSNorm blocks;
- "olmo":  pre-norm non-parametric LayerNorm (eps 1e-5), optional `clip_qkv` clamp of q, k, v;
- "olmo2": no pre-norm; RMSNorm on each sublayer's output before the residual add
  (post_attention_layernorm, post_feedforward_layernorm) and RMSNorm on q and k (over all heads).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from crosscoder_jax.models import layers, rope

MODEL_TYPE = "llama"
BASE_PREFIX = "model."
_ARCH = {"llama": "LlamaForCausalLM", "olmo": "OlmoForCausalLM", "olmo2": "Olmo2ForCausalLM"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Static hyperparameters of the Llama-like families (H query heads, G key/value heads)."""
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_mlp: int
    vocab_size: int
    rope: rope.Rope
    variant: str = "llama"
    norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    clip_qkv: float | None = None
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None


def config_from_hf(hf: dict[str, Any], variant: str = "llama") -> Config:
    """Config from a config.json dict; missing fields take the transformers config defaults."""
    d = int(hf.get("hidden_size", 4096))
    h = int(hf.get("num_attention_heads", 32))
    k = int(hf.get("head_dim") or d // h)
    eps_default = {"llama": 1e-6, "olmo": 1e-5, "olmo2": 1e-5}[variant]
    return Config(
        n_layers=int(hf.get("num_hidden_layers", 32)), d_model=d, n_heads=h,
        n_kv_heads=int(hf.get("num_key_value_heads") or h), head_dim=k,
        d_mlp=int(hf.get("intermediate_size", 11008)), vocab_size=int(hf.get("vocab_size", 32000)),
        rope=rope.rope_from_hf(hf, k), variant=variant,
        norm_eps=1e-5 if variant == "olmo" else float(hf.get("rms_norm_eps", eps_default)),
        hidden_act=hf.get("hidden_act", "silu"), attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        clip_qkv=None if hf.get("clip_qkv") is None else float(hf["clip_qkv"]),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"), pad_token_id=hf.get("pad_token_id"))


def config_to_hf(cfg: Config) -> dict[str, Any]:
    """A config.json dict that transformers reads back to the same model."""
    out = {
        "architectures": [_ARCH[cfg.variant]], "model_type": cfg.variant,
        "num_hidden_layers": cfg.n_layers, "hidden_size": cfg.d_model, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "intermediate_size": cfg.d_mlp,
        "vocab_size": cfg.vocab_size, "hidden_act": cfg.hidden_act, "rope_parameters": cfg.rope.to_hf(),
        "rope_theta": cfg.rope.theta, "attention_bias": cfg.attention_bias,
        "tie_word_embeddings": cfg.tie_word_embeddings, "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range, "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id, "attention_dropout": 0.0,
    }
    if cfg.variant == "llama":
        out.update(rms_norm_eps=cfg.norm_eps, mlp_bias=cfg.mlp_bias)
    elif cfg.variant == "olmo":
        out["clip_qkv"] = cfg.clip_qkv
    else:
        out["rms_norm_eps"] = cfg.norm_eps
    return out


def tensor_specs(cfg: Config):
    """(global, per-layer) specs: our key -> (HF names, canonical first; HF shape). `{i}` = layer index."""
    D, F, V, H, G, K = cfg.d_model, cfg.d_mlp, cfg.vocab_size, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    g = {"embed": (("model.embed_tokens.weight",), (V, D))}
    if cfg.variant != "olmo":
        g["norm_f_scale"] = (("model.norm.weight",), (D,))
    if not cfg.tie_word_embeddings:
        g["unembed"] = (("lm_head.weight",), (V, D))
    p = "model.layers.{i}."
    lyr = {
        "q_w": ((p + "self_attn.q_proj.weight",), (H * K, D)),
        "k_w": ((p + "self_attn.k_proj.weight",), (G * K, D)),
        "v_w": ((p + "self_attn.v_proj.weight",), (G * K, D)),
        "o_w": ((p + "self_attn.o_proj.weight",), (D, H * K)),
        "gate_w": ((p + "mlp.gate_proj.weight",), (F, D)),
        "up_w": ((p + "mlp.up_proj.weight",), (F, D)),
        "down_w": ((p + "mlp.down_proj.weight",), (D, F)),
    }
    if cfg.attention_bias:
        for name, n in (("q", H * K), ("k", G * K), ("v", G * K), ("o", D)):
            lyr[f"{name}_bias"] = ((p + f"self_attn.{name}_proj.bias",), (n,))
    if cfg.mlp_bias:
        for name, n in (("gate", F), ("up", F), ("down", D)):
            lyr[f"{name}_bias"] = ((p + f"mlp.{name}_proj.bias",), (n,))
    if cfg.variant == "llama":
        lyr["ln1_scale"] = ((p + "input_layernorm.weight",), (D,))
        lyr["ln2_scale"] = ((p + "post_attention_layernorm.weight",), (D,))
    elif cfg.variant == "olmo2":
        lyr["post_attn_scale"] = ((p + "post_attention_layernorm.weight",), (D,))
        lyr["post_mlp_scale"] = ((p + "post_feedforward_layernorm.weight",), (D,))
        lyr["q_norm_scale"] = ((p + "self_attn.q_norm.weight",), (H * K,))
        lyr["k_norm_scale"] = ((p + "self_attn.k_norm.weight",), (G * K,))
    return g, lyr


embed = rope.token_embed  # no position embedding: rotary is applied inside attention
context = rope.context


def _pre_norm(cfg: Config, x_BTD: jax.Array, scale_D: jax.Array | None) -> jax.Array:
    if cfg.variant == "olmo":
        return layers.layer_norm(x_BTD, None, None, cfg.norm_eps)
    if cfg.variant == "olmo2":
        return x_BTD
    return layers.rms_norm(x_BTD, scale_D, cfg.norm_eps)


def _attention(p: dict, cfg: Config, h_BTD: jax.Array, ctx: dict) -> jax.Array:
    B, T, _ = h_BTD.shape
    H, G, K = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q = layers.linear(h_BTD, p["q_w"], p.get("q_bias"))
    k = layers.linear(h_BTD, p["k_w"], p.get("k_bias"))
    v = layers.linear(h_BTD, p["v_w"], p.get("v_bias"))
    if cfg.clip_qkv is not None:
        q, k, v = (jnp.clip(a, -cfg.clip_qkv, cfg.clip_qkv) for a in (q, k, v))
    if cfg.variant == "olmo2":
        q = layers.rms_norm(q, p["q_norm_scale"], cfg.norm_eps)
        k = layers.rms_norm(k, p["k_norm_scale"], cfg.norm_eps)
    q_BTHK = rope.apply(q.reshape(B, T, H, K), ctx["cos"], ctx["sin"])
    k_BTGK = rope.apply(k.reshape(B, T, G, K), ctx["cos"], ctx["sin"])
    o_BTHK = layers.attention(q_BTHK, k_BTGK, v.reshape(B, T, G, K), ctx["mask"], layers.default_scale(K))
    return layers.linear(o_BTHK.reshape(B, T, H * K), p["o_w"], p.get("o_bias"))


def _mlp(p: dict, cfg: Config, h_BTD: jax.Array) -> jax.Array:
    act = layers.activation(cfg.hidden_act)
    gate = act(layers.linear(h_BTD, p["gate_w"], p.get("gate_bias")))
    return layers.linear(gate * layers.linear(h_BTD, p["up_w"], p.get("up_bias")), p["down_w"], p.get("down_bias"))


def block(p: dict, cfg: Config, x_BTD: jax.Array, ctx: dict) -> jax.Array:
    """One decoder layer; `p` holds this layer's weights (no L axis)."""
    attn = _attention(p, cfg, _pre_norm(cfg, x_BTD, p.get("ln1_scale")), ctx)
    if cfg.variant == "olmo2":
        attn = layers.rms_norm(attn, p["post_attn_scale"], cfg.norm_eps)
    x_BTD = x_BTD + attn
    mlp = _mlp(p, cfg, _pre_norm(cfg, x_BTD, p.get("ln2_scale")))
    if cfg.variant == "olmo2":
        mlp = layers.rms_norm(mlp, p["post_mlp_scale"], cfg.norm_eps)
    return x_BTD + mlp


def final(params: dict, cfg: Config, x_BTD: jax.Array) -> jax.Array:
    """Final norm and unembedding: logits_BTV in float32."""
    if cfg.variant == "olmo":
        h = layers.layer_norm(x_BTD, None, None, cfg.norm_eps)
    else:
        h = layers.rms_norm(x_BTD, params["norm_f_scale"], cfg.norm_eps)
    W_VD = params["embed"] if cfg.tie_word_embeddings else params["unembed"]
    return jnp.einsum("btd,vd->btv", h, W_VD.astype(h.dtype), preferred_element_type=jnp.float32)
