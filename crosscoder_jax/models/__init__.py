"""Language-model families in JAX, loaded from Hugging Face checkpoints (offline).

Public API (stable; other modules and users' scripts rely on it):

- `LM`: pytree (params leaves; `family`, `config` static). `config.n_layers`, `.d_model`, `.vocab_size`.
- `FAMILIES`: registry keyed by HF `model_type` ("gpt_neox", "olmo", "olmo2", "bloom", "gpt2", "llama").
- `load(source, revision=None, dtype=jnp.float32) -> LM`; `load_tokenizer(source, revision=None)`;
  `load_config(source, revision=None)` (the Config alone, no weights read).
- `forward(lm, input_ids_BT, attention_mask_BT=None) -> logits_BTV` (float32).
- `residual_at(lm, input_ids_BT, attention_mask_BT, layer) -> resid_BTD` (output of block `layer`).
- `logits_from(lm, resid_BTD, attention_mask_BT, layer) -> logits_BTV` (blocks layer+1.. onwards);
  `logits_at_from(..., position_B) -> logits_BV` unembeds one position per row only.
- `init_params(family, config, rng, dtype=jnp.float32) -> LM`; `config_for(family, **hf_fields)`.
- `save_pretrained(lm, directory, tokenizer=None)`: config.json + model.safetensors in HF layout.

`forward`, `residual_at` and `logits_from` are jittable (`jax.jit(f, static_argnames="layer")`);
positions come from the attention mask, so left- and right-padded batches are both exact.
"""

from crosscoder_jax.models.core import (FAMILIES, LM, CheckpointError, config_for, family_module, forward,
                                        init_params, logits_at_from, logits_from, params_from_state_dict, residual_at,
                                        state_dict_from_params)
from crosscoder_jax.models.hf import load, load_config, load_tokenizer, resolve, save_pretrained

__all__ = ["FAMILIES", "LM", "CheckpointError", "config_for", "family_module", "forward", "init_params",
           "load", "load_config", "load_tokenizer", "logits_at_from", "logits_from", "params_from_state_dict", "residual_at", "resolve",
           "save_pretrained", "state_dict_from_params"]
