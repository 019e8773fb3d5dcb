"""Parameters set from the data at init: the geometric median against a direct minimisation, b_dec
in a fresh run, the default lr, and old workdirs that predate b_dec_init."""

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from conftest import small_config
from crosscoder_jax.crosscoder.spec import default_lr
from crosscoder_jax.data.store import Store
from crosscoder_jax.training import init_data
from crosscoder_jax.training.runconfig import ConfigMismatch
from crosscoder_jax.training.train import make_optimizer, train


def test_geometric_median_minimises_the_summed_distance():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(300, 5)), 40 + rng.normal(size=(40, 5))])  # 12% far outliers
    m = init_data.geometric_median(X)
    cost = lambda y: np.linalg.norm(X - y, axis=1).sum()  # noqa: E731
    best = minimize(cost, X.mean(0), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12,
                                                                  "maxiter": 40000, "maxfev": 40000}).x
    assert cost(m) <= cost(best) + 1e-7
    np.testing.assert_allclose(m, best, atol=1e-4)
    assert np.linalg.norm(m) < 3 < np.linalg.norm(X.mean(0))  # robust where the mean is pulled away
    # in one dimension it is the ordinary median; a row equal to the iterate does not break it
    np.testing.assert_allclose(init_data.geometric_median(np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])), [2.0],
                               atol=1e-6)


def test_b_dec_for_reads_the_normalised_rows_of_each_checkpoint(planted_setup):
    store_path, _ = planted_setup
    store = Store(store_path)
    scales = np.array([0.5, 2.0, 1.5])
    mean = init_data.b_dec_for(store, "mean", scales, max_rows=store.n_tokens)
    rows = np.asarray(store.read_rows(0, store.n_tokens), np.float64)
    np.testing.assert_allclose(mean, rows.mean(0) * scales[:, None], rtol=1e-10, atol=1e-12)
    med = init_data.b_dec_for(store, "median", scales, columns=slice(1, 2), max_rows=store.n_tokens)
    assert not med[0].any() and not med[2].any()  # other processes' checkpoints stay 0
    np.testing.assert_allclose(med[1], init_data.geometric_median(rows[:, 1] * 2.0), atol=1e-9)
    assert not init_data.b_dec_for(store, "zero", scales).any()
    with pytest.raises(ValueError, match="b_dec_init 'medain' is not one of zero, mean, median"):
        init_data.b_dec_for(store, "medain", scales)


def test_a_run_starts_b_dec_at_the_median(planted_setup, tmp_path):
    store_path, _ = planted_setup
    store = Store(store_path)
    # lr 1e-9: one Adam step moves b_dec by ~1e-9, so the exported b_dec is its init
    train(small_config(store_path, tmp_path / "m", steps=1, lr=1e-9, b_dec_init="median", activation="topk"))
    from crosscoder_jax.crosscoder.export import load_crosscoder
    cc = load_crosscoder(tmp_path / "m" / "crosscoder.safetensors")
    scales = np.asarray(cc.scales, np.float64)
    want = init_data.b_dec_for(store, "median", scales, seed=0)
    np.testing.assert_allclose(np.asarray(cc.params["b_dec"]), want, atol=1e-5)
    assert np.abs(want).max() > 0.05  # the planted data has an offset, so this is not b_dec = 0
    with pytest.raises(ValueError, match="b_dec_init='mid'"):
        train(small_config(store_path, tmp_path / "bad", b_dec_init="mid"))
    assert not (tmp_path / "bad").exists()


def test_default_lr_follows_the_dictionary_size():
    c = small_config("unused", "unused", lr=0.0, dict_size=4 * 2 ** 14)
    _, schedule = make_optimizer(c)
    assert float(schedule(0)) == pytest.approx(1e-4) == default_lr(4 * 2 ** 14)
    assert default_lr(2 ** 14) == pytest.approx(2e-4)


def test_a_workdir_from_before_b_dec_init_resumes_with_the_default(planted_setup, tmp_path):
    store_path, _ = planted_setup
    train(small_config(store_path, tmp_path / "old", stop_after=4, save_every=2))
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    del saved["b_dec_init"]  # as written before the field existed (those runs started at zero)
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    train(small_config(store_path, tmp_path / "old"))
    assert (tmp_path / "old" / "crosscoder.safetensors").exists()
    with pytest.raises(ConfigMismatch, match="b_dec_init: 'zero' in the workdir, 'median' now"):
        train(small_config(store_path, tmp_path / "old", b_dec_init="median"))
