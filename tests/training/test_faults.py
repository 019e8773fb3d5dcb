"""Faults and bad input a user meets: each ends in an error that names the problem
and the fix, and loses nothing already computed."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors import safe_open

from conftest import ROOT, small_config, subprocess_env
from crosscoder_jax.crosscoder.export import load_crosscoder
from crosscoder_jax.data.store import Store, StoreDamaged, create_store
from crosscoder_jax.data.tasks import TaskError, read_jsonl
from crosscoder_jax.models.hf import CheckpointError, resolve
from crosscoder_jax.runtime.runlog import MetricsLog
from crosscoder_jax.training import sharding
from crosscoder_jax.training.train import TrainingError, train
from crosscoder_jax.training.workdir import WorkdirBusy, WorkdirLock


def _params(workdir):
    with safe_open(str(workdir / "crosscoder.safetensors"), "numpy") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def _copy_store(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_deleted_chunk_is_an_error_before_and_while_reading(planted_setup, tmp_path):
    store = _copy_store(planted_setup[0], tmp_path / "s")
    opened = Store(store)
    os.remove(store / "activations" / "c" / "2" / "0" / "0")
    with pytest.raises(StoreDamaged, match=r"chunk\(s\) 2 \(rows 512:768\).*missing from the store.*harvest the store again"):
        opened.read_chunks([2])  # while reading: a store opened before the file went
    with pytest.raises(StoreDamaged, match=r"chunk\(s\) 2 "):
        Store(store)  # before reading
    with pytest.raises(StoreDamaged):
        train(small_config(store, tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # refused before the workdir was made


def test_large_chunks_are_found_and_their_loss_too(tmp_path):
    """Chunks above tensorstore's read-chunk size (it reads them in smaller pieces) are checked by
    their zarr chunk shape."""
    w = create_store(tmp_path / "l", checkpoints=["a", "b"], d_model=1024, n_tokens=2048, chunk_size=1024,
                     dtype="bfloat16")
    for i in range(2):
        w.write_chunk(i, np.ones((1024, 2, 1024), np.float32))
    store = Store(tmp_path / "l")
    assert store.chunk_size == 1024 and store.missing_chunks(2) == []
    os.remove(tmp_path / "l" / "activations" / "c" / "1" / "1" / "0")
    assert store.missing_chunks(2) == [1]


def test_store_of_zeros_is_not_missing(tmp_path):
    w = create_store(tmp_path / "z", checkpoints=["a"], d_model=4, n_tokens=8, chunk_size=4)
    for i in range(2):
        w.write_chunk(i, np.zeros((4, 1, 4), np.float32))
    np.testing.assert_array_equal(Store(tmp_path / "z").read_chunks([0, 1])[1], 0)


def test_failure_keeps_its_checkpoint_and_never_hangs(tmp_path):
    """NaN rows in a store with recorded scales: the error names a checkpoint that exists (the save in
    flight is finished), no temporary directory is left, and a rerun fails the same way at once."""
    x = np.random.default_rng(0).normal(size=(2048, 2, 8)).astype(np.float32)
    x[1100:1200] = np.nan  # chunk 4 of 256-row chunks
    w = create_store(tmp_path / "s", checkpoints=["a", "b"], d_model=8, n_tokens=2048, chunk_size=256,
                     scales=[1.0, 1.0])
    for i in range(8):
        w.write_chunk(i, x[i * 256:(i + 1) * 256])
    cmd = [sys.executable, "-m", "launch.train", "--config=configs/crosscoder.py",
           f"--config.activations={tmp_path / 's'}", f"--config.workdir={tmp_path / 'w'}", "--config.dict_size=64",
           "--config.k=4", "--config.batch_size=64", "--config.steps=200", "--config.save_every=2",
           "--config.progress=False", "--config.reader.window_chunks=1",
           "--config.center=False"]  # the centring estimate would meet the NaN rows before step 1
    for attempt in range(2):
        out = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert out.returncode != 0
        text = out.stdout + out.stderr
        assert "non-finite activations" in text and "chunk(s) [4]" in text, text[-2000:]
        step = int(text.split("last good checkpoint is step ")[1].split()[0])
        ckpts = tmp_path / "w" / "checkpoints"
        assert (ckpts / str(step)).is_dir(), sorted(os.listdir(ckpts))
        assert not [p for p in os.listdir(ckpts) if "tmp" in p], sorted(os.listdir(ckpts))


def test_second_writer_is_refused_and_a_stale_lock_is_not(planted_setup, tmp_path):
    store, _ = planted_setup
    cfg = small_config(store, tmp_path / "w", steps=4)
    with WorkdirLock(tmp_path / "w"):
        with pytest.raises(WorkdirBusy, match=rf"in use by another run \(pid {os.getpid()} on "):
            train(cfg)
    # a lock file left by a killed run (no live holder) does not block
    (tmp_path / "w" / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": 0, "argv": []}))
    train(cfg)
    assert (tmp_path / "w" / "crosscoder.safetensors").exists()


def test_config_is_checked_before_it_is_written(planted_setup, tmp_path):
    store, _ = planted_setup
    with pytest.raises(ValueError, match="k=100 must lie in"):
        train(small_config(store, tmp_path / "w", k=100))
    train(small_config(store, tmp_path / "w", steps=4))  # the corrected command is not a "mismatch"
    saved = (tmp_path / "w" / "config.json").read_text()
    with pytest.raises(ValueError, match=r"cannot resume .* dict_size"):
        train(small_config(store, tmp_path / "w", steps=8, dict_size=128, resume_anyway=True))
    assert (tmp_path / "w" / "config.json").read_text() == saved
    assert (tmp_path / "w" / "checkpoints" / "4").is_dir()  # the good checkpoint stays where it was
    train(small_config(store, tmp_path / "w", steps=4))  # and the original command still runs


def test_torn_metrics_line_is_dropped_on_resume(planted_setup, tmp_path):
    store, _ = planted_setup
    train(small_config(store, tmp_path / "w", stop_after=10))
    with open(tmp_path / "w" / "metrics.jsonl", "a") as fh:
        fh.write('{"time": 1.0, "step": 1')  # killed mid-write
    steps = lambda records: [r.get("step") for r in records if r.get("event") != "host_memory"]  # noqa: E731
    assert steps(MetricsLog(tmp_path / "w" / "metrics.jsonl").read()) == [0, 5, 10]
    train(small_config(store, tmp_path / "w"))
    lines = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    assert steps(json.loads(l) for l in lines) == [0, 5, 10, 10, 15, 20]


@pytest.mark.parametrize("damage", [pytest.param("truncate", marks=pytest.mark.slow), "metadata"])
def test_corrupt_latest_checkpoint_falls_back(planted_setup, tmp_path, damage):
    store, _ = planted_setup
    train(small_config(store, tmp_path / "one"))
    train(small_config(store, tmp_path / "w", stop_after=15, save_every=5, max_to_keep=3))
    latest = tmp_path / "w" / "checkpoints" / "15"
    if damage == "metadata":
        os.remove(latest / "_CHECKPOINT_METADATA")
        for p in latest.rglob("_METADATA"):
            os.remove(p)
    else:
        for p in latest.rglob("*"):
            if p.is_file() and p.stat().st_size > 64 and "d/" in str(p.relative_to(latest)).replace(os.sep, "/"):
                with open(p, "r+b") as fh:
                    fh.truncate(p.stat().st_size // 2)
    train(small_config(store, tmp_path / "w", save_every=5, max_to_keep=3))
    log = MetricsLog(tmp_path / "w" / "metrics.jsonl").read()
    warn = [r["message"] for r in log if r.get("event") == "warning"]
    assert warn and "checkpoint step 15" in warn[0] and "falling back" in warn[0], log
    assert [r["step"] for r in log if r.get("event") == "resume"] == [10]
    a, b = _params(tmp_path / "one"), _params(tmp_path / "w")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_full_disk_names_path_and_space(planted_setup, tmp_path, monkeypatch):
    store, _ = planted_setup

    def full(self, step, *a, **kw):
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(TrainingError, match=r"disk holding .*checkpoints is full: a checkpoint needs about "
                                            r"[0-9.]+ GiB \([0-9.]+ GiB free there now\)"):
        train(small_config(store, tmp_path / "w"))


def test_small_input_errors(planted_setup, tmp_path):
    store, _ = planted_setup
    with pytest.raises(ValueError, match=r"batch_size 8192 is larger than the store \(4096 rows"):
        train(small_config(store, tmp_path / "b", batch_size=8192))
    with pytest.raises(CheckpointError, match=r"checkpoint directory .*nowhere/step1000 does not exist"):
        resolve(tmp_path / "nowhere" / "step1000")
    bad = tmp_path / "task.jsonl"
    bad.write_text('{"a": 1}\n\n{"b": 2,\n')
    with pytest.raises(TaskError, match=rf"{bad}, line 3: not valid JSON"):
        read_jsonl(bad)
    from crosscoder_jax.data.store import StoreError
    with pytest.raises(StoreError, match=r"not an activation store.*layout in docs/interfaces.md"):
        Store(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"the other axes take 3 devices, which does not divide the 1"):
        sharding.make_mesh(-1, 1, 3, devices=sharding.jax.devices()[:1])


def test_export_file_mode_and_truncated_file(planted_setup, tmp_path):
    store, _ = planted_setup
    train(small_config(store, tmp_path / "w", steps=4))
    path = tmp_path / "w" / "crosscoder.safetensors"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(ValueError, match=rf"{path} cannot be read as a crosscoder.*truncated"):
        load_crosscoder(path)
