"""Ground truth on the tiny model over seeds: of the latents that carry the subject's number at the
attractor noun, how many have their causal onset within one snapshot of the attractor task's
accuracy jump (issue 12, item 7b; the report's `attractor_subject_number`).

  python benchmarks/bench_ground_truth.py                          # the demo's crosscoder, seeds 0,1,2
  python benchmarks/bench_ground_truth.py --seeds 0,1,2,3 --set train.dict_size=512 --out runs/gt_f512
  python benchmarks/bench_ground_truth.py --vary pretrain --out runs/gt_pretrain   # whole demo per seed

One crosscoder labels only a handful of latents this way (0-4 on the demo), so one seed moves the
fraction by a quarter or more; this pools the counts over seeds. `--vary crosscoder` (the default)
retrains the demo's crosscoder with each seed on the same pretraining and store (`runs/demo`, which
`python -m launch.demo` makes): each seed runs the demo's own train, evaluate, attribute and report
stages in <out>/seed<s>, with the finished demo's pretrain/ and store/ linked in. `--vary pretrain`
runs the whole demo (`--config.pretrain.seed=<s>`: another tiny model, its own snapshot choice,
store and crosscoder) in <out>/seed<s>. Either way a killed run resumes where it stopped (a finished
seed is read back, not rerun; one reported by an older version is re-reported). Prints one row per
seed, the pooled fraction at the report's |corr| cut and at the looser cuts the report also counts,
and writes them to <out>/ground_truth.json.
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
RERUN = ("train", "evaluate", "attribute", "report")  # the stages that depend on the crosscoder


def prepare(demo: Path, work: Path) -> None:
    """<work> as a demo workdir whose pretraining, checkpoint choice and harvest are the finished demo's."""
    if not (demo / "demo.json").is_file() or not all((demo / d).is_dir() for d in ("pretrain", "store")):
        raise SystemExit(f"{demo} is not a finished demo workdir (demo.json, pretrain/, store/); "
                         f"run `python -m launch.demo --config.workdir={demo}` first")
    work.mkdir(parents=True, exist_ok=True)
    for d in ("pretrain", "store"):
        if not (work / d).exists():
            (work / d).symlink_to((demo / d).resolve(), target_is_directory=True)
    if not (work / "demo.json").exists():
        state = json.loads((demo / "demo.json").read_text())
        for stage in RERUN:
            state["stages"].pop(stage, None)
        (work / "demo.json").write_text(json.dumps(state, indent=1))


def _call(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "a") as fh:
        r = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"{what}: `{' '.join(cmd)}` failed ({r.returncode}); see {log}")


def run_seed(demo: Path, work: Path, seed: int, overrides: list[str], vary: str) -> dict:
    summary = work / "report" / "report_summary.json"
    log = work / "ground_truth_run.log"
    if not summary.is_file():
        if vary == "crosscoder":
            prepare(demo, work)
        work.mkdir(parents=True, exist_ok=True)
        _call([sys.executable, "-m", "launch.demo", f"--config.workdir={work}", "--config.progress=False",
               f"--config.{vary.replace('crosscoder', 'train')}.seed={seed}", *[f"--config.{o}" for o in overrides]],
              log, f"seed {seed}")
    s = json.loads(summary.read_text())
    if "by_threshold" not in (s.get("attractor_subject_number") or {}):
        _call([sys.executable, "-m", "launch.report", f"--config.demo={work}"], log, f"seed {seed} report")
        s = json.loads(summary.read_text())
    truth = s.get("attractor_subject_number") or {}
    near = truth.get("near_jump") or {"n": 0, "within": 0}
    train = json.loads((work / "demo.json").read_text())["stages"]["train"]["result"] or {}
    return {"seed": seed, "labelled": len(truth.get("latents", [])), "with_onset": near["n"],
            "within": near["within"], "jump": (s.get("attractor_jump") or {}).get("at"),
            "dead_frac": train.get("dead_frac"), "checkpoints": s.get("checkpoints"),
            "by_threshold": [{k: x[k] for k in ("threshold", "n", "within")} for x in truth.get("by_threshold", [])],
            "onsets": [[x["latent"], x["causal_onset"], x["snapshots_from_jump"]] for x in truth.get("latents", [])]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default="runs/demo", help="a finished demo workdir (--vary crosscoder)")
    ap.add_argument("--out", default=None, help="default runs/ground_truth (crosscoder), runs/ground_truth_pretrain")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--vary", choices=("crosscoder", "pretrain"), default="crosscoder",
                    help="the seed of the crosscoder (same tiny model and store) or of the tiny model (whole demo)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a demo config override for every seed, e.g. train.dict_size=512 (repeatable)")
    a = ap.parse_args()
    out = a.out or ("runs/ground_truth" if a.vary == "crosscoder" else "runs/ground_truth_pretrain")
    demo, out = (ROOT / a.demo).resolve(), (ROOT / out).resolve()
    rows = []
    print(f"| {a.vary} seed | latents labelled | with a causal onset | onset within one snapshot of the jump | "
          "jump at | dead | at looser |corr| cuts |")
    print("|---|---|---|---|---|---|---|")
    for seed in (int(x) for x in a.seeds.split(",")):
        r = run_seed(demo, out / f"seed{seed}", seed, a.set, a.vary)
        rows.append(r)
        dead = f"{100 * r['dead_frac']:.1f}%" if r["dead_frac"] is not None else "-"
        cuts = "; ".join(f"{x['threshold']}: {x['within']} of {x['n']}" for x in r["by_threshold"])
        print(f"| {seed} | {r['labelled']} | {r['with_onset']} | {r['within']} | {r['jump']} | {dead} | {cuts} |",
              flush=True)
    n, within = sum(r["with_onset"] for r in rows), sum(r["within"] for r in rows)
    pooled = within / n if n else float("nan")
    cuts = sorted({x["threshold"] for r in rows for x in r["by_threshold"]})
    by_cut = {}
    for t in cuts:
        cn = sum(x["n"] for r in rows for x in r["by_threshold"] if x["threshold"] == t)
        cw = sum(x["within"] for r in rows for x in r["by_threshold"] if x["threshold"] == t)
        by_cut[t] = {"n": cn, "within": cw, "fraction": cw / cn if cn else float("nan")}
    print(f"pooled: {within} of {n} = {pooled:.2f} (target >= 0.8); by |corr| cut: "
          + "; ".join(f"{t}: {v['within']} of {v['n']} = {v['fraction']:.2f}" for t, v in by_cut.items())
          + f"; varying the {a.vary} seed; overrides: {a.set or 'none'}; {cpu_model()}, {os.cpu_count()} cores")
    (out / "ground_truth.json").write_text(json.dumps({"vary": a.vary, "rows": rows, "pooled": pooled,
                                                       "by_cut": by_cut, "overrides": a.set}, indent=1))


if __name__ == "__main__":
    main()
