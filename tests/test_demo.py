"""The main job end to end at a tiny size: every stage runs, and a rerun redoes nothing."""

import json
import subprocess
import sys

from conftest import ROOT, subprocess_env


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "launch.demo", f"--config.workdir={work}", "--config.progress=False",
           "--config.pretrain.steps=150", "--config.pretrain.n_checkpoints=6", "--config.pretrain.n_pairs=24",
           "--config.pretrain.novel_from_step=60", "--config.pretrain.novel_checkpoints=0,30",
           "--config.n_snapshots=5", "--config.seeds=2", "--config.match_rows=2048",
           "--config.harvest.n_contexts=256", "--config.harvest.chunk_contexts=64",
           "--config.train.steps=60", "--config.train.batch_size=256", "--config.train.dict_size=128",
           "--config.attribute.validate_top=3", "--config.attribute.limit=12", "--config.attribute.steps=3",
           "--config.eval_contexts=16"]
    first = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((work / "demo.json").read_text())
    for stage in ("pretrain", "choose_checkpoints", "harvest", "train", "train_seeds", "evaluate", "attribute",
                  "attribute_seeds", "agreement", "report"):
        assert state["stages"][stage]["done"], stage
    chosen = state["stages"]["choose_checkpoints"]["result"]
    assert len(chosen) == 5 and chosen[0] == "step0" and chosen[-1] == "step150"
    # the novel nouns: withheld until step 60, their task written, the seed's run and the agreement there
    assert (work / "pretrain" / "tasks" / "novel_noun_agreement.jsonl").exists()
    assert json.loads((work / "pretrain" / "task_curves.json").read_text())["novel"]["from_step"] == 60
    assert (work / "seeds" / "seed1" / "crosscoder.safetensors").exists()
    assert (work / "seeds" / "seed1" / "attribution" / "novel_noun_agreement.json").exists()
    agreed = json.loads((work / "agreement" / "agreement.json").read_text())
    assert agreed["seeds"] == [0, 1] and agreed["overall"]["n"] > 0
    sure = json.loads((work / "report" / "report_summary.json").read_text())["how_sure"]
    assert sure["seeds"]["seeds"] == [0, 1] and "novel" in sure and sure["exact"]["n"] > 0
    assert (work / "crosscoder" / "crosscoder.safetensors").exists() and (work / "crosscoder" / "eval.json").exists()
    assert (work / "report" / "report.html").exists() and (work / "report" / "report_summary.json").exists()
    tasks = sorted(p.stem for p in (work / "pretrain" / "tasks").glob("*.jsonl"))
    assert sorted(p.stem for p in (work / "attribution").glob("*.json")) == tasks
    mtimes = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and p.name != "demo.json"}
    again = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before") >= 10
    changed = [str(p) for p, t in mtimes.items() if p.stat().st_mtime_ns != t]
    assert not changed, changed[:5]
    # The per-stage launch scripts work on the demo's outputs.
    cc_dir = work / "crosscoder"
    tasks_glob = str(work / "pretrain" / "tasks" / "simple_agreement.jsonl")
    ckpt = [str(work / "pretrain" / "checkpoints" / n) for n in chosen]
    for args in (["launch.evaluate", f"--config.workdir={cc_dir}", "--config.n_contexts=8", "--config.progress=False"],
                 ["launch.attribute", f"--config.workdir={cc_dir}", f"--config.tasks={tasks_glob}",
                  "--config.limit=8", "--config.steps=2", f"--config.out={tmp_path / 'attr'}", "--config.progress=False"],
                 ["launch.curves", f"--config.checkpoints={','.join(ckpt)}", f"--config.tasks={tasks_glob}",
                  f"--config.out={tmp_path / 'curves.json'}"]):
        r = subprocess.run([sys.executable, "-m", *args], env=subprocess_env(), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, (args[0], r.stderr[-2000:])
    assert (tmp_path / "attr" / "simple_agreement.csv").exists()
    # seed agreement on the demo's store without a demo: two small crosscoders, one task
    seeds_dir = tmp_path / "seeds"
    r = subprocess.run([sys.executable, "-m", "launch.seeds", f"--config.workdir={seeds_dir}", "--config.seeds=2",
                        f"--config.train.activations={work / 'store'}", f"--config.tasks={tasks_glob}",
                        "--config.train.steps=20", "--config.train.dict_size=64", "--config.train.batch_size=256",
                        "--config.train.k=8", "--config.train.progress=False", "--config.attribute.limit=8",
                        "--config.attribute.steps=2", "--config.attribute.threshold=0.0",
                        "--config.attribute.progress=False", "--config.match_rows=1024"],
                       env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    agreed = json.loads((seeds_dir / "agreement" / "agreement.json").read_text())
    assert agreed["seeds"] == [0, 1] and set(agreed["tasks"]) == {"simple_agreement"}
    assert (seeds_dir / "seed0" / "attribution" / "simple_agreement.csv").exists()
    assert (seeds_dir / "seed1" / "attribution" / "simple_agreement.json").exists()
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert set(curves["simple_agreement"]) == set(chosen)
