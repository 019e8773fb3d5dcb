"""OLMo-2 (transformers `Olmo2ForCausalLM`): RMSNorm after each sublayer (before the residual
add), RMSNorm on q and k, SwiGLU, rotary. The math lives in `llama.py` (variant "olmo2").
"""

from __future__ import annotations

from typing import Any

from crosscoder_jax.models import llama
from crosscoder_jax.models.llama import Config, block, config_to_hf, context, embed, final, tensor_specs

MODEL_TYPE = "olmo2"
BASE_PREFIX = "model."


def config_from_hf(hf: dict[str, Any]) -> Config:
    """Config from a config.json dict (transformers' Olmo2 config defaults where fields are missing)."""
    return llama.config_from_hf(hf, variant=MODEL_TYPE)


__all__ = ["Config", "block", "config_from_hf", "config_to_hf", "context", "embed", "final", "tensor_specs"]
