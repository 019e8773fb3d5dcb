"""OLMo (e.g. allenai/OLMo-1B-0724-hf, transformers `OlmoForCausalLM`): non-parametric LayerNorm,
SwiGLU, rotary, optional `clip_qkv`. The math lives in `llama.py` (variant "olmo").
"""

from __future__ import annotations

from typing import Any

from crosscoder_jax.models import llama
from crosscoder_jax.models.llama import Config, block, config_to_hf, context, embed, final, tensor_specs

MODEL_TYPE = "olmo"
BASE_PREFIX = "model."


def config_from_hf(hf: dict[str, Any]) -> Config:
    """Config from a config.json dict (transformers' Olmo config defaults where fields are missing)."""
    return llama.config_from_hf(hf, variant=MODEL_TYPE)


__all__ = ["Config", "block", "config_from_hf", "config_to_hf", "context", "embed", "final", "tensor_specs"]
