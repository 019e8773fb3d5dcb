"""Sharded train step on 1, 2, 4, 8 (fake) devices: data-parallel Nx1 and latent-parallel 1xN meshes,
plus weak scaling of the latent axis (F grows with N on 1xN meshes).

  python benchmarks/bench_scaling.py [--C 3 --D 256 --F 8192 --batch 2048 --steps 3 --weak_F 4096]

Re-executes itself with XLA_FLAGS=--xla_force_host_platform_device_count=8 when fewer than 8 devices
are present. On a CPU the fake devices share the same cores (one intra-op thread pool), so this
measures the cost of sharding (partitioned programs, collectives, per-device dispatch), not a
speedup: on shared cores the ideal strong-scaling step time is the 1-device time (same total work),
and the ideal weak-scaling time is N x the 1-device time (N x the work). The "overhead" columns are
measured time / that ideal. AuxK is off (dead_tokens = 2**30), so batchtopk times its selection only.

All step functions are built and warmed up first, then timed in rotation (one step each per
round, `steps` rounds, median), so load from other users hits every mesh alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks import fake_devices  # noqa: E402

N_FAKE = 8
fake_devices.ensure(N_FAKE)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402


def variant(activation, C, D, F, batch, k, data, model, x_np):
    c = get_config()
    c.dict_size, c.batch_size, c.steps, c.activation, c.k = F, batch, 1000, activation, k
    c.dead_tokens, c.mesh.data, c.mesh.latent = 2 ** 30, data, model
    mesh = sharding.make_mesh(data, 1, model, devices=jax.devices()[: data * model])
    _, key, _, _, init_fn, step_fn = build(c, C, D, np.ones(C), mesh)
    box = {"state": init_fn(key)}
    x = sharding.global_batch(x_np, mesh)

    def step():
        box["state"], m = step_fn(box["state"], x)
        jax.block_until_ready(m)

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--C", type=int, default=3)
    ap.add_argument("--D", type=int, default=256)
    ap.add_argument("--F", type=int, default=8192, help="strong scaling: fixed F")
    ap.add_argument("--weak_F", type=int, default=4096, help="weak scaling: F per device on 1xN meshes")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--ns", default="1,2,4,8")
    ap.add_argument("--activations", default="l1,batchtopk")
    a = ap.parse_args()
    ns = [int(n) for n in a.ns.split(",")]
    x_np = np.random.default_rng(0).normal(size=(a.batch, a.C, a.D)).astype(np.float32)
    configs = []  # (activation, kind, N, data, model, F)
    for act in a.activations.split(","):
        for n in ns:
            meshes = [(n, 1, "data Nx1"), (1, n, "latent 1xN")] if n > 1 else [(1, 1, "1 device")]
            for d, m, kind in meshes:
                configs.append((act, kind, n, d, m, a.F))
            configs.append((act, "weak latent 1xN", n, 1, n, a.weak_F * n))
    steps, compile_s = {}, {}
    for cfg in configs:
        act, kind, n, d, m, F = cfg
        steps[cfg] = variant(act, a.C, a.D, F, a.batch, a.k, d, m, x_np)
        t = time.perf_counter()
        steps[cfg]()
        compile_s[cfg] = time.perf_counter() - t
    times = {cfg: [] for cfg in configs}
    for _ in range(a.steps):
        for cfg, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[cfg].append(time.perf_counter() - t)
    med = {cfg: float(np.median(v)) for cfg, v in times.items()}

    print(f"# {os.cpu_count()}-core {jax.devices()[0].platform} with {jax.device_count()} fake devices sharing "
          f"the cores, jax {jax.__version__}; C={a.C} D={a.D} batch={a.batch} k={a.k}; strong scaling F={a.F}, "
          f"weak scaling F={a.weak_F} x N; median of {a.steps} rotated steps; AuxK off")
    print("| activation | scaling | mesh (data x model) | F | step s | tokens/s | overhead vs ideal on shared cores "
          "| first call s |")
    print("|---|---|---|---|---|---|---|---|")
    for act in a.activations.split(","):
        base = med[(act, "1 device", 1, 1, 1, a.F)]
        wbase = med[(act, "weak latent 1xN", 1, 1, 1, a.weak_F)]
        for cfg in configs:
            c_act, kind, n, d, m, F = cfg
            if c_act != act:
                continue
            ideal = wbase * n if kind.startswith("weak") else base
            scaling = "weak" if kind.startswith("weak") else "strong"
            print(f"| {act} | {scaling} | {d}x{m} | {F} | {med[cfg]:.3f} | {a.batch / med[cfg]:.0f} | "
                  f"{med[cfg] / ideal:.2f} | {compile_s[cfg]:.1f} |")


if __name__ == "__main__":
    main()
