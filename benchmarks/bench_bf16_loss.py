"""Do bf16 matmul operands (float32 accumulation) hurt the loss? Side-by-side loss curves.

  python benchmarks/bench_bf16_loss.py [--activation batchtopk --steps 1500]

Trains the same crosscoder twice on the same planted-feature store (C = 3, D = 64, 100 features),
once with float32 and once with bfloat16 matmul operands, and prints the loss and FVU at the same
steps, plus planted-feature recovery of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.data import planted_store  # noqa: E402
from crosscoder_jax.synthetic import planted  # noqa: E402
from crosscoder_jax.crosscoder.export import load_crosscoder  # noqa: E402
from crosscoder_jax.training.train import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--activation", default="batchtopk")
    ap.add_argument("--steps", type=int, default=1500)
    a = ap.parse_args()
    feats = planted.make_features(n_features=100, n_checkpoints=3, d_model=64, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        planted_store.write_store(Path(tmp) / "s", feats, n_tokens=2**16, chunk_size=4096)
        logs, scores = {}, {}
        for dtype in ("float32", "bfloat16"):
            c = get_config()
            c.activations, c.workdir = f"{tmp}/s", f"{tmp}/{dtype}"
            c.dict_size, c.k, c.batch_size, c.steps, c.lr = 256, 6, 512, a.steps, 3e-3
            c.activation, c.matmul_dtype, c.dead_tokens = a.activation, dtype, 20_000
            c.threshold_start_step, c.log_every, c.save_every, c.progress = a.steps // 4, a.steps // 6, 10**9, False
            train(c)
            logs[dtype] = [json.loads(l) for l in (Path(c.workdir) / "metrics.jsonl").read_text().splitlines()
                           if '"loss"' in l]
            cc = load_crosscoder(Path(c.workdir) / "crosscoder.safetensors")
            scores[dtype] = planted.score(np.asarray(cc.folded()["W_dec"]), np.asarray(cc.params["W_dec"]), feats)
    print(f"# planted store C=3 D=64 F=256, {a.activation}, {a.steps} steps")
    print("| step | loss f32 | loss bf16 | rel. diff | mean FVU f32 | mean FVU bf16 |")
    print("|---|---|---|---|---|---|")
    for r32, r16 in zip(logs["float32"], logs["bfloat16"]):
        print(f"| {r32['step']} | {r32['loss']:.4f} | {r16['loss']:.4f} | {abs(r16['loss'] - r32['loss']) / r32['loss']:.3f} | "
              f"{np.mean(r32['fvu']):.4f} | {np.mean(r16['fvu']):.4f} |")
    for dtype, s in scores.items():
        print(f"# {dtype}: planted features recovered {s.recovered:.2f}, on/off pattern right {s.pattern_correct:.2f}")


if __name__ == "__main__":
    main()
