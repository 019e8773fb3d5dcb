"""The host kernels against their references: the top-k against `lax.top_k` (same values, positions
and tie order), the row gathers and scatter-adds against float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from crosscoder_jax.crosscoder.activations import select
from crosscoder_jax.runtime import host_calls, host_kernels


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
    vals, idx = host_kernels.top_k_host(x, k)
    ref_vals, ref_idx = lax.top_k(jnp.asarray(x), k)
    np.testing.assert_array_equal(idx, np.asarray(ref_idx))
    np.testing.assert_array_equal(vals, np.asarray(ref_vals))
    assert vals.dtype == np.float32 and idx.dtype == np.int32


def test_nan_rows_give_valid_positions():
    rng = np.random.default_rng(1)
    x = np.where(rng.random((64, 100)) < 0.9, np.nan, rng.standard_normal((64, 100))).astype(np.float32)
    x[0] = np.nan
    _, idx = host_kernels.top_k_host(x, 12)
    assert idx.min() >= 0 and idx.max() < 100
    assert all(len(set(row)) == 12 for row in idx.tolist())  # k distinct positions a row


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        host_kernels.top_k_host(np.zeros((2, 3), np.float32), 4)


def test_in_jit_under_grad_and_switch(monkeypatch):
    """Traced in a jitted, differentiated program it gives lax's numbers (values without gradient);
    CROSSCODER_HOST_KERNELS=0 puts lax.top_k back."""
    assert host_calls.available()  # one CPU device in the default test run
    x = jax.random.normal(jax.random.key(0), (300, 640))

    def loss(x):
        vals, idx = host_calls.top_k(x, 20)
        return jnp.sum(x[jnp.arange(300)[:, None], idx]) + 0 * jnp.sum(vals)

    g = jax.jit(jax.grad(loss))(x)
    _, ref_idx = lax.top_k(x, 20)
    expect = np.zeros(x.shape, np.float32)
    np.put_along_axis(expect, np.asarray(ref_idx), 1.0, axis=1)
    np.testing.assert_array_equal(np.asarray(g), expect)
    hlo = jax.jit(lambda x: host_calls.top_k(x, 20)).lower(x).as_text()
    assert "crosscoder_jax_host_top_k" in hlo
    monkeypatch.setenv("CROSSCODER_HOST_KERNELS", "0")
    assert not host_calls.available()
    assert "crosscoder_jax_host" not in jax.jit(lambda x: host_calls.top_k(x, 21)).lower(x).as_text()


def test_row_blocks_same_with_either_top_k(monkeypatch):
    """The per-row selection of the train step gives the same blocks, threshold and listing."""
    rng = np.random.default_rng(2)
    v = jnp.asarray(np.maximum(rng.standard_normal((512, 4096)), 0), jnp.float32)
    k = jnp.full((512,), 16, jnp.int32)
    fast = jax.jit(lambda v: select.row_blocks(v, k, 16))(v)
    monkeypatch.setenv("CROSSCODER_HOST_KERNELS", "0")
    slow = jax.jit(lambda v: select.row_blocks(v, k, 16))(v)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("bf16", [False, True])
def test_row_kernels_match_numpy(bf16):
    """Entries in any order (rows repeated, cols repeated), only the first n counted; W read as
    float32 or as bfloat16 bits."""
    rng = np.random.default_rng(3)
    B, F, K, N, n = 37, 50, 24, 300, 261
    rows, cols = rng.integers(0, B, N).astype(np.int32), rng.integers(0, F, N).astype(np.int32)
    v = rng.standard_normal(N).astype(np.float32)
    W = rng.standard_normal((F, K)).astype(np.float32)
    if bf16:
        W = np.asarray(jnp.asarray(W).astype(jnp.bfloat16).astype(jnp.float32))
        Wk = np.asarray(lax.bitcast_convert_type(jnp.asarray(W).astype(jnp.bfloat16), jnp.uint16))
    else:
        Wk = W
    g, start = rng.standard_normal((B, K)).astype(np.float32), rng.standard_normal((F, K)).astype(np.float32)
    f = np.zeros((B, F))
    np.add.at(f, (rows[:n], cols[:n]), v[:n])  # the codes the entries stand for
    W64, g64 = W.astype(np.float64), g.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host_kernels.gather_sum_host(v, Wk, rows, cols, n, B), f @ W64, **tol)
    dv, dW = host_kernels.decoder_grads_host(v, Wk, rows, cols, n, g, start)
    np.testing.assert_allclose(dW, start + f.T @ g64, **tol)
    np.testing.assert_allclose(dv[:n], np.einsum("nk,nk->n", W64[cols[:n]], g64[rows[:n]]), **tol)
    assert np.all(dv[n:] == 0)
    dv2, none = host_kernels.decoder_grads_host(v, Wk, rows, cols, n, g, weight_grad=False)
    assert none is None and np.array_equal(dv2, dv)
    np.testing.assert_allclose(host_kernels.scatter_rows_host(v, g, rows, cols, n, F), f.T @ g64, **tol)
    np.testing.assert_allclose(host_kernels.scatter_rows_host(v, g, rows, cols, n, F, start), start + f.T @ g64, **tol)


@pytest.mark.parametrize("bf16", [False, True])
def test_row_kernels_through_xla_match_numpy(bf16):
    """The kernels as XLA custom calls (reading XLA's buffers, adding into an aliased one) give the
    NumPy versions' numbers, with and without a buffer to add to and a weight gradient."""
    rng = np.random.default_rng(4)
    B, F, K, N, n = 33, 40, 16, 200, 170
    rows, cols = rng.integers(0, B, N).astype(np.int32), rng.integers(0, F, N).astype(np.int32)
    v = rng.standard_normal(N).astype(np.float32)
    W = jnp.asarray(rng.standard_normal((F, K)), jnp.float32)
    Wk = lax.bitcast_convert_type(W.astype(jnp.bfloat16), jnp.uint16) if bf16 else W
    g, start = rng.standard_normal((B, K)).astype(np.float32), rng.standard_normal((F, K)).astype(np.float32)
    got = jax.jit(lambda *a: host_calls.gather_sum(*a, B))(v, Wk, rows, cols, n)
    np.testing.assert_array_equal(got, host_kernels.gather_sum_host(v, np.asarray(Wk), rows, cols, n, B))
    for init in (None, start):
        dv, dW = jax.jit(lambda *a: host_calls.decoder_grads(*a, True))(v, Wk, rows, cols, n, g, init)
        want_dv, want_dW = host_kernels.decoder_grads_host(v, np.asarray(Wk), rows, cols, n, g, init)
        np.testing.assert_array_equal(dv, want_dv)
        np.testing.assert_array_equal(dW, want_dW)
        out = jax.jit(lambda *a: host_calls.scatter_rows(*a, F, init))(v, g, rows, cols, n)
        np.testing.assert_array_equal(out, host_kernels.scatter_rows_host(v, g, rows, cols, n, F, init))
    dv, none = jax.jit(lambda *a: host_calls.decoder_grads(*a, None, False))(v, Wk, rows, cols, n, g)
    assert none is None
    np.testing.assert_array_equal(dv, want_dv)
