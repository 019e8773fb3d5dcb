"""The main job on the embedded default: pretrain the tiny model, pick checkpoints (all of them by
default), harvest, train a crosscoder and, with `seeds` > 1, more on the same store with other
seeds, evaluate, attribute on every synthetic task (the other seeds: the IE of every latent), match
the seeds' latents and compare their onsets, report. Every stage resumes, and a stage that finished
is recorded in `<workdir>/demo.json` and skipped, so rerunning a finished demo redoes nothing.
Stage wall times are recorded there too.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from crosscoder_jax import analysis, report
from crosscoder_jax.analysis import agreement, evaluate
from crosscoder_jax.crosscoder import load_crosscoder
from crosscoder_jax.data import harvest, tasks
from crosscoder_jax.data.live import LiveStore
from crosscoder_jax.data.store import Store
from crosscoder_jax.training import pretrain, train


def choose_checkpoints(names: Sequence[str], accuracy: Sequence[float], dip_margin: float = 0.05,
                       reached: float = 0.9) -> list[str]:
    """Three checkpoints around the largest rise of task accuracy between consecutive checkpoints,
    plus the final one: the last checkpoint of the dip before the rise (within `dip_margin` of the
    lowest accuracy before it), the first one after it that reaches `reached` of the best accuracy
    (or the one right after the rise), and the final checkpoint. Fewer when they coincide."""
    acc = np.asarray(accuracy, np.float64)
    if len(acc) < 2:
        return list(names)
    j = int(np.argmax(np.diff(acc))) + 1
    before = acc[:j]
    a = max(i for i in range(j) if before[i] <= before.min() + dip_margin)
    after = [i for i in range(j, len(acc)) if acc[i] >= reached * acc.max()]
    b = after[0] if after else j
    picked = sorted({a, b, len(acc) - 1})
    return [names[i] for i in picked]


def choose_series(names: Sequence[str], steps: Sequence[int], accuracy: Sequence[float], n: int = 8,
                  dip_margin: float = 0.05, reached: float = 0.9) -> list[str]:
    """`n` checkpoints of a series for a whole-trajectory crosscoder: the first and the last, the
    three of `choose_checkpoints` and the two either side of the largest rise of accuracy (so the
    jump is sampled densely), then the rest spread over log(step + 1): each next pick is the
    checkpoint farthest from those already chosen. All of them if the series has at most `n`."""
    if len(names) <= n:
        return list(names)
    acc = np.asarray(accuracy, np.float64)
    j = int(np.argmax(np.diff(acc))) + 1 if len(acc) > 1 else 0
    by_name = {m: i for i, m in enumerate(names)}
    must = [0, len(names) - 1, j, j - 1] + [by_name[m] for m in choose_checkpoints(names, acc, dip_margin, reached)]
    picked = list(dict.fromkeys(i for i in must if 0 <= i < len(names)))[:n]  # in order of priority
    x = np.log1p(np.asarray(steps, np.float64))
    while len(picked) < n:
        gap = np.min(np.abs(x[:, None] - x[picked][None, :]), axis=1)
        gap[picked] = -1
        picked.append(int(np.argmax(gap)))
    return [names[i] for i in sorted(picked)]


def seed_list(config) -> list[int]:
    """The crosscoder seeds of a demo: the train config's seed first (the reference), then the next
    `config.seeds - 1` integers."""
    return [int(config.train.seed) + i for i in range(max(1, int(config.get("seeds", 1))))]


def seed_dir(work: Path, seed: int) -> Path:
    """The training workdir of a demo's extra seed (its attribution/ inside)."""
    return Path(work) / "seeds" / f"seed{seed}"


def load_run(workdir: str | Path, model_dtype: str = "float32", store: str | Path | None = None):
    """A trained crosscoder and the checkpoints it was trained on: (models, tokenizer, store meta,
    crosscoder), from a training workdir (its config.json names the store unless `store` is given)."""
    workdir = Path(workdir)
    run = json.loads((workdir / "config.json").read_text())
    store = store or run["activations"]
    if store == "live":  # trained on live activations: the checkpoints and tokens its config names
        live = LiveStore(ml_collections.ConfigDict({**run["live"], "model_dtype": model_dtype}))
        lms, tok, meta = live.models(), live.tokenizer, live.meta
    else:
        lms, tok, meta = harvest.series_from_store(store, model_dtype)
    return lms, tok, meta, load_crosscoder(workdir / "crosscoder.safetensors")


class Stages:
    """Stage bookkeeping in `<workdir>/demo.json`: {stage: {"done": bool, "seconds": float, ...}}."""

    def __init__(self, workdir: Path):
        self.path = workdir / "demo.json"
        self.state: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.path)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        rec = self.state["stages"].get(name, {})
        if rec.get("done"):
            print(f"[demo] {name}: done before ({rec.get('seconds', 0):.1f} s), skipped")
            return rec.get("result")
        print(f"[demo] {name} ...", flush=True)
        t = time.time()
        result = fn()
        self.state["stages"][name] = {"done": True, "seconds": time.time() - t, "result": result}
        self._save()
        print(f"[demo] {name}: {time.time() - t:.1f} s", flush=True)
        return result

    def set(self, key: str, value: Any) -> None:
        self.state[key] = value
        self._save()


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.to_dict())


