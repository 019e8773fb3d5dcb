"""Harvesting checkpoints into the store, resume, checks; spliced evaluation."""

import filecmp
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, subprocess_env
from lm_fixtures import tiny_gpt_neox
from configs.harvest import get_config
from crosscoder_jax import models
from crosscoder_jax.data.harvest import HarvestError, harvest
from crosscoder_jax.data.store import Store


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    return [tiny_gpt_neox(root / f"step{i}", seed=i) for i in range(3)]


def hconfig(out, ckpts, **kw):
    c = get_config()
    c.model, c.checkpoints, c.layer, c.out = "tiny", ",".join(str(p) for p in ckpts), 1, str(out)
    c.n_contexts, c.context_len, c.chunk_contexts, c.batch_size, c.progress = 24, 16, 8, 8, False
    for k, v in kw.items():
        c[k] = v
    return c


def test_store_equals_direct_forward_passes(series, tmp_path):
    out = harvest(hconfig(tmp_path / "s", series, dtype="float32"))
    store = Store(out)
    assert store.meta["checkpoints"] == ["step0", "step1", "step2"] and store.meta["layer"] == 1
    acts = store.read_rows(0, store.n_tokens)
    tokens = store.read_rows(0, store.n_tokens, "tokens")
    positions = store.read_rows(0, store.n_tokens, "positions")
    ctx = np.asarray(tokens).reshape(24, 15)
    assert positions[:15].tolist() == list(range(1, 16))  # BOS position dropped
    from crosscoder_jax.synthetic import grammar
    full = grammar.batch(0, 0, 24, 16)
    np.testing.assert_array_equal(ctx, full[:, 1:])
    for c, path in enumerate(series):
        lm = models.load(path)
        ref = models.residual_at(lm, jnp.asarray(full), jnp.ones(full.shape, jnp.int32), layer=1)
        np.testing.assert_allclose(acts[:, c].reshape(24, 15, -1), np.asarray(ref)[:, 1:], rtol=1e-5, atol=1e-5)
    assert len(store.meta["scales"]) == 3
    assert set(store.meta["health"]) == {"step0", "step1", "step2"}


@pytest.mark.slow  # the same resume runs in the default suite against S3 (test_object_store.py)
def test_kill_and_resume_is_byte_identical(series, tmp_path):
    def cmd(out):
        return [sys.executable, "-m", "launch.harvest", "--config=configs/harvest.py", "--config.model=tiny",
                f"--config.checkpoints={','.join(str(p) for p in series)}", "--config.layer=1",
                f"--config.out={out}", "--config.n_contexts=96", "--config.context_len=16",
                "--config.chunk_contexts=4", "--config.batch_size=4", "--config.progress=False"]

    env = subprocess_env()
    ref = subprocess.run(cmd(tmp_path / "ref"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    proc = subprocess.Popen(cmd(tmp_path / "k"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = tmp_path / "k" / "harvest_log.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Store(tmp_path / "k", require_complete=False).meta["progress"]["chunks_written"] < 24
    again = subprocess.run(cmd(tmp_path / "k"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    cmp = filecmp.dircmp(tmp_path / "ref", tmp_path / "k", ignore=["harvest_log.jsonl"])

    def same(d):
        assert not d.left_only and not d.right_only and not d.diff_files and not d.funny_files, \
            (d.left, d.diff_files, d.left_only, d.right_only)
        match, mismatch, errors = filecmp.cmpfiles(d.left, d.right, d.common_files, shallow=False)
        assert not mismatch and not errors
        for sub in d.subdirs.values():
            same(sub)

    same(cmp)


def test_changed_harvest_is_refused(series, tmp_path):
    harvest(hconfig(tmp_path / "s", series[:2]))
    with pytest.raises(HarvestError, match=r"layer: 1 in the store, 0 now"):
        harvest(hconfig(tmp_path / "s", series[:2], layer=0))
    with pytest.raises(HarvestError, match=r"checkpoints: \['step0', 'step1'\] in the store"):
        harvest(hconfig(tmp_path / "s", series))


def test_mismatched_checkpoints_fail_before_any_work(series, tmp_path):
    wide = tiny_gpt_neox(tmp_path / "wide", seed=5, hidden=48)
    with pytest.raises(HarvestError, match="disagree on .hidden size, layers."):
        harvest(hconfig(tmp_path / "s", [series[0], wide]))
    assert not (tmp_path / "s").exists()


def test_non_finite_activations_name_checkpoint_and_position(series, tmp_path):
    bad = tiny_gpt_neox(tmp_path / "nan", seed=7, nan_embedding=True)
    with pytest.raises(HarvestError, match=r"checkpoint nan gives non-finite activations .* position \d+"):
        harvest(hconfig(tmp_path / "s", [series[0], bad]))


def test_broken_checkpoint_is_flagged(series, tmp_path, capsys):
    broken = tiny_gpt_neox(tmp_path / "broken", seed=8, scale_out=300.0)
    out = harvest(hconfig(tmp_path / "s", [series[0], broken]))
    health = Store(out).meta["health"]
    assert not health["step0"]["flags"]
    assert any("worse than uniform" in f for f in health["broken"]["flags"])
    assert "WARNING checkpoint broken" in capsys.readouterr().out
