"""Helpers of the tests that run the launch scripts as separate processes: a two-process job on
localhost (jax.distributed over gloo), the tiny training command, live-activation flags."""

import json
import socket
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

from conftest import ROOT, subprocess_env
from lm_fixtures import tiny_gpt_neox


def free_port():
    """A TCP port free on 127.0.0.1 now (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(store, workdir):
    """`launch.train` over `store` at a tiny size (12 steps, saves at 6), for subprocess tests."""
    return [sys.executable, "-m", "launch.train", "--config=configs/crosscoder.py",
            f"--config.activations={store}", f"--config.workdir={workdir}", "--config.dict_size=64",
            "--config.k=4", "--config.batch_size=64", "--config.steps=12", "--config.lr=1e-3",
            "--config.save_every=6", "--config.log_every=4", "--config.reader.shards=2", "--config.progress=False",
            "--config.dead_tokens=256", "--config.threshold_start_step=4"]


def run_pair(cmd, tmp_path, name):
    """Runs `cmd` as processes 0 and 1 of a two-process job; returns the run's start record."""
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
    """The two runs exported the same crosscoder (relative 1e-5 per tensor)."""
    a = load_file(str(a_dir / "crosscoder.safetensors"))
    b = load_file(str(b_dir / "crosscoder.safetensors"))
    assert set(a) == set(b)
    for k in a:
        rel = np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(a[k]), 1e-30)
        assert rel < 1e-5, (k, rel)


def live_args(tmp_path):
    """The activations flags of a live run over two tiny random checkpoints (48 contexts of 16)."""
    series = [str(tiny_gpt_neox(tmp_path / f"step{i}", seed=i)) for i in range(2)]
    return ("live", "--config.live.model=tiny", f"--config.live.checkpoints={','.join(series)}",
            "--config.live.layer=1", "--config.live.n_contexts=48", "--config.live.context_len=16",
            "--config.live.chunk_contexts=4", "--config.live.batch_size=4", "--config.live.dtype=bfloat16")
