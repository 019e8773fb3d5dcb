"""Multi-host: two processes on localhost (jax.distributed over gloo, CPU) train the same crosscoder as
one process: splitting the rows (each reads its reader shard) or the snapshots (each reads its own
checkpoints' columns of the store, or computing only its checkpoints' live activations)."""

import json
import subprocess

import pytest

from conftest import ROOT, subprocess_env
from process_fixtures import assert_same_export, live_args, run_pair, train_args as args


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


@pytest.mark.slow
@pytest.mark.parametrize("split", ["rows", "snapshots"])
def test_live_processes_match_one(tmp_path, split):
    """Live activations over two processes: each computes its own reader shard's chunks (rows) or
    runs (and reads the weights of) only its own checkpoint (a snapshot axis of 2); equal to one
    process running everything."""
    store, *flags = live_args(tmp_path)
    one = args(store, tmp_path / "one") + flags + (["--config.reader.shards=1"] if split == "snapshots" else [])
    single = subprocess.run(one, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    first = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["live"] == {"buffer": "device", "weights_read": [0, 1]}
    mesh = ["--config.reader.shards=1", "--config.mesh.data=1", "--config.mesh.snapshot=2"] if split == "snapshots" else []
    start = run_pair(args(store, tmp_path / "two") + flags + mesh, tmp_path, "two")
    if split == "snapshots":
        assert start["block"] == {"rows": [0, 64], "checkpoints": [0, 1]}
        assert start["live"] == {"buffer": "device", "weights_read": [0]}  # process 0 never read checkpoint 1
    else:
        assert start["block"] == {"rows": [0, 32], "checkpoints": [0, 2]}
    assert_same_export(tmp_path / "one", tmp_path / "two")
