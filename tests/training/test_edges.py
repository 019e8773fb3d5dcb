"""Edges a new user meets after a fault: a file whose tensors do not match its spec, a run that
diverged before its first checkpoint, a moved workdir, a damaged store.json or checkpoint, and an
export that is refused."""

import json
import shutil

import jax
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from conftest import small_config
from crosscoder_jax import crosscoder as cc
from crosscoder_jax.crosscoder.export import load_crosscoder, save_crosscoder
from crosscoder_jax.crosscoder.interchange import InterchangeError, export_to
from crosscoder_jax.data.store import Store, StoreError
from crosscoder_jax.runtime.runlog import MetricsLog
from crosscoder_jax.training.train import TrainingError, train
from crosscoder_jax.training.workdir import _first_line


def _saved(tmp_path, activation="topk", threshold=None):
    spec = cc.Spec(3, 16, 64, activation=activation, k=4)
    params = cc.init_params(spec, jax.random.key(0))
    state = dict(cc.activations.get(activation).init_state(spec))
    if threshold is not None:
        state["threshold"] = np.float32(threshold)
    path = tmp_path / "cc.safetensors"
    save_crosscoder(path, params, state, spec, [1.0, 2.0, 0.5], ["a", "b", "c"])
    return path


def _rewrite(path, **changes):
    with safe_open(str(path), "numpy") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    tensors.update(changes)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("name,bad,expected", [
    ("W_dec", np.zeros((64, 3, 15), np.float32), r"tensor W_dec has shape \[64, 3, 15\], the spec needs \[64, 3, 16\]"),
    ("b_dec", np.zeros((1, 16), np.float32), r"tensor b_dec has shape \[1, 16\], the spec needs \[3, 16\]"),
    ("b_enc", np.zeros((64,), np.float64), r"tensor b_enc has dtype float64, the format stores float32"),
])
def test_tensors_are_checked_against_the_files_spec(tmp_path, name, bad, expected):
    path = _saved(tmp_path)
    load_crosscoder(path)  # the file as written loads
    _rewrite(path, **{name: bad})
    with pytest.raises(ValueError, match=rf"does not match its own spec \(C 3, D 16, F 64, topk\): {expected}"):
        load_crosscoder(path)


def test_a_run_that_diverged_before_its_first_checkpoint_is_replaced(planted_setup, tmp_path):
    store, _ = planted_setup
    with pytest.raises(TrainingError, match="non-finite loss"):
        train(small_config(store, tmp_path / "w", lr=1e36, save_every=100))
    assert (tmp_path / "w" / "config.json").exists()
    train(small_config(store, tmp_path / "w", lr=1e-3, save_every=100))  # the corrected command runs
    assert json.loads((tmp_path / "w" / "config.json").read_text())["lr"] == 1e-3
    events = [r.get("event") for r in MetricsLog(tmp_path / "w" / "metrics.jsonl").read() if r.get("event")]
    assert events.count("start") == 1 and "resume" not in events


def test_a_moved_workdir_resumes(planted_setup, tmp_path):
    store, _ = planted_setup
    train(small_config(store, tmp_path / "one"))
    train(small_config(store, tmp_path / "small_disk", stop_after=10, save_every=5))
    shutil.move(tmp_path / "small_disk", tmp_path / "big_disk")
    train(small_config(store, tmp_path / "big_disk", save_every=5))
    log = MetricsLog(tmp_path / "big_disk" / "metrics.jsonl").read()
    assert [r["step"] for r in log if r.get("event") == "resume"] == [10]
    assert json.loads((tmp_path / "big_disk" / "config.json").read_text())["workdir"] == str(tmp_path / "big_disk")
    a, b = load_crosscoder(tmp_path / "one" / "crosscoder.safetensors"), load_crosscoder(
        tmp_path / "big_disk" / "crosscoder.safetensors")
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


def test_a_damaged_store_json_is_named(planted_setup, tmp_path):
    store, _ = planted_setup
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    text = (copy / "store.json").read_text()
    (copy / "store.json").write_text(text[: len(text) // 2])
    with pytest.raises(StoreError, match=rf"{copy / 'store.json'} is not valid JSON \(.* at line \d+, column \d+\)"):
        Store(copy)


def test_a_checkpoint_error_is_quoted_readably():
    class Handler:
        def restore(self):
            pass

    e = ValueError(f"Failed to restore: {Handler().restore!r}\n  details follow")
    line = _first_line(e)
    assert line.startswith("ValueError: Failed to restore: ...") and "bound method" not in line
    assert _first_line(FileNotFoundError()) == "FileNotFoundError"


def test_a_refused_export_leaves_no_directory_and_says_where_the_file_came_from(tmp_path):
    loaded = load_crosscoder(_saved(tmp_path, activation="batchtopk"))  # no threshold: written through the API
    out = tmp_path / "export"
    with pytest.raises(InterchangeError, match=r"no inference threshold \(it was written through the API"):
        export_to(loaded, "paper", out)
    assert not out.exists()
    out.mkdir()  # a directory the user made stays
    with pytest.raises(InterchangeError, match="no inference threshold"):
        export_to(loaded, "dictionary_learning", out)
    assert out.is_dir()
