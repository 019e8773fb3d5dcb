"""GPT-NeoX (Pythia): partial rotary, parallel or sequential residual, biased LayerNorm and linears.

Mirrors transformers' `GPTNeoXForCausalLM`. The fused `query_key_value` weight [3D, D] is kept as
stored; its output splits per head into (q, k, v) of width K each, as transformers views it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from crosscoder_jax.models import layers, rope

MODEL_TYPE = "gpt_neox"
BASE_PREFIX = "gpt_neox."


@dataclasses.dataclass(frozen=True)
class Config:
    """Static GPT-NeoX hyperparameters (names follow transformers' GPTNeoXConfig where they differ)."""
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    vocab_size: int
    rope: rope.Rope
    rotary_pct: float = 0.25
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    hidden_act: str = "gelu"
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    pad_token_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def config_from_hf(hf: dict[str, Any]) -> Config:
    """Config from a config.json dict (transformers 4 or 5 style); missing fields take GPTNeoXConfig
    defaults, except intermediate_size which defaults to 4 * hidden_size."""
    d = int(hf.get("hidden_size", 6144))
    h = int(hf.get("num_attention_heads", 64))
    r = rope.rope_from_hf(hf, d // h, default_partial=0.25)
    params = hf.get("rope_parameters") or {}
    pct = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)))
    return Config(
        n_layers=int(hf.get("num_hidden_layers", 44)), d_model=d, n_heads=h,
        d_mlp=int(hf.get("intermediate_size") or 4 * d), vocab_size=int(hf.get("vocab_size", 50432)),
        rope=r, rotary_pct=float(pct), layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        use_parallel_residual=bool(hf.get("use_parallel_residual", True)),
        hidden_act=hf.get("hidden_act", "gelu"), attention_bias=bool(hf.get("attention_bias", True)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        bos_token_id=hf.get("bos_token_id", 0), eos_token_id=hf.get("eos_token_id", 2),
        pad_token_id=hf.get("pad_token_id"))


def config_to_hf(cfg: Config) -> dict[str, Any]:
    """A config.json dict that transformers' GPTNeoXConfig reads back to the same model."""
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": MODEL_TYPE,
        "num_hidden_layers": cfg.n_layers, "hidden_size": cfg.d_model, "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.d_mlp, "vocab_size": cfg.vocab_size, "hidden_act": cfg.hidden_act,
        "rotary_pct": cfg.rotary_pct, "rotary_emb_base": cfg.rope.theta,
        "rope_parameters": cfg.rope.to_hf(cfg.rotary_pct),
        "layer_norm_eps": cfg.layer_norm_eps, "use_parallel_residual": cfg.use_parallel_residual,
        "attention_bias": cfg.attention_bias, "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings, "initializer_range": cfg.initializer_range,
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
        "attention_dropout": 0.0, "hidden_dropout": 0.0, "use_cache": True,
    }


def tensor_specs(cfg: Config):
    """(global, per-layer) specs: our key -> (HF names, first canonical; HF shape). `{i}` = layer index."""
    D, F, V = cfg.d_model, cfg.d_mlp, cfg.vocab_size
    g = {
        "embed": (("gpt_neox.embed_in.weight",), (V, D)),
        "ln_f_scale": (("gpt_neox.final_layer_norm.weight",), (D,)),
        "ln_f_bias": (("gpt_neox.final_layer_norm.bias",), (D,)),
    }
    if not cfg.tie_word_embeddings:
        g["unembed"] = (("embed_out.weight", "lm_head.weight"), (V, D))
    p = "gpt_neox.layers.{i}."
    lyr = {
        "ln1_scale": ((p + "input_layernorm.weight",), (D,)),
        "ln1_bias": ((p + "input_layernorm.bias",), (D,)),
        "ln2_scale": ((p + "post_attention_layernorm.weight",), (D,)),
        "ln2_bias": ((p + "post_attention_layernorm.bias",), (D,)),
        "qkv_w": ((p + "attention.query_key_value.weight",), (3 * D, D)),
        "o_w": ((p + "attention.dense.weight",), (D, D)),
        "up_w": ((p + "mlp.dense_h_to_4h.weight",), (F, D)),
        "up_bias": ((p + "mlp.dense_h_to_4h.bias",), (F,)),
        "down_w": ((p + "mlp.dense_4h_to_h.weight",), (D, F)),
        "down_bias": ((p + "mlp.dense_4h_to_h.bias",), (D,)),
    }
    if cfg.attention_bias:
        lyr["qkv_bias"] = ((p + "attention.query_key_value.bias",), (3 * D,))
        lyr["o_bias"] = ((p + "attention.dense.bias",), (D,))
    return g, lyr


embed = rope.token_embed  # no position embedding: rotary is applied inside attention
context = rope.context


def _attention(p: dict, cfg: Config, h_BTD: jax.Array, ctx: dict) -> jax.Array:
    B, T, _ = h_BTD.shape
    H, K = cfg.n_heads, cfg.head_dim
    qkv = layers.linear(h_BTD, p["qkv_w"], p.get("qkv_bias")).reshape(B, T, H, 3 * K)
    q, k, v = qkv[..., :K], qkv[..., K:2 * K], qkv[..., 2 * K:]
    q, k = rope.apply(q, ctx["cos"], ctx["sin"]), rope.apply(k, ctx["cos"], ctx["sin"])
    o_BTHK = layers.attention(q, k, v, ctx["mask"], layers.default_scale(K))
    return layers.linear(o_BTHK.reshape(B, T, H * K), p["o_w"], p.get("o_bias"))


def _mlp(p: dict, cfg: Config, h_BTD: jax.Array) -> jax.Array:
    act = layers.activation(cfg.hidden_act)
    return layers.linear(act(layers.linear(h_BTD, p["up_w"], p["up_bias"])), p["down_w"], p["down_bias"])


def block(p: dict, cfg: Config, x_BTD: jax.Array, ctx: dict) -> jax.Array:
    """One GPT-NeoX layer; `p` holds this layer's weights (no L axis)."""
    eps = cfg.layer_norm_eps
    attn = _attention(p, cfg, layers.layer_norm(x_BTD, p["ln1_scale"], p["ln1_bias"], eps), ctx)
    if cfg.use_parallel_residual:
        mlp = _mlp(p, cfg, layers.layer_norm(x_BTD, p["ln2_scale"], p["ln2_bias"], eps))
        return x_BTD + attn + mlp
    x_BTD = x_BTD + attn
    return x_BTD + _mlp(p, cfg, layers.layer_norm(x_BTD, p["ln2_scale"], p["ln2_bias"], eps))


def final(params: dict, cfg: Config, x_BTD: jax.Array) -> jax.Array:
    """Final LayerNorm and unembedding: logits_BTV in float32."""
    h = layers.layer_norm(x_BTD, params["ln_f_scale"], params["ln_f_bias"], cfg.layer_norm_eps)
    W_VD = params["embed"] if cfg.tie_word_embeddings else params["unembed"]
    return jnp.einsum("btd,vd->btv", h, W_VD.astype(h.dtype), preferred_element_type=jnp.float32)
