"""The input shift (`config.center`): estimated as the mean of the scaled rows, invisible to a run
(an offset added to the data changes nothing), absorbed at export, and old checkpoints without it."""

import json
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import small_config
from crosscoder_jax.data.store import Store, create_store
from crosscoder_jax.training import init_data
from crosscoder_jax.training.runconfig import ConfigMismatch
from crosscoder_jax.training.train import train
from test_train import read_params


def _copy_store(src: Store, path, scales, offset_CD=None) -> Store:
    rows = np.asarray(src.read_rows(0, src.n_tokens), np.float32)
    if offset_CD is not None:
        rows = rows + offset_CD[None].astype(np.float32)
    w = create_store(path, checkpoints=src.meta["checkpoints"], d_model=src.d_model, n_tokens=src.n_tokens,
                     chunk_size=src.chunk_size, scales=list(scales))
    for i in range(w.n_chunks):
        lo, hi = w.chunk_rows(i)
        w.write_chunk(i, rows[lo:hi])
    return Store(path)


def test_shift_is_the_mean_and_b_dec_is_read_after_it(planted_setup):
    store = Store(planted_setup[0])
    scales = np.array([0.5, 2.0, 1.5])
    rows = np.asarray(store.read_rows(0, store.n_tokens), np.float64) * scales[None, :, None]
    cfg = small_config(store.path, "unused", b_dec_init="median")
    shift, b_dec = init_data.shift_and_b_dec(store, cfg, scales, columns=slice(1, 3))
    # the planted store is smaller than the sample, so the estimates read every row
    assert not shift[0].any() and not b_dec[0].any()  # another process's checkpoint
    np.testing.assert_allclose(shift[1:], rows[:, 1:].mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b_dec[2], init_data.geometric_median(rows[:, 2]) - shift[2], atol=1e-8)
    cfg.center, cfg.b_dec_init = False, "zero"
    assert init_data.shift_and_b_dec(store, cfg, scales) == (None, None)


def test_an_offset_in_the_data_does_not_change_a_centred_run(planted_setup, tmp_path):
    """The same rows plus a large constant offset per checkpoint: centred, the run follows the same
    FVU and exports the same codes (biases carrying the offset); uncentred, it learns worse."""
    src = Store(planted_setup[0])
    norm = float(np.linalg.norm(np.asarray(src.read_rows(0, 256), np.float32), axis=-1).mean())
    off = np.random.default_rng(0).normal(size=(src.n_checkpoints, src.d_model))
    off *= 3 * norm / np.linalg.norm(off, axis=-1, keepdims=True)
    scales = src.estimate_scales()  # recorded in both copies: the same normalisation
    plain = _copy_store(src, tmp_path / "plain", scales)
    shifted = _copy_store(src, tmp_path / "shifted", scales, off)
    runs = {}
    for name, store, center in (("plain", plain, True), ("shifted", shifted, True), ("uncentred", shifted, False)):
        wd = tmp_path / f"w_{name}"
        train(small_config(store.path, wd, activation="topk", center=center, steps=40))
        runs[name] = (json.loads((wd / "summary.json").read_text()), read_params(wd))
    fvu = {name: float(np.mean(s["fvu"])) for name, (s, _) in runs.items()}
    assert fvu["shifted"] == pytest.approx(fvu["plain"], rel=0.02), fvu
    assert fvu["uncentred"] > 1.3 * fvu["shifted"], fvu
    (_, a), (_, b) = runs["plain"], runs["shifted"]
    np.testing.assert_allclose(b["W_enc"], a["W_enc"], atol=2e-3)
    np.testing.assert_allclose(b["b_dec"], a["b_dec"] + off, atol=2e-3)  # the export reads the raw rows
    want_b_enc = a["b_enc"] - np.einsum("cd,cdf->f", off, a["W_enc"])
    np.testing.assert_allclose(b["b_enc"], want_b_enc, atol=2e-2 * np.abs(want_b_enc).max())


def test_a_checkpoint_from_before_the_shift_resumes(planted_setup, tmp_path):
    """A workdir written before the shift existed (no `shift` in its checkpoints, no `center` in its
    config) resumes unshifted, to the same result as one uninterrupted uncentred run."""
    store = planted_setup[0]
    train(small_config(store, tmp_path / "one", center=False))
    old = tmp_path / "old"
    train(small_config(store, old, center=False, stop_after=10, save_every=5))
    mngr = ocp.CheckpointManager((old / "checkpoints").absolute(), item_handlers=ocp.StandardCheckpointHandler())
    steps = list(mngr.all_steps())
    trees = {s: mngr.restore(s) for s in steps}
    mngr.close()
    for s, tree in trees.items():
        assert not np.any(tree.pop("shift"))
        shutil.rmtree(old / "checkpoints" / str(s))
    mngr = ocp.CheckpointManager((old / "checkpoints").absolute(), item_handlers=ocp.StandardCheckpointHandler())
    for s, tree in trees.items():
        mngr.save(s, args=ocp.args.StandardSave(tree))
    mngr.wait_until_finished()
    mngr.close()
    saved = json.loads((old / "config.json").read_text())
    del saved["center"]
    (old / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigMismatch, match="center: False in the workdir, True now"):
        train(small_config(store, old))
    train(small_config(store, old, center=False))
    a, b = read_params(tmp_path / "one"), read_params(old)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
