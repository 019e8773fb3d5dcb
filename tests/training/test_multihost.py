"""Multi-host: two processes on localhost (jax.distributed over gloo, CPU) train the same crosscoder as
one process reading the same two reader shards."""

import json
import socket
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

from conftest import ROOT, subprocess_env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(store, workdir):
    return [sys.executable, "-m", "launch.train", "--config=configs/crosscoder.py",
            f"--config.activations={store}", f"--config.workdir={workdir}", "--config.dict_size=64",
            "--config.k=4", "--config.batch_size=64", "--config.steps=12", "--config.lr=1e-3",
            "--config.save_every=6", "--config.log_every=4", "--config.reader.shards=2", "--config.progress=False",
            "--config.dead_tokens=256", "--config.threshold_start_step=4"]


def test_two_processes_match_one(planted_setup, tmp_path):
    store, _ = planted_setup
    env = subprocess_env()
    single = subprocess.run(args(store, tmp_path / "one"), env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    procs = [subprocess.Popen(args(store, tmp_path / "two") + [
        f"--config.distributed.coordinator=127.0.0.1:{port}", "--config.distributed.num_processes=2",
        f"--config.distributed.process_id={i}"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    start = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["processes"] == 2 and start["devices"] == 2
    a = load_file(str(tmp_path / "one" / "crosscoder.safetensors"))
    b = load_file(str(tmp_path / "two" / "crosscoder.safetensors"))
    assert set(a) == set(b)
    for k in a:
        rel = np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(a[k]), 1e-30)
        assert rel < 1e-5, (k, rel)
