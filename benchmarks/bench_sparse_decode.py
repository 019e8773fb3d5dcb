"""The sparse top-k step against the dense autodiff step for topk / batchtopk, side by side.

  python benchmarks/bench_sparse_decode.py [--C 3 --D 512 --Fs 16384,65536 --batch 4096 --k 32 --steps 3]

Prints one table: step seconds and tokens/s of the jitted train step with the dense autodiff loss
(five [B, F] x [F, C*D]-sized matmuls) and with `sparse_decode=True` (`crosscoder/sparse_step.py`:
the encoder forward, then gathers and scatter-adds over the k*B kept entries), per activation and
dictionary size, and the speedup. AuxK is off (no latent goes dead) so the table isolates the
main path; bf16 operands. One variant at a
time is built, warmed up and timed for `steps` consecutive steps, then freed: with both resident
and stepped in turn, XLA's CPU runtime re-faults its large temporaries every step (system time
dominated and both variants ran ~2x slower at F = 65536). Medians are reported.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.common import shape_args  # noqa: E402
from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402


def make_step(activation: str, C: int, D: int, F: int, batch: int, k: int, sparse: bool, x_np: np.ndarray):
    c = get_config()
    c.dict_size, c.batch_size, c.steps, c.activation, c.k = F, batch, 1000, activation, k
    c.dead_tokens, c.sparse_decode = 2 ** 30, sparse
    mesh = sharding.make_mesh(-1, 1)
    _, key, _, _, init_fn, step_fn = build(c, C, D, np.ones(C), mesh)
    box = {"state": init_fn(key)}
    x = sharding.global_batch(x_np, mesh)

    def step() -> float:
        box["state"], m = step_fn(box["state"], x)
        return float(m["loss"])  # blocks

    step()  # compile
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    shape_args(ap, steps=3)
    ap.add_argument("--Fs", default="16384,65536")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--activations", default="batchtopk,topk")
    a = ap.parse_args()
    x_np = np.random.default_rng(0).normal(size=(a.batch, a.C, a.D)).astype(np.float32)
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; C={a.C} D={a.D} "
          f"batch={a.batch} k={a.k}; bf16 operands; AuxK off; median of {a.steps} consecutive steps per variant")
    print("| activation | F | dense step s | sparse step s | dense tokens/s | sparse tokens/s | sparse / dense speed |")
    print("|---|---|---|---|---|---|---|")
    for F in (int(f) for f in a.Fs.split(",")):
        for act in a.activations.split(","):
            times, losses = {}, {}
            for s in (False, True):
                fn = make_step(act, a.C, a.D, F, a.batch, a.k, s, x_np)
                times[s], losses[s] = [], []
                for _ in range(a.steps):
                    t = time.perf_counter()
                    losses[s].append(fn())
                    times[s].append(time.perf_counter() - t)
                del fn
                gc.collect()
            d, sp = (float(np.median(times[s])) for s in (False, True))
            print(f"| {act} | {F} | {d:.2f} | {sp:.2f} | {a.batch / d:.0f} | {a.batch / sp:.0f} | {d / sp:.2f} |",
                  flush=True)
            print(f"#   losses dense {losses[False]} sparse {losses[True]}", flush=True)


if __name__ == "__main__":
    main()