def run_demo(config) -> dict[str, Any]:
    """Runs (or resumes) the whole demo; returns the stage record."""
    work = Path(config.workdir)
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work)
    pre_dir = work / "pretrain"

    def do_pretrain():
        pc = _copy(config.pretrain)
        pc.workdir = str(pre_dir)
        pretrain.run(pc)
        return None

    stages.run("pretrain", do_pretrain)
    curves = json.loads((pre_dir / "task_curves.json").read_text())
    series = json.loads((pre_dir / "checkpoints" / "series.json").read_text())["checkpoints"]
    names = [c["name"] for c in series]

    def do_choose():
        if config.checkpoints:
            chosen = [c.strip() for c in config.checkpoints.split(",") if c.strip()]
        else:
            by_name = {r["name"]: r for r in curves["checkpoints"]}
            acc = [by_name[n]["tasks"][config.selection_task]["accuracy"] for n in names]
            if config.n_snapshots <= 0 or config.n_snapshots >= len(names):
                chosen = list(names)  # full resolution: every checkpoint the pretraining saved
            elif config.n_snapshots == 3:
                chosen = choose_checkpoints(names, acc)  # the paper's analysis: dip, after the jump, final
            else:
                steps = [c["step"] for c in series]
                chosen = choose_series(names, steps, acc, config.n_snapshots)
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise ValueError(f"checkpoints {unknown} are not in the series {names}")
        return chosen

    chosen = stages.run("choose_checkpoints", do_choose)
    ckpt_dirs = [str(pre_dir / "checkpoints" / n) for n in chosen]
    n_layers = json.loads((Path(ckpt_dirs[0]) / "config.json").read_text())["num_hidden_layers"]
    layer = config.layer if config.layer >= 0 else min(n_layers // 2, n_layers - 1)  # Pythia-1B: 8 of 16
    store_dir = work / "store"

    def do_harvest():
        hc = _copy(config.harvest)
        hc.model, hc.layer, hc.out, hc.progress = "tiny-grammar", layer, str(store_dir), config.progress
        if pretrain.novel_from(config.pretrain) is not None:  # the final language, novel nouns included
            hc.tokens.p_novel = float(config.pretrain.grammar.p_novel)
        hc.checkpoints = ",".join(f"{n}={d}" for n, d in zip(chosen, ckpt_dirs))
        harvest.harvest(hc)
        return {"layer": layer}

    stages.run("harvest", do_harvest)
    cc_dir = work / "crosscoder"
    seeds = seed_list(config)

    def do_train(seed: int, out: Path):
        tc = _copy(config.train)
        tc.activations, tc.workdir, tc.progress, tc.seed = str(store_dir), str(out), config.progress, seed
        m = train.train(tc)
        return {k: np.asarray(m[k]).tolist() for k in ("loss", "l0", "fvu", "dead_frac") if k in m}

    stages.run("train", lambda: do_train(seeds[0], cc_dir))
    if len(seeds) > 1:  # the same store, other seeds: each run resumes on its own
        stages.run("train_seeds", lambda: {s: do_train(s, seed_dir(work, s)) for s in seeds[1:]})
    lms, tok, meta, cc = load_run(cc_dir, store=store_dir)

    def do_evaluate():
        ctx = evaluate.heldout_contexts(meta, tok, config.eval_contexts)
        res = evaluate.evaluate(lms, meta["checkpoints"], cc, ctx, meta["layer"], meta["drop_bos"],
                                show_progress=config.progress)
        evaluate.write(res, cc_dir / "eval.json")
        print(evaluate.table(res))
        return None

    stages.run("evaluate", do_evaluate)
    ac = config.attribute
    task_files = sorted((pre_dir / "tasks").glob("*.jsonl"))

    def do_attribute():
        out = {}
        for task_file in task_files:
            prompts, kept = tasks.load_task(task_file, tok, limit=ac.limit or None)
            validate = ac.validate_top if task_file.stem == config.selection_task else 0
            res = analysis.analyze_task(lms, meta["checkpoints"], cc, prompts, meta["layer"], drop_bos=meta["drop_bos"],
                                        validate_top=validate, show_progress=config.progress,
                                        **analysis.task_analysis.options(ac))
            res["summary"]["pairs"] = {k: v for k, v in kept.items() if k != "kept_index"}
            analysis.write_outputs(res, work / "attribution", task_file.stem)
            out[task_file.stem] = {"latents": len(res["rows"]), "classes": res["summary"].get("classes"),
                                   "ablation": res["summary"].get("ablation"),
                                   "validation": res["summary"].get("validation")}
        return out

    stages.run("attribute", do_attribute)
    if len(seeds) > 1:
        def do_attribute_seeds():
            prompts = {f.stem: tasks.load_task(f, tok, limit=ac.limit or None)[0] for f in task_files}
            for s in seeds[1:]:
                cc_s = load_crosscoder(seed_dir(work, s) / "crosscoder.safetensors")
                agreement.seed_task_ie(lms, meta["checkpoints"], cc_s, prompts, meta["layer"],
                                       seed_dir(work, s) / "attribution", drop_bos=meta["drop_bos"],
                                       **analysis.task_analysis.options(ac))
            return None

        def do_agreement():
            st = Store(store_dir)
            rows = np.asarray(st.read_rows(0, min(config.match_rows, st.n_tokens)), np.float32)
            res = agreement.agree((seeds[0], cc_dir), work / "attribution", [(s, seed_dir(work, s)) for s in seeds[1:]],
                                  meta["checkpoints"], cut=config.match_cut, tau=ac.tau, match_by=config.match_by,
                                  rows_NCD=rows)
            agreement.write(res, work / "agreement")
            return res["summary"]["overall"]

        stages.run("attribute_seeds", do_attribute_seeds)
        stages.run("agreement", do_agreement)

    stages.run("report", lambda: report.write_report(work, work / "report"))
    total = sum(s.get("seconds", 0) for s in stages.state["stages"].values())
    stages.set("total_seconds", total)
    return stages.state
