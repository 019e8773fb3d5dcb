"""A training run killed with SIGKILL at arbitrary moments and resumed ends with the parameters of a
run that was never interrupted."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

from conftest import ROOT, subprocess_env


def cmd(store, workdir):
    return [sys.executable, "-m", "launch.train", "--config=configs/crosscoder.py",
            f"--config.activations={store}", f"--config.workdir={workdir}", "--config.dict_size=64",
            "--config.k=4", "--config.batch_size=64", "--config.steps=600", "--config.lr=1e-3",
            "--config.save_every=25", "--config.log_every=25", "--config.progress=False",
            "--config.dead_tokens=256", "--config.threshold_start_step=50", "--config.k_start=12",
            "--config.k_anneal_steps=300"]


def logged_steps(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    return max([json.loads(l)["step"] for l in path.read_text().splitlines() if l.strip()] or [0])


def test_sigkill_and_resume_matches_uninterrupted(planted_setup, tmp_path):
    store, _ = planted_setup
    env = subprocess_env()
    ref = subprocess.run(cmd(store, tmp_path / "ref"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    work = tmp_path / "killed"
    kills = 0
    for target in (60, 260):  # kill once early and once later, wherever the run happens to be
        proc = subprocess.Popen(cmd(store, work), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while proc.poll() is None and logged_steps(work) < target and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1 and logged_steps(work) < 600
    final = subprocess.run(cmd(store, work), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    events = [json.loads(l).get("event") for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert events.count("resume") >= 1
    steps = [json.loads(l)["step"] for l in (work / "metrics.jsonl").read_text().splitlines() if "loss" in l]
    assert steps == sorted(set(steps))  # every logged step once, even after kills
    a = load_file(str(tmp_path / "ref" / "crosscoder.safetensors"))
    b = load_file(str(work / "crosscoder.safetensors"))
    for k in a:
        assert np.max(np.abs(a[k] - b[k])) < 1e-6, k
