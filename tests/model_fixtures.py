"""Tiny random transformers models of every supported family, for the parity and loading tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB = 97

# name -> (transformers config class name, model class name, config kwargs)
CONFIGS: dict[str, tuple[str, str, dict]] = {
    "gpt_neox_parallel": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, rotary_pct=0.25,
        use_parallel_residual=True)),
    "gpt_neox_sequential": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, rotary_pct=0.5,
        rotary_emb_base=500, layer_norm_eps=1e-6, use_parallel_residual=False, hidden_act="gelu_new")),
    "olmo_clip": ("OlmoConfig", "OlmoForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, clip_qkv=0.5)),
    "olmo_gqa_tied": ("OlmoConfig", "OlmoForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        tie_word_embeddings=True, rope_theta=1000.0)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)),
    "olmo2_gqa_linear": ("Olmo2Config", "Olmo2ForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, intermediate_size=48,
        tie_word_embeddings=True, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(hidden_size=32, n_layer=2, n_head=4)),
    "bloom_6heads_postln": ("BloomConfig", "BloomForCausalLM", dict(
        hidden_size=48, n_layer=2, n_head=6, apply_residual_connection_post_layernorm=True)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=4, n_positions=32)),
    "gpt2_relu_layerscale": ("GPT2Config", "GPT2LMHeadModel", dict(
        n_embd=32, n_layer=2, n_head=4, n_positions=32, n_inner=48, activation_function="relu",
        scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False)),
    "llama_gqa_linear": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "llama3_tied_headdim": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        intermediate_size=48, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        rope_theta=50000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
}


def make_model(name: str, seed: int = 0):
    """A transformers model for CONFIGS[name] with O(1) random weights (not the 0.02-std init, so that
    norms, biases and attention patterns all matter)."""
    import torch
    import transformers

    cfg_cls, model_cls, kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_cls)(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, **kwargs)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and pname.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return model


def save_model(model, directory: Path, **kwargs) -> Path:
    model.save_pretrained(str(directory), **kwargs)
    return directory


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(ids, dtype=torch.long)).logits.float().numpy()


def rel_err(ours, ref) -> float:
    """max |ours - ref| / max |ref|."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def word_tokenizer(words: list[str]):
    """A small whitespace word-level PreTrainedTokenizerFast (no hub access needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
