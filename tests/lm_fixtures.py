"""Tiny random GPT-NeoX checkpoints (made with transformers, saved with safetensors) that share the
synthetic language's tokenizer: stand-ins for a pretraining series in harvest/evaluate/attribution tests."""

from pathlib import Path

import torch
import transformers

from crosscoder_jax.synthetic import vocab


def tiny_gpt_neox(directory: Path, seed: int, hidden: int = 32, layers: int = 3, scale_out: float = 1.0,
                  nan_embedding: bool = False) -> Path:
    """A random GPT-NeoX with the grammar tokenizer. `scale_out` multiplies the unembedding (a large
    value makes a "broken" checkpoint whose loss is worse than uniform guessing); `nan_embedding`
    puts NaN into one token's embedding."""
    torch.manual_seed(seed)
    cfg = transformers.GPTNeoXConfig(vocab_size=len(vocab.VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=4, intermediate_size=4 * hidden, rotary_pct=0.25,
                                     max_position_embeddings=128, bos_token_id=vocab.BOS_ID,
                                     eos_token_id=vocab.VOCAB.index("<eos>"), pad_token_id=0)
    model = transformers.GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale_out)
        if nan_embedding:
            model.gpt_neox.embed_in.weight[vocab.VOCAB.index("the")] = float("nan")
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    vocab.save_tokenizer(directory)
    return directory
