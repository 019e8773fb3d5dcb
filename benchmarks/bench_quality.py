"""Quality per step and per second: ours (topk) against sparsify, trained for 100, 300 and 1,000 steps
on several activation sets, side by side in one run.

  .venv/bin/python benchmarks/bench_quality.py                 # the default sets, 100/300/1000 steps
  .venv/bin/python benchmarks/bench_quality.py --sets powerlaw --steps 100,300 --lr 5e-5
  .venv/bin/python benchmarks/bench_quality.py --variants 'zero_b_dec:b_dec_init=zero' ...
  .venv/bin/python benchmarks/bench_quality.py --from_results A/results.json,B/results.json  # one figure

A set is `bench_vs_peers.py --data` with that script's flags after '@' (comma separated):
  planted                                   1,024 planted features, 16 active a token (D 512)
  powerlaw                                  4,096 directions, alpha 1.1, 24 active, 5% noise, seed 0
  powerlaw@alpha=1.5,active=48,noise=0.1,data_seed=1   (and any other draw: vary them)
  store:PATH[:SNAPSHOT]@F=3072,k=16,pool_batches=30     a harvested snapshot (the tiny model's: D 96)
Every set trains C 1, k 32 (unless set), F 16384, batch 4096, one lr for all libraries (default
2e-4 / sqrt(F / 2^14), sparsify's own default), with bench_vs_peers.py's data, settings and
scoring (FVU and L0 on held-out rows with each SAE's inference encoder).

Libraries: sparsify through its Trainer (peers_runner.py, `.venv-peers` or $PEERS_PYTHON, on
`--torch_device`), with `--peers` also dictionary_learning and SAELens (BatchTopK through their own
trainers, as in bench_vs_peers.py: their L0 is k on average over a batch, not in every row); ours
through `python -m launch.train` with `configs/crosscoder.py`'s defaults (`--no_ours`: not run),
plus any `--variants NAME:FIELD=VALUE,...` (config fields over the defaults, e.g. the previous
defaults, to say what a default buys). `--in_process` runs ours through `training.train.train` in
this process (no interpreter start and JAX import per run; for sweeps on an accelerator), with
sparsify's runs in a thread beside it. Wall seconds are the whole run (start, compilation, data,
training; not the scoring); tokens/s is the steady rate of bench_vs_peers.py.

Output: one table per set (FVU / L0 / wall seconds per library and step count), `results.json`,
and `quality.png` (FVU against steps and against wall seconds, one panel pair per set) in --workdir.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_vs_peers as bvp  # noqa: E402

DEFAULT_SETS = ("planted", "powerlaw", "powerlaw@alpha=1.5,active=48,noise=0.1,data_seed=1",
                "powerlaw@alpha=0.8,features=8192,active=16,noise=0.02,data_seed=2")


def set_args(spec: str, steps: int, a) -> argparse.Namespace:
    """bench_vs_peers's parsed arguments for one set and step count."""
    data, _, opts = spec.partition("@")
    argv = ["--data", data, "--steps", str(steps), "--libs", "ours_topk", "--k", str(a.k),
            "--workdir", str(a.workdir / slug(spec)), "--torch_device", a.torch_device,
            "--warmup", str(max(10, min(steps // 10, 50)))]
    if a.lr is not None:
        argv += ["--lr", repr(a.lr)]
    for kv in filter(None, opts.split(",")):
        key, _, value = kv.partition("=")
        argv += [f"--{key}", value]
    return bvp.parse(argv)


def slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in spec)[-80:]


def parse_variants(texts: list[str]) -> list[tuple[str, dict]]:
    out = [("ours", {})]
    for text in texts:
        name, _, fields = text.partition(":")
        extra = {}
        for kv in filter(None, fields.split(",")):
            key, _, value = kv.partition("=")
            try:
                extra[key] = json.loads(value)
            except json.JSONDecodeError:
                extra[key] = value
        out.append((name, extra))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=";".join(DEFAULT_SETS), help="';'-separated sets (see above)")
    ap.add_argument("--steps", default="100,300,1000")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="every library's lr (default 2e-4 / sqrt(F / 2^14))")
    ap.add_argument("--variants", nargs="*", default=[], help="NAME:FIELD=VALUE,... runs of ours beside its defaults")
    ap.add_argument("--peers", default="sparsify",
                    help=f"comma-separated peer libraries, from {', '.join(bvp.PEER_LIBS)} (default sparsify)")
    ap.add_argument("--no_peer", action="store_true", help="ours only")
    ap.add_argument("--no_ours", action="store_true", help="no run of our defaults (the peers and --variants only)")
    ap.add_argument("--in_process", action="store_true", help="ours in this process, the peers in a thread beside it")
    ap.add_argument("--torch_device", default="cpu")
    ap.add_argument("--workdir", default="/tmp/bench_quality")
    ap.add_argument("--from_results", default="",
                    help="comma-separated results.json of earlier runs: print their tables and draw one "
                         "quality.png in --workdir, training nothing")
    a = ap.parse_args(argv)
    a.workdir = Path(a.workdir)
    if a.from_results:
        a.workdir.mkdir(parents=True, exist_ok=True)
        results = [r for f in a.from_results.split(",") if f for r in json.loads(Path(f).read_text())]
        report(results, list(dict.fromkeys(r["set"] for r in results)),
               sorted({r["steps"] for r in results}), a.workdir)
        return
    peers = [] if a.no_peer else [p.strip() for p in a.peers.split(",") if p.strip()]
    for p in peers:
        if p not in bvp.PEER_LIBS:
            ap.error(f"unknown peer {p!r}: pick from {', '.join(bvp.PEER_LIBS)}")
    a.workdir.mkdir(parents=True, exist_ok=True)
    sets = [s.strip() for s in a.sets.split(";") if s.strip()]
    step_counts = [int(s) for s in a.steps.split(",")]
    variants = parse_variants(a.variants)[1 if a.no_ours else 0:]
    print(f"CPU: {bvp.cpu_model()} ({os.cpu_count()} cores); sets {sets}; steps {step_counts}; "
          f"variants {[n for n, _ in variants]}; commit {bvp.git_rev()}", flush=True)
    results: list[dict] = []
    out_json = a.workdir / "results.json"
    pool = concurrent.futures.ThreadPoolExecutor(1) if a.in_process else None
    pending = []

    def record(r: dict) -> None:
        results.append(r)
        out_json.write_text(json.dumps(results, indent=1))
        print(f"  {r['set']} {r['steps']:>5} {r['library']:<14} FVU {r['fvu']:.4f} L0 {r['l0']:.1f} "
              f"wall {r['total_s']:.0f} s, {r['tokens_per_s']:,.0f} tokens/s", flush=True)

    def peer(lib, spec, n, sa, paths):
        r = bvp.run_peer(lib, sa, paths, sa.workdir)
        return {**r, "set": spec, "steps": n, "library": lib, "lr": sa.lr}

    for spec in sets:
        for n in step_counts:
            sa = set_args(spec, n, a)
            sa.workdir.mkdir(parents=True, exist_ok=True)
            paths = bvp.make_data(sa, sa.workdir)
            for lib in peers:
                if pool:
                    pending.append(pool.submit(peer, lib, spec, n, sa, paths))
                else:
                    try:
                        record(peer(lib, spec, n, sa, paths))
                    except RuntimeError as e:
                        print(f"  {lib} FAILED on {spec} at {n} steps: {e}", flush=True)
            for name, extra in variants:
                try:
                    r = bvp.run_ours("topk", sa, paths, sa.workdir, extra=extra, name=name, in_process=a.in_process)
                except Exception as e:  # one failed run must not lose the others
                    print(f"  {name} FAILED on {spec} at {n} steps: {type(e).__name__}: {e}", flush=True)
                    continue
                record({**r, "set": spec, "steps": n, "library": name, "extra": extra, "lr": sa.lr})
            for f in [f for f in pending if f.done()]:
                pending.remove(f)
                try:
                    record(f.result())
                except RuntimeError as e:
                    print(f"  peer FAILED: {e}", flush=True)
    for f in pending:
        try:
            record(f.result())
        except RuntimeError as e:
            print(f"  peer FAILED: {e}", flush=True)
    report(results, sets, step_counts, a.workdir)


def report(results: list[dict], sets: list[str], step_counts: list[int], workdir: Path) -> None:
    """Markdown tables (stdout) and quality.png."""
    libs = list(dict.fromkeys(r["library"] for r in results))
    for spec in sets:
        rows = {(r["library"], r["steps"]): r for r in results if r["set"] == spec}
        if not rows:
            continue
        lr = next(iter(rows.values()))["lr"]
        print(f"\n### {spec} (lr {lr:.3g}): FVU (held out) / L0 / wall s\n")
        print("| library | " + " | ".join(f"{n} steps" for n in step_counts) + " |")
        print("|---|" + "---|" * len(step_counts))
        for lib in libs:
            cells = [f"{rows[lib, n]['fvu']:.4f} / {rows[lib, n]['l0']:.0f} / {rows[lib, n]['total_s']:.0f}"
                     if (lib, n) in rows else "-" for n in step_counts]
            print(f"| {lib} | " + " | ".join(cells) + " |")
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(2, len(sets), figsize=(4 * len(sets), 7), squeeze=False)
    for j, spec in enumerate(sets):
        for lib in libs:
            pts = sorted((r["steps"], r["total_s"], r["fvu"]) for r in results if r["set"] == spec and r["library"] == lib)
            if pts:
                axes[0, j].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=lib)
                axes[1, j].plot([p[1] for p in pts], [p[2] for p in pts], "o-", label=lib)
        axes[0, j].set_title(spec[:48], fontsize=7)
        axes[0, j].legend(fontsize=7)
        for i, xl in enumerate(("steps", "wall seconds")):
            axes[i, j].set_xscale("log")
            # log-scale minor labels overlap on a decade or less: plain numbers at 1, 2, 5 x 10^n only
            axes[i, j].xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axes[i, j].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axes[i, j].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            axes[i, j].set_xlabel(xl)
            axes[i, j].set_ylabel("FVU (held out)")
    fig.tight_layout()
    fig.savefig(workdir / "quality.png", dpi=110)
    print(f"\nfigure: {workdir / 'quality.png'}")


if __name__ == "__main__":
    main()
