"""Training on live activations against training on a store, side by side in one run.

  python benchmarks/bench_live.py --checkpoints DIR1,DIR2,... --layer 1 --context_len 32   # e.g. the demo's series
  python benchmarks/bench_live.py --random pythia-160m --C 8 --layer 6                     # random weights, real shape

Harvests a store from the checkpoints (timed), then runs the training path of `launch.train`
(`training.train.train`, the reader included) for `--steps` steps on the store and on
`activations="live"` with the same fields (its shuffling window on the device, then on the host),
and prints steady tokens/s of each (from metrics.jsonl, after the first logging interval), and the
share of the live step spent producing activations (1 - live / store). `--random` builds C GPT-NeoX checkpoints of a named shape with random weights
(transformers + torch, the test-time reference) over the synthetic grammar's vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from launch._malloc import reexec_with_tunables  # noqa: E402

reexec_with_tunables()

from configs.crosscoder import get_config  # noqa: E402
from configs.harvest import get_config as harvest_config  # noqa: E402
from crosscoder_jax.data.harvest import harvest  # noqa: E402
from crosscoder_jax.runtime.matmul_choice import cpu_model  # noqa: E402
from crosscoder_jax.training.train import train  # noqa: E402

SHAPES = {"pythia-160m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
          "pythia-70m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048)}


def random_series(shape: str, C: int, root: Path) -> list[str]:
    import torch
    import transformers

    from crosscoder_jax.synthetic import vocab

    dirs = []
    for c in range(C):
        torch.manual_seed(c)
        cfg = transformers.GPTNeoXConfig(vocab_size=len(vocab.VOCAB), rotary_pct=0.25,
                                         max_position_embeddings=2048, **SHAPES[shape])
        model = transformers.GPTNeoXForCausalLM(cfg)
        d = root / f"rand{c}"
        model.save_pretrained(d, safe_serialization=True)
        vocab.hf_tokenizer().save_pretrained(d)
        dirs.append(str(d))
    return dirs


def steady_rate(workdir: Path) -> float:
    recs = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in recs if "tokens_per_s" in r][1:]
    return sum(rates) / len(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", default="")
    ap.add_argument("--random", default="", choices=("", *SHAPES))
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--context_len", type=int, default=32)
    ap.add_argument("--n_contexts", type=int, default=2048)
    ap.add_argument("--F", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpts = a.checkpoints.split(",") if a.checkpoints else random_series(a.random, a.C, root)
        h = harvest_config()
        h.model, h.checkpoints, h.layer, h.out = "bench", ",".join(ckpts), a.layer, str(root / "store")
        h.context_len, h.n_contexts, h.chunk_contexts, h.batch_size = a.context_len, a.n_contexts, 32, 32
        h.dtype, h.progress = "bfloat16", False
        t = time.perf_counter()
        harvest(h)
        t_harvest = time.perf_counter() - t
        rates = {}
        for source in ("store", "live", "live_host"):
            c = get_config()
            c.activations = str(root / "store") if source == "store" else "live"
            for key in h:
                if key in c.live:
                    c.live[key] = h[key]
            c.live.buffer = "host" if source == "live_host" else "device"
            c.workdir, c.dict_size, c.k, c.batch_size, c.steps = str(root / source), a.F, a.k, a.batch, a.steps
            c.log_every, c.save_every, c.progress = 5, 10**9, False
            train(c)
            rates[source] = steady_rate(root / source)
    model_name = cpu_model()
    n_tok = a.n_contexts * (a.context_len - 1)
    print(f"# {model_name}, {os.cpu_count()} cores; {a.random or 'checkpoints ' + str(len(ckpts))} C={len(ckpts)}, "
          f"layer {a.layer}, contexts of {a.context_len}; batchtopk F={a.F} k={a.k} batch={a.batch}, {a.steps} steps")
    print("| source | tokens/s | note |")
    print("|---|---|---|")
    print(f"| harvest into a bf16 store | {n_tok / t_harvest:,.0f} | {n_tok:,} tokens in {t_harvest:.1f} s |")
    print(f"| train on the store | {rates['store']:,.0f} | reader + step |")
    for source, where in (("live", "device"), ("live_host", "host")):
        print(f"| train on live activations, window on the {where} | {rates[source]:,.0f} | forward passes + step; "
              f"producing activations {1 - rates[source] / rates['store']:.0%} of the step |")


if __name__ == "__main__":
    main()
