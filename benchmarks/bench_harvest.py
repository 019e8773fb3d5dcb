"""Harvest throughput: our jitted run-to-layer against transformers' PyTorch forward to the same layer.

  python benchmarks/bench_harvest.py [--batch 8 --seq 256 --layer 6 --repeats 3]

A Pythia-160M-shaped GPT-NeoX (12 layers, d 768) with random weights made by transformers, saved
with `save_pretrained` and loaded back with `models.load` (the harvest's loader), float32. Ours is
the harvest's own code path: `harvest.make_residual_fn(mesh, layer)` on a host batch, copied back
to a numpy array as `harvest` does. Theirs, on the same ids: (a) `model.gpt_neox` with its layer list
truncated to blocks 0..layer and the final LayerNorm replaced by identity (so its last hidden state
is the residual after block `layer`), (b) the full model with `output_hidden_states=True`, taking
`hidden_states[layer + 1]` (the common way). `torch.inference_mode`, threads = core count.
All variants are warmed up, then timed in rotation (`repeats` rounds, best). Prints tokens/s,
ours / theirs, and the max relative difference of the residuals (parity on the benchmarked batch).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from crosscoder_jax import models  # noqa: E402
from crosscoder_jax.data import harvest  # noqa: E402
from crosscoder_jax.runtime.devices import data_mesh  # noqa: E402

PYTHIA_160M = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   vocab_size=50304, rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=2048)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_160M)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        lm = models.load(tmp)
    L = a.layer
    trunc = copy.deepcopy(hf.gpt_neox)
    trunc.layers = trunc.layers[: L + 1]
    trunc.final_layer_norm = torch.nn.Identity()
    ids = np.random.RandomState(0).randint(0, PYTHIA_160M["vocab_size"], (a.batch, a.seq)).astype(np.int32)
    ids_t = torch.as_tensor(ids, dtype=torch.long)

    residual = harvest.make_residual_fn(data_mesh(), L)

    def ours():
        return np.asarray(residual(lm, ids), np.float32)

    def theirs_trunc():
        with torch.inference_mode():
            return trunc(input_ids=ids_t).last_hidden_state.numpy()

    def theirs_full():
        with torch.inference_mode():
            return hf.gpt_neox(input_ids=ids_t, output_hidden_states=True).hidden_states[L + 1].numpy()

    variants = {"crosscoder_jax (harvest.make_residual_fn, jax.jit)": ours,
                f"transformers, truncated to blocks 0..{L}": theirs_trunc,
                "transformers, full base model, output_hidden_states": theirs_full}
    outs = {n: fn() for n, fn in variants.items()}  # warm-up (our compile); parity
    ref = outs[f"transformers, truncated to blocks 0..{L}"]
    rel = {n: float(np.abs(o - ref).max() / np.abs(ref).max()) for n, o in outs.items()}
    best = {n: float("inf") for n in variants}
    for _ in range(a.repeats):
        for n, fn in variants.items():
            t = time.perf_counter()
            fn()
            best[n] = min(best[n], time.perf_counter() - t)
    tokens = a.batch * a.seq
    base = best[f"transformers, truncated to blocks 0..{L}"]
    print(f"# GPT-NeoX Pythia-160M shape, random weights saved by transformers and loaded by models.load, float32, "
          f"{a.batch} x {a.seq} tokens, residual after block {L}; {os.cpu_count()}-core "
          f"{jax.devices()[0].platform}, jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); best of {a.repeats} rotated rounds")
    print("| harvest forward | s / batch | tokens/s | / transformers truncated | max rel diff vs truncated |")
    print("|---|---|---|---|---|")
    for n in variants:
        print(f"| {n} | {best[n]:.3f} | {tokens / best[n]:.0f} | {base / best[n]:.2f} | {rel[n]:.1e} |")


if __name__ == "__main__":
    main()
