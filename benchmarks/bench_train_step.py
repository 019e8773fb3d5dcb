"""Training-step throughput per activation function, and utilisation of the measured matmul peak.

  python benchmarks/bench_train_step.py [--C 3 --D 512 --F 16384 --batch 4096 --steps 3]
  python benchmarks/bench_train_step.py --Cs 3,8,16,32 --activations batchtopk   # step vs snapshots

Prints one table: tokens/s of the jitted, donated train step for each activation function, its
achieved FLOP/s counting the dense crosscoder work (10 * C * D * F per token: encoder and decoder
forward, the decoder's two gradients and the encoder's weight gradient; the input needs none), and
that as a fraction of this machine's float32 and bf16->f32 matmul peaks, both measured in the same
run with the same JAX build. With `--Cs`, one row per number of snapshots C: the work is linear in C,
so tokens x C / s should stay flat as C grows.
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
from benchmarks.common import matmul_peak, shape_args  # noqa: E402
from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402


def bench(activation: str, C: int, D: int, F: int, batch: int, steps: int, matmul_dtype: str) -> dict:
    c = get_config()
    c.dict_size, c.batch_size, c.steps, c.activation, c.k = F, batch, 1000, activation, 32
    c.matmul_dtype, c.dead_tokens = matmul_dtype, batch * 2  # latents go dead quickly: AuxK is exercised
    mesh = sharding.make_mesh(-1, 1)
    _, key, _, _, init_fn, step_fn = build(c, C, D, np.ones(C), mesh)
    state = init_fn(key)
    x = sharding.global_batch(np.random.default_rng(0).normal(size=(batch, C, D)).astype(np.float32), mesh)
    t = time.perf_counter()
    state, m = step_fn(state, x)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = step_fn(state, x)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    return {"activation": activation, "compile_s": compile_s, "step_s": step_s, "tokens_per_s": batch / step_s,
            "flops": 10 * C * D * F * batch / step_s, "dead_frac": float(m["dead_frac"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    shape_args(ap, steps=3)
    ap.add_argument("--activations", default="l1,topk,batchtopk,jumprelu")
    ap.add_argument("--matmul_dtype", default="float32")
    ap.add_argument("--Cs", default="", help="comma-separated numbers of snapshots to sweep (overrides --C)")
    a = ap.parse_args()
    Cs = [int(x) for x in a.Cs.split(",")] if a.Cs else [a.C]
    peak32 = matmul_peak(dtype=jnp.float32)
    peak16 = matmul_peak(dtype=jnp.bfloat16)
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; C={Cs} D={a.D} "
          f"F={a.F} batch={a.batch} matmul_dtype={a.matmul_dtype}")
    print(f"# matmul peak: float32 {peak32 / 1e9:.1f} GFLOP/s, bf16->f32 {peak16 / 1e9:.1f} GFLOP/s")
    print("| activation | C | step s | tokens/s | tokens x C / s | GFLOP/s | of f32 peak | of bf16 peak | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for act in a.activations.split(","):
        for C in Cs:
            r = bench(act, C, a.D, a.F, a.batch, a.steps, a.matmul_dtype)
            print(f"| {act} | {C} | {r['step_s']:.2f} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] * C:.0f} | "
                  f"{r['flops'] / 1e9:.1f} | {r['flops'] / peak32:.2f} | {r['flops'] / peak16:.2f} | "
                  f"{r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
