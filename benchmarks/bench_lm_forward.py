"""LM forward throughput: our jitted JAX forward against transformers' PyTorch forward, same weights.

  python benchmarks/bench_lm_forward.py [--batch 8 --seq 256 --repeats 3]

A Pythia-160M-shaped GPT-NeoX (12 layers, d 768, 12 heads, vocab 50304, rotary_pct 0.25, parallel
residual) with random weights, float32, batch x seq tokens. Prints one table: best-of-`repeats`
seconds per forward, tokens/s, achieved GFLOP/s (2 * matmul parameters * tokens + attention), its
fraction of this machine's float32 matmul peak measured in the same run, and ours/theirs; plus the
max relative logit difference between the two (a parity check on the benchmarked batch).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.common import matmul_peak, timeit  # noqa: E402
from crosscoder_jax import models  # noqa: E402

PYTHIA_160M = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   vocab_size=50304, rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=2048)


def forward_flops(cfg, B: int, T: int) -> float:
    """Matmul FLOPs of one forward: 2 * (per-layer weights + unembedding) per token + attention scores/mix."""
    D, F, L, V = cfg.d_model, cfg.d_mlp, cfg.n_layers, cfg.vocab_size
    per_token = 2 * (L * (4 * D * D + 2 * D * F) + D * V)
    attention = 2 * 2 * L * T * T * D * B  # q.k and probs.v over the full (masked) square
    return per_token * B * T + attention


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_160M)).eval()
    cfg = models.config_for("gpt_neox", **PYTHIA_160M)
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    lm = models.LM(params=models.params_from_state_dict("gpt_neox", cfg, sd), family="gpt_neox", config=cfg)
    del sd
    B, T = args.batch, args.seq
    ids = np.random.RandomState(0).randint(0, cfg.vocab_size, (B, T))
    ids_t, ids_j = torch.as_tensor(ids), jnp.asarray(ids)

    fwd = jax.jit(models.forward)
    t = time.perf_counter()
    jax.block_until_ready(fwd(lm, ids_j))
    compile_s = time.perf_counter() - t
    ours_s = timeit(lambda: fwd(lm, ids_j), repeats=args.repeats, warmup=0)

    def torch_fwd():
        with torch.inference_mode():
            return hf(ids_t).logits

    theirs_s = timeit(torch_fwd, repeats=args.repeats, warmup=1)
    ours, theirs = np.asarray(fwd(lm, ids_j)), torch_fwd().numpy()
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    peak = matmul_peak(2048)
    flops = forward_flops(cfg, B, T)

    print(f"GPT-NeoX Pythia-160M shape, float32, batch {B} x {T} tokens, {jax.devices()[0].platform} "
          f"({os.cpu_count()} cores), jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); float32 matmul peak {peak / 1e9:.0f} GFLOP/s; "
          f"our compile {compile_s:.1f} s; max rel logit diff {rel:.1e}")
    print("| forward | s / batch | tokens/s | GFLOP/s | of f32 peak |")
    print("|---|---|---|---|---|")
    for name, s in (("transformers (PyTorch eager)", theirs_s), ("crosscoder_jax (jax.jit)", ours_s)):
        print(f"| {name} | {s:.3f} | {B * T / s:.0f} | {flops / s / 1e9:.0f} | {flops / s / peak:.2f} |")
    print(f"| ratio ours/theirs (tokens/s) | | {theirs_s / ours_s:.2f} | | |")


if __name__ == "__main__":
    main()
