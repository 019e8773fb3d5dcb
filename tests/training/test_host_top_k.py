"""The host top-k kernel against `lax.top_k`: same values, same positions, same tie order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from crosscoder_jax.crosscoder.activations import select
from crosscoder_jax.runtime import host_top_k


def _cases():
    rng = np.random.default_rng(0)
    yield "normal", rng.standard_normal((257, 1024)), 32
    yield "k not dividing n", rng.standard_normal((64, 512)), 33
    yield "ties", rng.integers(0, 4, (200, 300)), 17
    yield "all equal", np.ones((8, 40)), 9
    yield "negative", -rng.exponential(size=(50, 77)), 5
    yield "zeros and positives", np.maximum(rng.standard_normal((128, 256)) - 1.5, 0), 40
    yield "k = n", rng.standard_normal((6, 7)), 7
    yield "k = 1", rng.standard_normal((30, 100)), 1
    yield "huge and tiny", rng.choice([0.0, 1e-40, 3e38, 1.0, -3e38], (40, 64)), 20


@pytest.mark.parametrize("name,x,k", list(_cases()), ids=[c[0] for c in _cases()])
def test_matches_lax_top_k(name, x, k):
    x = np.asarray(x, np.float32)
    vals, idx = host_top_k.top_k_host(x, k)
    ref_vals, ref_idx = lax.top_k(jnp.asarray(x), k)
    np.testing.assert_array_equal(idx, np.asarray(ref_idx))
    np.testing.assert_array_equal(vals, np.asarray(ref_vals))
    assert vals.dtype == np.float32 and idx.dtype == np.int32


def test_nan_rows_give_valid_positions():
    rng = np.random.default_rng(1)
    x = np.where(rng.random((64, 100)) < 0.9, np.nan, rng.standard_normal((64, 100))).astype(np.float32)
    x[0] = np.nan
    _, idx = host_top_k.top_k_host(x, 12)
    assert idx.min() >= 0 and idx.max() < 100
    assert all(len(set(row)) == 12 for row in idx.tolist())  # k distinct positions a row


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        host_top_k.top_k_host(np.zeros((2, 3), np.float32), 4)


def test_in_jit_under_grad_and_switch(monkeypatch):
    """Traced in a jitted, differentiated program it gives lax's numbers (values without gradient);
    CROSSCODER_HOST_TOP_K=0 puts lax.top_k back."""
    assert host_top_k.available()  # one CPU device in the default test run
    x = jax.random.normal(jax.random.key(0), (300, 640))

    def loss(x):
        vals, idx = host_top_k.top_k(x, 20)
        return jnp.sum(x[jnp.arange(300)[:, None], idx]) + 0 * jnp.sum(vals)

    g = jax.jit(jax.grad(loss))(x)
    _, ref_idx = lax.top_k(x, 20)
    expect = np.zeros(x.shape, np.float32)
    np.put_along_axis(expect, np.asarray(ref_idx), 1.0, axis=1)
    np.testing.assert_array_equal(np.asarray(g), expect)
    hlo = jax.jit(lambda x: host_top_k.top_k(x, 20)).lower(x).as_text()
    assert "callback" in hlo
    monkeypatch.setenv("CROSSCODER_HOST_TOP_K", "0")
    assert not host_top_k.available()
    assert "callback" not in jax.jit(lambda x: host_top_k.top_k(x, 21)).lower(x).as_text()


def test_row_blocks_same_with_either_top_k(monkeypatch):
    """The per-row selection of the train step gives the same blocks, threshold and listing."""
    rng = np.random.default_rng(2)
    v = jnp.asarray(np.maximum(rng.standard_normal((512, 4096)), 0), jnp.float32)
    k = jnp.full((512,), 16, jnp.int32)
    fast = jax.jit(lambda v: select.row_blocks(v, k, 16))(v)
    monkeypatch.setenv("CROSSCODER_HOST_TOP_K", "0")
    slow = jax.jit(lambda v: select.row_blocks(v, k, 16))(v)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
