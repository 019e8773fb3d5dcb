"""Sparse decoding (kept entries only) against the dense matmul: values and gradients, the
fall-back when ties overflow the static bound, and whole training losses for topk and batchtopk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crosscoder_jax import crosscoder as cc
from crosscoder_jax.crosscoder import matmul, sparse_decode
from crosscoder_jax.crosscoder.activations import select


@pytest.fixture(autouse=True)
def _one_device(monkeypatch):
    """The sparse path is single-device only; keep it on even where XLA_FLAGS fakes several devices."""
    monkeypatch.setattr(select, "single_device", lambda: True)


def _codes(B=16, F=256, density=0.05, seed=0):
    rng = np.random.default_rng(seed)
    f = np.maximum(rng.normal(size=(B, F)), 0) * (rng.random((B, F)) < density)
    return jnp.asarray(f, jnp.float32), rng


def test_entries_lists_every_nonzero_in_order():
    f, _ = _codes()
    n = int(jnp.sum(f != 0))
    e = sparse_decode.entries(f, n + 3)
    want = np.flatnonzero(np.asarray(f))
    assert int(e.n) == n and bool(e.fits)
    np.testing.assert_array_equal(np.asarray(e.rows)[:n] * f.shape[1] + np.asarray(e.cols)[:n], want)
    assert np.all(np.asarray(e.rows)[n:] == f.shape[0] - 1)  # unused slots sorted last
    assert not bool(sparse_decode.entries(f, n - 1).fits)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("slack", [4, -3])  # room to spare; too little room: the dense fall-back
@pytest.mark.parametrize("chunk", [4096, 16])  # one loop step, or many
def test_sparse_decode_matches_dense(dtype, slack, chunk, monkeypatch):
    monkeypatch.setattr(sparse_decode, "_CHUNK", chunk)
    monkeypatch.setattr(sparse_decode, "MAX_DENSITY", 1.0)  # these small codes are 5% dense
    f, rng = _codes()
    W = jnp.asarray(rng.normal(size=(f.shape[1], 24)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(f.shape[0], 24)), jnp.float32)
    cap = int(jnp.sum(f != 0)) + slack

    def loss(f, W, sparse):
        out = sparse_decode.decode(f, W, cap, dtype) if sparse else matmul.matmul("bf,fk->bk", f, W, dtype)
        return jnp.sum(g * out)

    v1, (df1, dW1) = jax.value_and_grad(loss, argnums=(0, 1))(f, W, True)
    v0, (df0, dW0) = jax.value_and_grad(loss, argnums=(0, 1))(f, W, False)
    tol = 1e-5 if dtype == "float32" else 2e-3
    np.testing.assert_allclose(v1, v0, rtol=tol)
    np.testing.assert_allclose(dW1, dW0, rtol=tol, atol=tol)
    nz = np.asarray(f != 0)
    np.testing.assert_allclose(np.asarray(df1)[nz], np.asarray(df0)[nz], rtol=tol, atol=tol)
    if slack > 0:  # the sparse path passes no gradient to zero codes (exact for top-k masks)
        assert np.all(np.asarray(df1)[~nz] == 0)


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_training_loss_and_gradients_equal_dense(activation, monkeypatch):
    monkeypatch.setattr(sparse_decode, "MAX_DENSITY", 1.0)
    C, D, F, B = 2, 16, 128, 32
    kw = dict(activation=activation, k=4, k_aux=8, dead_tokens=1)
    dense, sparse = cc.Spec(C, D, F, **kw), cc.Spec(C, D, F, sparse_decode=True, **kw)
    params = cc.init_params(dense, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (B, C, D))
    dead = jnp.arange(F) % 3 == 0  # AuxK on: its decode stays dense on both sides

    def grads(spec):
        return jax.value_and_grad(lambda p: cc.loss_fn(p, {"threshold": jnp.float32(-1.0)}, x, spec, jnp.int32(0),
                                                       dead)[0])(params)

    (l0, g0), (l1, g1) = grads(dense), grads(sparse)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_dense_codes_take_the_dense_path():
    """Above MAX_DENSITY the dense matmul runs: its code gradient is nonzero at zero codes too."""
    f, rng = _codes(density=0.05)
    W = jnp.asarray(rng.normal(size=(f.shape[1], 24)), jnp.float32)
    df = jax.grad(lambda f: jnp.sum(sparse_decode.decode(f, W, f.size, "float32")))(f)
    assert np.all(np.asarray(df)[np.asarray(f == 0)] != 0)


def test_sparse_decode_needs_a_top_k_activation():
    with pytest.raises(ValueError, match="sparse_decode needs a top-k activation"):
        cc.Spec(2, 16, 128, activation="l1", sparse_decode=True)
