"""Rotary position embeddings as transformers computes them (modeling_rope_utils.py).

Supported `rope_type`s: "default", "linear" (positions divided by `factor`) and "llama3" (frequency-
dependent scaling). Both config styles are read: transformers >= 5 `rope_parameters` and the older
`rope_theta` / `rope_scaling` (and GPT-NeoX's `rotary_emb_base` / `rotary_pct`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class Rope:
    """Static rotary settings. `rotary_dim` = int(head_dim * partial_rotary_factor) leading head dims rotate."""
    rotary_dim: int
    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def to_hf(self, partial_rotary_factor: float | None = None) -> dict[str, Any]:
        """The transformers-5 `rope_parameters` dict."""
        d: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.theta}
        if partial_rotary_factor is not None:
            d["partial_rotary_factor"] = partial_rotary_factor
        if self.rope_type in ("linear", "llama3"):
            d["factor"] = self.factor
        if self.rope_type == "llama3":
            d.update(low_freq_factor=self.low_freq_factor, high_freq_factor=self.high_freq_factor,
                     original_max_position_embeddings=self.original_max_position_embeddings)
        return d


def rope_from_hf(hf: dict[str, Any], head_dim: int, default_theta: float = 10000.0,
                 default_partial: float = 1.0) -> Rope:
    """Parses rotary settings from a config.json dict (either style)."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling") or {}
    for k, v in legacy.items():
        params.setdefault(k, v)
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params["type"]
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", default_theta)))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", default_partial)))
    rope_type = params.get("rope_type", "default") or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported; supported: {list(SUPPORTED_ROPE_TYPES)}")
    return Rope(
        rotary_dim=int(head_dim * partial), theta=float(theta), rope_type=rope_type,
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(params.get("original_max_position_embeddings", 8192)))


def inv_freq(rope: Rope) -> np.ndarray:
    """Inverse frequencies [rotary_dim // 2], float32, as transformers' rope init functions."""
    dim = rope.rotary_dim
    exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    f = (np.float32(1.0) / (np.float32(rope.theta) ** exps)).astype(np.float32)
    if rope.rope_type == "linear":
        f = f / np.float32(rope.factor)
    elif rope.rope_type == "llama3":
        old = rope.original_max_position_embeddings
        low_wavelen = old / rope.low_freq_factor
        high_wavelen = old / rope.high_freq_factor
        wavelen = 2 * math.pi / f
        f_llama = np.where(wavelen > low_wavelen, f / rope.factor, f)
        smooth = (old / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * f_llama / rope.factor + smooth * f_llama
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        f = np.where(medium, smoothed, f_llama)
    return f.astype(np.float32)


def cos_sin(rope: Rope, pos_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, T, rotary_dim] in float32 for integer positions."""
    freqs = pos_BT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq(rope))
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply(x_BTHK: jax.Array, cos_BTR: jax.Array, sin_BTR: jax.Array) -> jax.Array:
    """Rotates the first R = rotary_dim dims of every head (rotate-half convention); the rest pass."""
    R = cos_BTR.shape[-1]
    x = x_BTHK.astype(jnp.float32)
    x_rot, x_pass = x[..., :R], x[..., R:]
    x1, x2 = x_rot[..., : R // 2], x_rot[..., R // 2:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = cos_BTR[:, :, None, :], sin_BTR[:, :, None, :]
    out = jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)
    return out.astype(x_BTHK.dtype)


def token_embed(params: dict, cfg, ids_BT: jax.Array, pos_BT: jax.Array) -> jax.Array:
    """Token embedding x_BTD of a rotary family (positions enter inside attention, not here)."""
    return jnp.take(params["embed"], ids_BT, axis=0)


def context(cfg, pos_BT: jax.Array, mask_BT: jax.Array) -> dict:
    """Per-forward constants of a rotary family shared by all blocks: cos/sin [B, T, R] (cfg.rope)."""
    cos, sin = cos_sin(cfg.rope, pos_BT)
    return {"cos": cos, "sin": sin}
