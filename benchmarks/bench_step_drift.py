"""Whether the jitted train step itself slows down over a run, and where its time goes.

  .venv/bin/python benchmarks/bench_step_drift.py --rows /tmp/bench_vs_peers/train.npy --steps 1000
  .venv/bin/python benchmarks/bench_step_drift.py --rows ... --steps 200 --trace   # + a per-fusion trace
  .venv/bin/python benchmarks/bench_step_drift.py --rows ... --steps 300 --dec_init_norm 0.1   # another decoder init
  .venv/bin/python benchmarks/bench_step_drift.py --rows ... --steps 200 --against /tmp/old   # A/B in one process

Trains the step `launch.train` runs (`training.train.build`, C 1, topk by default, `configs/crosscoder.py`
defaults otherwise) on real training rows (a [N, D] .npy, e.g. the one `bench_vs_peers.py` writes),
cycling through the first `--batches` batches of them, with the host-memory keeper as the train loop
runs it, but without the store reader, logging or checkpoints. Prints, per 100-step window, the
median and the mean step time (a mean well above the median: a few slow steps, such as the
keeper's releases, whose count is printed at the end) and tokens/s. With `--trace`, five more
steps under `jax.profiler` and the total time per XLA operation (summed over threads: parallel
work counts once per thread), largest first. With `--against DIR` (another checkout of this
repository, e.g. a `git worktree` of an older commit) its step is built in the same process and the
two take turns step by step (ABBA order), so that both see the same machine: on a shared 2-core VM
whose speed moved by 15% between back-to-back runs, separate runs could not tell a 5% change.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from launch._malloc import reexec_with_tunables  # noqa: E402

reexec_with_tunables()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.runtime import host_memory  # noqa: E402
from crosscoder_jax.runtime.matmul_choice import cpu_model  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402


def per_op_ms(trace_dir: str, steps: int) -> list[tuple[float, int, str]]:
    """(ms per step, calls per step, name) of every complete event of a perfetto trace, largest first."""
    path = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e["dur"]
            count[e["name"]] += 1
    return [(us / steps / 1e3, count[n] // steps, n) for n, us in total.most_common()]


def load_build(checkout: str):
    """`training.train.build` of another checkout's package, imported beside this one under the name
    `crosscoder_jax_against` (a copy with its imports renamed)."""
    dst = Path(tempfile.mkdtemp()) / "crosscoder_jax_against"
    shutil.copytree(Path(checkout) / "crosscoder_jax", dst, ignore=shutil.ignore_patterns("__pycache__"))
    for f in dst.rglob("*.py"):
        f.write_text(re.sub(r"\bcrosscoder_jax\b", "crosscoder_jax_against", f.read_text()))
    sys.path.insert(0, str(dst.parent))
    return importlib.import_module("crosscoder_jax_against.training.train").build


def windows(times: list[float], B: int) -> str:
    rows = []
    for j in range(0, len(times), 100):
        w = times[j:j + 100]
        rows.append(f"| {j + 1}-{j + len(w)} | {np.median(w) * 1e3:.0f} | {np.mean(w) * 1e3:.0f} "
                    f"| {B / np.mean(w):,.0f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", required=True, help="[N, D] float32 .npy of training rows")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--F", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--batches", type=int, default=64, help="distinct batches, cycled")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--activation", default="topk", choices=("topk", "batchtopk"))
    ap.add_argument("--dec_init_norm", type=float, default=0.0, help="decoder row norm at init (0: the default)")
    ap.add_argument("--matmul_dtype", default="", help="override config.matmul_dtype (default: the config's)")
    ap.add_argument("--trace", action="store_true", help="then five steps under jax.profiler, per operation")
    ap.add_argument("--against", default="", help="another checkout whose step takes turns with this one's")
    a = ap.parse_args()

    X = np.load(a.rows, mmap_mode="r")
    D, B = X.shape[1], a.batch
    n = min(a.batches, X.shape[0] // B)
    if n < 1:
        sys.exit(f"{a.rows} holds {X.shape[0]} rows, fewer than one batch of {B}: pass a smaller --batch")
    xs = [np.ascontiguousarray(X[i * B:(i + 1) * B], dtype=np.float32).reshape(B, 1, D) for i in range(n)]
    c = get_config()
    c.dict_size, c.batch_size, c.activation, c.k, c.steps, c.lr = a.F, B, a.activation, a.k, a.steps, a.lr
    c.dec_init_norm = a.dec_init_norm
    if a.matmul_dtype:
        c.matmul_dtype = a.matmul_dtype
    mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    _, key, _, _, init_fn, step_fn = build(c, 1, D, np.ones(1), mesh)
    state = jax.block_until_ready(init_fn(key))
    runs = {"this": [step_fn, state, []]}
    if a.against:
        *_, init_o, step_o = load_build(a.against)(c, 1, D, np.ones(1), mesh)
        runs["against"] = [step_o, jax.block_until_ready(init_o(key)), []]
    keeper = host_memory.Keeper()
    for r in runs.values():
        r[1], m = r[0](r[1], xs[0])
        jax.block_until_ready(m)
    print(f"# {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}; {a.activation} C 1, D {D}, F {a.F}, "
          f"k {a.k}, batch {B}, matmul {c.matmul_dtype}, decoder rows {a.dec_init_norm or 'default'}, lr {a.lr:g}, "
          f"{a.steps} steps over {n} batches of {a.rows}; temporaries {keeper.settle()}",
          flush=True)
    names = list(runs)
    for i in range(a.steps):
        for name in names if i % 2 == 0 else names[::-1]:
            r = runs[name]
            t = time.perf_counter()
            r[1], m = r[0](r[1], xs[i % n])
            jax.block_until_ready(m)
            keeper.after_step()
            r[2].append(time.perf_counter() - t)
    for name, r in runs.items():
        here = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
        label = "" if not a.against else f"{name} ({here if name == 'this' else a.against})\n"
        print(f"{label}| steps | median ms | mean ms | tokens/s (mean) |\n|---|---|---|---|\n{windows(r[2], B)}")
    if a.against:
        ratio = np.median(runs["against"][2]) / np.median(runs["this"][2])
        print(f"median step, against / this: {ratio:.3f}")
    print(f"keeper releases: {keeper.releases}", flush=True)
    state = runs["this"][1]
    if a.trace:
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp, create_perfetto_trace=True):
                for i in range(5):
                    state, m = step_fn(state, xs[i % n])
                    jax.block_until_ready(m)
            print("\n| ms per step | calls per step | operation |\n|---|---|---|")
            for ms, calls, name in per_op_ms(tmp, 5)[:40]:
                print(f"| {ms:.1f} | {calls} | {name[:100]} |")
    keeper.close()


if __name__ == "__main__":
    main()
