"""Spliced evaluation: a perfect reconstruction costs nothing, a zero one costs the zero ablation."""

import jax.numpy as jnp
import numpy as np
import pytest

from lm_fixtures import tiny_gpt_neox
from crosscoder_jax import crosscoder as cc_lib, models
from crosscoder_jax.synthetic import grammar
from crosscoder_jax.analysis.evaluate import evaluate, table
from crosscoder_jax.crosscoder.export import Crosscoder


def identity_crosscoder(C, D, zero_decoder=False):
    """ReLU latents (c, d, +/-): f = relu(+x), relu(-x); decoding x = relu(x) - relu(-x) is exact."""
    F = 2 * C * D
    W_enc = np.zeros((C, D, F), np.float32)
    W_dec = np.zeros((F, C, D), np.float32)
    for c in range(C):
        for d in range(D):
            for s, sign in enumerate((1.0, -1.0)):
                i = (c * D + d) * 2 + s
                W_enc[c, d, i] = sign
                W_dec[i, c, d] = 0.0 if zero_decoder else sign
    spec = cc_lib.Spec(C, D, F, activation="l1")
    params = {"W_enc": jnp.asarray(W_enc), "b_enc": jnp.zeros(F), "W_dec": jnp.asarray(W_dec),
              "b_dec": jnp.zeros((C, D))}
    return Crosscoder(params, {}, spec, np.array([0.5, 2.0]), ["a", "b"], {})


@pytest.fixture(scope="module")
def two_lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return [models.load(tiny_gpt_neox(root / f"m{i}", seed=10 + i)) for i in range(2)]


def test_perfect_reconstruction_has_zero_delta_ce(two_lms):
    ctx = grammar.batch(3, 0, 8, 16)
    res = evaluate(two_lms, ["a", "b"], identity_crosscoder(2, 32), ctx, layer=1, batch_size=4, show_progress=False)
    for name, m in res["checkpoints"].items():
        assert abs(m["delta_ce"]) < 1e-4 and m["fvu"] < 1e-8, (name, m)
        assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
        assert abs(m["ce_zero_ablation"] - m["ce_clean"]) > 1e-3  # the ablation does something
    assert res["tokens"] == 8 * 15
    assert "| a |" in table(res)


def test_zero_reconstruction_costs_the_zero_ablation(two_lms):
    ctx = grammar.batch(4, 0, 8, 16)
    res = evaluate(two_lms, ["a", "b"], identity_crosscoder(2, 32, zero_decoder=True), ctx, layer=1, batch_size=8,
                   show_progress=False)
    for m in res["checkpoints"].values():
        assert m["delta_ce"] == pytest.approx(m["ce_zero_ablation"] - m["ce_clean"], rel=1e-5)
        assert m["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-5)
        assert m["fvu"] > 0.99
