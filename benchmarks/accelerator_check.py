"""One table of the figures that matter on a GPU or TPU, in a few minutes of device time.

  python benchmarks/accelerator_check.py [--quick] [--out accelerator_check.md]

Run by `benchmarks/accelerator_check.sh` (which installs the matching jax build first). Rows:
  - the bf16 (and float32) matmul peak of this device, measured with the same jax build;
  - the jitted train step that `launch.train` runs, bf16 operands, paper sizes: batchtopk (the sparse
    top-k step) and l1 (dense) on the Pythia-1B triplet (C 3, D 2048, F 16384, batch 4096), batchtopk
    at F 65536, and Pythia-160M x 32 snapshots (C 32, D 768, F 24576, batch 2048);
  - with several devices, the triplet step on a data-parallel and a latent-parallel mesh over all;
  - attribution: IG-10 cost over one forward+backward from the layer (Pythia-160M shape).
Each row gives tokens/s, achieved TFLOP/s (the step's matmul FLOPs: 10 B C D F for the dense step,
2 B C D F + 8 B k C D for the sparse one), the share of the measured bf16 peak, and the device's peak
memory (`memory_stats()`; n/a on CPU). Works on CPU too (slowly; `--quick` shrinks every size).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.common import compile_and_time, matmul_peak  # noqa: E402
from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.crosscoder import sparse_step  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402

K = 32


def _peak_memory() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def step_row(activation: str, C: int, D: int, F: int, batch: int, mesh_shape=(1, 1, 1), steps: int = 3) -> dict:
    """tokens/s and matmul FLOP/s of the jitted train step (after one compiling step)."""
    c = get_config()
    c.dict_size, c.batch_size, c.steps, c.activation, c.k = F, batch, 1000, activation, K
    c.matmul_dtype, c.dead_tokens = "bfloat16", batch * 2
    c.mesh.data, c.mesh.snapshot, c.mesh.latent = mesh_shape
    n = int(np.prod(mesh_shape))
    mesh = sharding.make_mesh(*mesh_shape, devices=jax.devices()[:n])
    spec, key, _, _, init_fn, step_fn = build(c, C, D, np.ones(C), mesh)
    box = {"state": init_fn(key)}
    x = sharding.global_batch(np.random.default_rng(0).normal(size=(batch, C, D)).astype(np.float32), mesh)

    def step():
        box["state"], m = step_fn(box["state"], x)
        return m["loss"]

    compile_s, times = compile_and_time(step, steps)
    step_s = float(np.median(times))
    sparse = sparse_step.applies(spec)
    flops = 2 * batch * C * D * F + 8 * batch * K * C * D if sparse else 10 * batch * C * D * F
    del box
    gc.collect()
    return {"tokens_per_s": batch / step_s, "flops": flops / step_s, "step_s": step_s, "compile_s": compile_s,
            "path": "sparse top-k" if sparse else "dense", "devices": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test, e.g. on CPU)")
    ap.add_argument("--out", default="", help="also write the table to this markdown file")
    a = ap.parse_args()
    s = 8 if a.quick else 1  # shrink factor
    n_dev = jax.device_count()
    peak_bf16 = matmul_peak(4096 // s, jnp.bfloat16)
    peak_f32 = matmul_peak(4096 // s, jnp.float32)
    rows = []
    configs = [("batchtopk", "Pythia-1B triplet", 3, 2048, 16384, 4096),
               ("l1", "Pythia-1B triplet", 3, 2048, 16384, 4096),
               ("batchtopk", "Pythia-1B triplet, F 65536", 3, 2048, 65536, 4096),
               ("batchtopk", "Pythia-160M x 32 snapshots", 32, 768, 24576, 2048)]
    for act, name, C, D, F, B in configs:
        rows.append((f"{act}, {name}", step_row(act, C, D // s, F // s, B // s)))
        print(rows[-1], flush=True)
    if n_dev > 1:
        for mesh_shape in ((n_dev, 1, 1), (1, 1, n_dev)):
            label = "x".join(map(str, mesh_shape))
            rows.append((f"batchtopk, Pythia-1B triplet, mesh {label}", step_row("batchtopk", 3, 2048 // s, 16384 // s,
                                                                                4096 // s, mesh_shape)))
            print(rows[-1], flush=True)
    peak_mem = _peak_memory()

    attribution_line = ""
    try:
        from benchmarks import bench_attribution
        ns = argparse.Namespace(N=16, T=32, layer=6, F=16384 // s, ig_steps=10, repeats=3)
        parts = bench_attribution.part1(ns)
        base = parts[0][1]
        attribution_line = "; ".join(f"{k}: {v * 1e3:.1f} ms ({v / base:.1f}x)" for k, v in parts)
    except Exception as e:  # the step table is the point; say why this part is missing
        attribution_line = f"not measured ({type(e).__name__}: {e})"

    dev = jax.devices()[0]
    lines = [f"# {dev.platform} {dev.device_kind} x{n_dev}, jax {jax.__version__}{' (quick sizes)' if a.quick else ''}",
             f"# matmul peak: bf16 {peak_bf16 / 1e12:.1f} TFLOP/s, float32 {peak_f32 / 1e12:.1f} TFLOP/s; "
             f"device peak memory over the whole run: {'n/a' if peak_mem is None else f'{peak_mem / 1e9:.1f} GB'}",
             "| step (bf16 operands) | path | devices | tokens/s | TFLOP/s | share of bf16 peak | step s | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['path']} | {r['devices']} | {r['tokens_per_s']:,.0f} | {r['flops'] / 1e12:.2f} | "
                     f"{r['flops'] / r['devices'] / peak_bf16:.0%} | {r['step_s']:.3f} | {r['compile_s']:.1f} |")
    lines.append(f"attribution (Pythia-160M shape, 16 x 32 tokens): {attribution_line}")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
