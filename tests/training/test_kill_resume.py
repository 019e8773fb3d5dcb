"""A training run killed with SIGKILL at arbitrary moments and resumed ends with the parameters of a
run that was never interrupted: on one device, sharded over a 2 x 2 x 2 (data x snapshot x latent)
mesh of fake CPU devices with ZeRO-split parameters and optimizer state, and on live activations
(the checkpoints' forward passes run during training, the shuffling window on the device)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ROOT, subprocess_env
from process_fixtures import live_args

ONE_DEVICE = dict(steps=600, kills=(60, 260), extra=(), devices=0)
SHARDED = dict(steps=200, kills=(40, 120), devices=8,
               extra=("--config.mesh.data=2", "--config.mesh.snapshot=2", "--config.mesh.latent=2"))
LIVE = dict(steps=60, kills=(35,), extra=(), devices=0, live=True)  # killed between saves 25 and 50


def cmd(store, workdir, steps, extra):
    return [sys.executable, "-m", "launch.train", "--config=configs/crosscoder.py",
            f"--config.activations={store}", f"--config.workdir={workdir}", "--config.dict_size=64",
            "--config.k=4", "--config.batch_size=64", f"--config.steps={steps}", "--config.lr=1e-3",
            "--config.save_every=25", "--config.log_every=25", "--config.progress=False",
            "--config.dead_tokens=256", f"--config.threshold_start_step={steps // 12}", "--config.k_start=12",
            f"--config.k_anneal_steps={steps // 2}", *extra]


def logged_steps(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    return max([json.loads(l)["step"] for l in path.read_text().splitlines() if l.strip()] or [0])


@pytest.mark.parametrize("case", [pytest.param(ONE_DEVICE, marks=pytest.mark.slow), SHARDED, LIVE],
                         ids=["one-device", "sharded-2x2x2", "live"])  # the sharded case covers the one-device path too
def test_sigkill_and_resume_matches_uninterrupted(case, planted_setup, planted_setup_c4, tmp_path):
    store, _ = planted_setup_c4 if case["devices"] else planted_setup
    extra = case["extra"]
    if case.get("live"):
        store, *flags = live_args(tmp_path)
        extra = (*extra, *flags)
    env = subprocess_env(**({"XLA_FLAGS": f"--xla_force_host_platform_device_count={case['devices']}"}
                            if case["devices"] else {}))
    run = lambda work: cmd(store, work, case["steps"], extra)  # noqa: E731
    ref = subprocess.run(run(tmp_path / "ref"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    work = tmp_path / "killed"
    kills = 0
    for target in case["kills"]:  # kill once early and once later, wherever the run happens to be
        proc = subprocess.Popen(run(work), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while proc.poll() is None and logged_steps(work) < target and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1 and logged_steps(work) < case["steps"]
    final = subprocess.run(run(work), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    lines = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert [l.get("event") for l in lines].count("resume") >= 1
    if case["devices"]:
        assert lines[0]["mesh"] == {"data": 2, "snapshot": 2, "latent": 2}
    steps = [l["step"] for l in lines if "loss" in l]
    assert steps == sorted(set(steps))  # every logged step once, even after kills
    a = load_file(str(tmp_path / "ref" / "crosscoder.safetensors"))
    b = load_file(str(work / "crosscoder.safetensors"))
    for k in a:
        assert np.array_equal(a[k], b[k]), k  # bit-identical
