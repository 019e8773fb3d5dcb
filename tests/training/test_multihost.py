"""Multi-host: two processes on localhost (jax.distributed over gloo, CPU) train the same crosscoder as
one process: splitting the rows (each reads its reader shard) or the snapshots (each reads its own
checkpoints' columns of the store)."""

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


def run_pair(cmd, tmp_path, name):
    env = subprocess_env()
    port = free_port()
    procs = [subprocess.Popen(cmd + [
        f"--config.distributed.coordinator=127.0.0.1:{port}", "--config.distributed.num_processes=2",
        f"--config.distributed.process_id={i}"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    start = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
    assert start["processes"] == 2 and start["devices"] == 2
    return start


def assert_same_export(a_dir, b_dir):
    a = load_file(str(a_dir / "crosscoder.safetensors"))
    b = load_file(str(b_dir / "crosscoder.safetensors"))
    assert set(a) == set(b)
    for k in a:
        rel = np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(a[k]), 1e-30)
        assert rel < 1e-5, (k, rel)


def test_two_processes_match_one(planted_setup, tmp_path):
    store, _ = planted_setup
    single = subprocess.run(args(store, tmp_path / "one"), env=subprocess_env(), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    start = run_pair(args(store, tmp_path / "two"), tmp_path, "two")
    assert start["block"] == {"rows": [0, 32], "checkpoints": [0, 3]}
    assert_same_export(tmp_path / "one", tmp_path / "two")


def test_two_processes_owning_half_the_snapshots_match_one(planted_setup_c4, tmp_path):
    store, _ = planted_setup_c4
    one = args(store, tmp_path / "one") + ["--config.reader.shards=1"]
    single = subprocess.run(one, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    two = args(store, tmp_path / "two") + ["--config.reader.shards=1", "--config.mesh.data=1",
                                           "--config.mesh.snapshot=2"]
    start = run_pair(two, tmp_path, "two")
    assert start["mesh"] == {"data": 1, "snapshot": 2, "latent": 1}
    assert start["block"] == {"rows": [0, 64], "checkpoints": [0, 2]}  # process 0 reads only its 2 checkpoints
    assert_same_export(tmp_path / "one", tmp_path / "two")
