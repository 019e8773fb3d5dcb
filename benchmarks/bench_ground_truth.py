"""The tool's answers checked against ground truth on the tiny model, as the demo computes them
(`report.truth`): the novel-noun construction (the task at chance before its step X; latents
labelled for it with an onset before X, per onset kind; the labelled-and-selected ones whose causal
onset is at the task's accuracy jump or within two snapshots after it), per crosscoder seed and
pooled; the attractor task's subject-number latents with their seed agreement; the shares of
seed-stable and prompt-stable onsets; exact-ablation against IE onsets.

  python benchmarks/bench_ground_truth.py                                 # the demo in runs/demo (run if missing)
  python benchmarks/bench_ground_truth.py --pretrain_seeds 0,1,2 --out runs/gt_pretrain   # a demo per tiny model
  python benchmarks/bench_ground_truth.py --set train.dict_size=512       # any demo override, for every run

Each run is `python -m launch.demo` (3 crosscoder seeds on one store by default) in <out>/pretrain<s>
(or --demo for one); a killed run resumes, a finished one is read back. Prints one table per
measurement and writes <out>/ground_truth.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from crosscoder_jax.runtime.matmul_choice import cpu_model

ROOT = Path(__file__).resolve().parent.parent


def run_demo(work: Path, pretrain_seed: int | None, overrides: list[str]) -> dict:
    """The demo's report summary in `work`, running (or resuming) the demo first."""
    summary = work / "report" / "report_summary.json"
    if not summary.is_file() or "how_sure" not in json.loads(summary.read_text()):
        work.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "launch.demo", f"--config.workdir={work}", "--config.progress=False",
               *([f"--config.pretrain.seed={pretrain_seed}"] if pretrain_seed is not None else []),
               *[f"--config.{o}" for o in overrides]]
        with open(work / "ground_truth_run.log", "a") as fh:
            r = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` failed ({r.returncode}); see {work / 'ground_truth_run.log'}")
    return json.loads(summary.read_text())


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default="runs/demo", help="the demo workdir (without --pretrain_seeds)")
    ap.add_argument("--pretrain_seeds", default="", help="comma list: a whole demo per tiny-model seed")
    ap.add_argument("--out", default="runs/ground_truth")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a demo config override for every run, e.g. train.dict_size=512 (repeatable)")
    a = ap.parse_args()
    out = (ROOT / a.out).resolve()
    runs = ({f"pretrain{s}": (out / f"pretrain{s}", int(s)) for s in a.pretrain_seeds.split(",")} if a.pretrain_seeds
            else {"demo": ((ROOT / a.demo).resolve(), None)})
    results = {name: run_demo(work, seed, a.set) for name, (work, seed) in runs.items()}
    print(f"# ground truth on the tiny model ({cpu_model()}, {os.cpu_count()} cores); overrides: {a.set or 'none'}")
    print("\n| run | crosscoder seed | labelled for the novel nouns | onset before X: IE | IE where present | "
          "presence | decoder norms | labelled and selected | IE onset at jump..+2 | where present |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    pooled = {"labelled": 0, "early": {}, "n": 0, "within": 0, "n_g": 0, "within_g": 0}
    for name, s in results.items():
        nv = s["how_sure"].get("novel") or {}
        for seed, v in (nv.get("per_seed") or {}).items():
            fe, nj, gj = v["false_early"], v["near_jump"] or {}, v["gated_near_jump"] or {}
            print(f"| {name} | {seed} | {v['labelled']} | {fe['causal']} | {fe['gated']} | {fe['repr']} | "
                  f"{fe.get('decnorm')} | {v['selected']} | {nj.get('within')} of {nj.get('n')} | "
                  f"{gj.get('within')} of {gj.get('n')} |")
            pooled["labelled"] += v["labelled"]
            for k, x in fe.items():
                pooled["early"][k] = pooled["early"].get(k, 0) + x
            pooled["n"] += nj.get("n", 0)
            pooled["within"] += nj.get("within", 0)
            pooled["n_g"] += gj.get("n", 0)
            pooled["within_g"] += gj.get("within", 0)
    lab = pooled["labelled"]
    rates = {k: v / lab if lab else None for k, v in pooled["early"].items()}
    print(f"\npooled: {lab} labelled latents; false-early rate " + ", ".join(f"{k} {_f(v)}" for k, v in rates.items())
          + f"; causal onset at the jump..+2: IE {pooled['within']} of {pooled['n']}, IE where present "
          f"{pooled['within_g']} of {pooled['n_g']} (targets: false-early 0, fraction >= 0.9)")
    print("\n| run | novel task at chance before X (max |acc - 0.5|, band) | jump | seed-stable | prompt-stable | "
          "both | exact vs IE within one (prompt-stable / not) |")
    print("|---|---|---|---|---|---|---|")
    for name, s in results.items():
        h, nv = s["how_sure"], s["how_sure"].get("novel") or {}
        o = (h.get("seeds") or {}).get("overall") or {}
        e = h.get("exact") or {}
        st, un = e.get("prompt_stable") or {}, e.get("prompt_unstable") or {}
        jump = nv.get("jump") or {}
        print(f"| {name} | {nv.get('at_chance_before')} ({_f(nv.get('max_deviation_before'))}, "
              f"{_f(nv.get('chance_band'))}) | {jump.get('from')} -> {jump.get('at')} | {_f(o.get('seed_stable'))} | "
              f"{_f(o.get('prompt_stable'))} | {_f(o.get('both'))} | {e.get('within_one')} of {e.get('n')} "
              f"({_f(e.get('agreement'))}; {_f(st.get('agreement'))} / {_f(un.get('agreement'))}) |")
    print("\n| run | attractor latent | causal onset | interval over prompts | snapshots from jump | prompt-stable | "
          "seed agreement | representational onset |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in results.items():
        for x in s["how_sure"].get("attractor") or []:
            print(f"| {name} | {x['latent']} | {x['causal_onset']} | {x['onset_lo']} .. {x['onset_hi']} | "
                  f"{x['snapshots_from_jump']} | {x['prompt_stable']} | {_f(x['onset_agreement'])} | {x['repr_onset']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.json").write_text(json.dumps({"runs": {k: v["how_sure"] for k, v in results.items()},
                                                       "pooled": {**pooled, "false_early_rate": rates},
                                                       "overrides": a.set, "cpu": cpu_model()}, indent=1))


if __name__ == "__main__":
    main()
