"""The sparse top-k step: its kernels against NumPy float64, and its loss and gradient against
autodiff of the dense loss (`core.loss_fn`) for topk and batchtopk, with and without AuxK, float32
and bf16 operands; ties past the room for them; where it applies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crosscoder_jax import crosscoder as cc
from crosscoder_jax.crosscoder import sparse_decode, sparse_step
from crosscoder_jax.runtime import host_calls


def _codes(B=16, F=256, density=0.05, seed=0):
    rng = np.random.default_rng(seed)
    f = np.maximum(rng.normal(size=(B, F)), 0) * (rng.random((B, F)) < density)
    return jnp.asarray(f, jnp.float32), rng


def test_entries_lists_every_nonzero_in_order():
    f, _ = _codes()
    n = int(jnp.sum(f != 0))
    e = jax.jit(sparse_decode.entries, static_argnums=1)(f, n + 3)
    want = np.flatnonzero(np.asarray(f))
    assert int(e.n) == n and int(e.count) == n
    np.testing.assert_array_equal(np.asarray(e.rows)[:n] * f.shape[1] + np.asarray(e.cols)[:n], want)
    assert np.all(np.asarray(e.rows)[n:] == f.shape[0] - 1)  # unused slots sorted last
    assert n > 64
    short = jax.jit(sparse_decode.entries, static_argnums=1)(f != 0, 64)  # a mask works too; too little room: the first 64
    assert int(short.count) == n and int(short.n) == 64
    np.testing.assert_array_equal(np.asarray(short.rows) * f.shape[1] + np.asarray(short.cols), want[:64])
    few_blocks = jax.jit(sparse_decode.entries, static_argnums=1)(f, 3)  # fewer listed blocks than nonzero ones
    assert int(few_blocks.count) == n and int(few_blocks.n) == 64


def test_entries_in_flat_blocks_equal_the_full_listing():
    f, rng = _codes(density=0.02)
    B, F, s = f.shape[0], f.shape[1], 16
    nz = np.asarray(f) != 0
    holding = np.flatnonzero(nz.reshape(B * F // s, s).any(-1))
    extra = rng.choice(np.setdiff1d(np.arange(B * F // s), holding), 5, replace=False)
    blk = np.sort(np.concatenate([holding, extra]))
    M = len(blk) + 9
    ids = np.concatenate([blk, np.zeros(9, int)])  # padding past n_blocks is ignored
    e = jax.jit(sparse_decode.entries_in_flat_blocks, static_argnums=(1, 4))(
        f, 4 * B, jnp.asarray(ids, jnp.int32), jnp.int32(len(blk)), s)
    full = sparse_decode.entries(f, 4 * B)
    n = int(full.n)
    assert int(e.n) == int(e.count) == n and M > len(blk)
    np.testing.assert_array_equal(np.asarray(e.rows)[:n], np.asarray(full.rows)[:n])
    np.testing.assert_array_equal(np.asarray(e.cols)[:n], np.asarray(full.cols)[:n])


def test_entries_in_blocks_lists_and_counts(monkeypatch):
    """Listing inside given strided blocks (per row, ascending; block j holds latents j, j + F/s, ...)
    equals the full listing, order included, when they hold every entry; entries outside them are
    not listed but counted when their row is flagged as spilling."""
    f, rng = _codes(density=0.02)
    B, F, s, m = f.shape[0], f.shape[1], 8, 6
    nz = np.asarray(f) != 0
    blocks_with = [np.flatnonzero(nz[r].reshape(s, F // s).any(0)) for r in range(B)]
    assert max(map(len, blocks_with)) <= m
    ids = np.stack([np.sort(np.concatenate([b, rng.choice(np.setdiff1d(np.arange(F // s), b), m - len(b),
                                                                   replace=False)])) for b in blocks_with])
    fn = jax.jit(sparse_decode.entries_in_blocks, static_argnums=(1, 3))
    e = fn(f, 4 * B, jnp.asarray(ids, jnp.int32), s, jnp.zeros(B, bool))
    full = sparse_decode.entries(f, 4 * B)
    n = int(full.n)
    assert int(e.n) == int(e.count) == n
    np.testing.assert_array_equal(np.asarray(e.rows)[:n], np.asarray(full.rows)[:n])
    np.testing.assert_array_equal(np.asarray(e.cols)[:n], np.asarray(full.cols)[:n])
    # drop row 0's first block from its list: its entries are missed, and counted once flagged
    r0 = ids.copy()
    r0[0, np.searchsorted(r0[0], blocks_with[0][0])] = np.setdiff1d(np.arange(F // s), ids[0])[0]
    r0[0] = np.sort(r0[0])
    missed = int(nz[0].reshape(s, F // s)[:, blocks_with[0][0]].sum())
    spill = np.zeros(B, bool)
    e_quiet = fn(f, 4 * B, jnp.asarray(r0, jnp.int32), s, jnp.asarray(spill))
    spill[0] = True
    e_flag = fn(f, 4 * B, jnp.asarray(r0, jnp.int32), s, jnp.asarray(spill))
    assert int(e_quiet.n) == int(e_quiet.count) == n - missed
    assert int(e_flag.n) == n - missed and int(e_flag.count) == n
    # three spilling rows: recounted by gathering them (64 allowed) or over all of f (2): the same number
    spill[1:3] = True
    for rows in (2, 64):
        monkeypatch.setattr(sparse_decode, "SPILL_ROWS", rows)
        e_many = jax.jit(sparse_decode.entries_in_blocks, static_argnums=(1, 3))(
            f, 4 * B, jnp.asarray(r0, jnp.int32), s, jnp.asarray(spill))
        assert int(e_many.n) == n - missed and int(e_many.count) == n, rows


def test_entries_with_threshold_equal_entries_of_the_mask(monkeypatch):
    """Given scores and a threshold, each listing compares inside its blocks and lists exactly the
    entries of the mask (scores >= t and > 0): per row (`entries_in_blocks`, spill counts included),
    over all (`entries_in_flat_blocks`, `entries`)."""
    f, rng = _codes(density=0.02)
    v = jnp.abs(f)
    B, F, s, m = f.shape[0], f.shape[1], 8, 6
    nz = np.asarray(v) > 0
    # per row: a threshold that keeps about half of each row's nonzeros (inf where a row keeps none)
    t_B = jnp.asarray([np.median(np.asarray(v)[r][nz[r]]) if nz[r].any() else np.inf for r in range(B)], jnp.float32)
    mask = (v >= t_B[:, None]) & (v > 0)
    assert 0 < int(mask.sum()) < int(nz.sum())
    blocks_with = [np.flatnonzero(nz[r].reshape(s, F // s).any(0)) for r in range(B)]
    ids = np.stack([np.sort(np.concatenate([b, rng.choice(np.setdiff1d(np.arange(F // s), b), m - len(b),
                                                                   replace=False)])) for b in blocks_with])
    want = sparse_decode.entries(mask, 4 * B)
    n = int(want.n)
    fn = jax.jit(sparse_decode.entries_in_blocks, static_argnums=(1, 3))
    e = fn(v, 4 * B, jnp.asarray(ids, jnp.int32), s, jnp.zeros(B, bool), t_B)
    assert int(e.n) == int(e.count) == n
    np.testing.assert_array_equal(np.asarray(e.rows)[:n], np.asarray(want.rows)[:n])
    np.testing.assert_array_equal(np.asarray(e.cols)[:n], np.asarray(want.cols)[:n])
    # a row whose kept entries lie outside its listed blocks: counted from the scores when it spills
    r = int(np.argmax(np.asarray(mask).sum(1)))
    kept_blocks = np.flatnonzero(np.asarray(mask)[r].reshape(s, F // s).any(0))
    ids_r = ids.copy()
    ids_r[r] = np.sort(np.setdiff1d(np.arange(F // s), kept_blocks)[:m])
    spill = np.zeros(B, bool)
    spill[r] = True
    for rows in (2, 64):  # the spilling row gathered, or a count over all of the scores
        monkeypatch.setattr(sparse_decode, "SPILL_ROWS", rows)
        spill_many = spill.copy()
        spill_many[[(r + 1) % B, (r + 2) % B]] = True
        e_r = jax.jit(sparse_decode.entries_in_blocks, static_argnums=(1, 3))(
            v, 4 * B, jnp.asarray(ids_r, jnp.int32), s, jnp.asarray(spill_many), t_B)
        assert int(e_r.n) == n - int(np.asarray(mask)[r].sum()) and int(e_r.count) == n, rows
    # over everything: a scalar threshold, in given flat blocks or listed from all of the scores
    t = jnp.float32(np.quantile(np.asarray(v)[nz], 0.7))
    mask = (v >= t) & (v > 0)
    want = sparse_decode.entries(mask, 4 * B)
    n = int(want.n)
    blk = np.flatnonzero(np.asarray(mask).reshape(B * (F // s), s).any(-1))
    M = len(blk) + 5
    blk_M = jnp.asarray(np.concatenate([blk, np.zeros(5, int)]), jnp.int32)
    for e in (sparse_decode.entries(v, 4 * B, t),
              jax.jit(sparse_decode.entries_in_flat_blocks, static_argnums=(1, 4))(v, 4 * B, blk_M, len(blk), s, t)):
        assert int(e.n) == int(e.count) == n and M > len(blk)
        np.testing.assert_array_equal(np.asarray(e.rows)[:n], np.asarray(want.rows)[:n])
        np.testing.assert_array_equal(np.asarray(e.cols)[:n], np.asarray(want.cols)[:n])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("chunk", [0, 4096, 16])  # the host kernels; XLA's loop in one step, or many
def test_kernels_match_numpy(dtype, chunk, monkeypatch):
    if chunk:
        monkeypatch.setenv("CROSSCODER_HOST_KERNELS", "0")
        monkeypatch.setattr(sparse_decode, "_CHUNK", chunk)
    else:
        assert host_calls.available()
    f, rng = _codes()
    B, F = f.shape
    W = jnp.asarray(rng.normal(size=(F, 24)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(B, 24)), jnp.float32)
    e = sparse_decode.entries(f, int(jnp.sum(f != 0)) + 7)
    vals = f[e.rows, e.cols] * (jnp.arange(e.rows.shape[0]) < e.n)
    r = (lambda a: np.asarray(jnp.asarray(a).astype(dtype).astype(jnp.float32), np.float64))  # operand rounding
    f64, W64, g64 = r(f), r(W), r(g)
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sparse_decode.gather_sum(vals, W, e, B, jnp.dtype(dtype)), f64 @ W64, **tol)
    d_vals, d_W = sparse_decode.decoder_grads(vals, W, e, g, jnp.dtype(dtype))
    np.testing.assert_allclose(d_W, f64.T @ g64, **tol)
    n = int(e.n)
    want = (g64 @ W64.T)[np.asarray(e.rows)[:n], np.asarray(e.cols)[:n]]
    np.testing.assert_allclose(np.asarray(d_vals)[:n], want, **tol)
    assert np.all(np.asarray(d_vals)[n:] == 0)
    np.testing.assert_allclose(sparse_decode.scatter_rows(vals, e, g, F, jnp.dtype(dtype)), f64.T @ g64, **tol)


def _problem(activation, C=3, D=16, F=512, B=64, dtype="float32", **kw):
    kw.setdefault("dec_init_norm", 1.0)  # the scale of the biases and tolerances below
    spec = cc.Spec(C, D, F, activation=activation, k=4, k_aux=8, matmul_dtype=dtype, sparse_decode=True, **kw)
    p = cc.init_params(spec, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4)
    p["b_enc"] = 0.1 * jax.random.normal(keys[0], (F,))
    p["b_dec"] = 0.1 * jax.random.normal(keys[1], (C, D))
    p["W_dec"] = p["W_dec"] * jax.random.uniform(keys[2], (F, C, 1), minval=0.3, maxval=2.0)  # unequal norms
    x = jax.random.normal(keys[3], (B, C, D))
    return spec, p, x


def test_step_same_with_host_kernels_or_xla(monkeypatch):
    """The jitted sparse step, AuxK included, gives the same loss and gradients whichever runs the
    top-k, gathers and scatters (sums in another order: float32 rounding apart)."""
    spec, p, x = _problem("topk")
    state = cc.activations.get("topk").init_state(spec)
    dead = jax.random.uniform(jax.random.key(2), (spec.dict_size,)) < 0.3
    run = lambda: jax.jit(sparse_step.value_and_grad, static_argnums=3)(p, state, x, spec, jnp.int32(5), dead)  # noqa: E731
    (l1, a1), g1 = run()
    monkeypatch.setenv("CROSSCODER_HOST_KERNELS", "0")
    jax.clear_caches()
    (l0, a0), g0 = run()
    assert float(a1["terms"]["auxk"]) > 0
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("activation, dead_share, dtype", [
    ("topk", 0.3, "float32"), ("batchtopk", 0.0, "float32"), ("batchtopk", 0.3, "float32"),
    ("batchtopk", 0.3, "bfloat16"),
    *[pytest.param(*case, marks=pytest.mark.slow) for case in
      (("topk", 0.0, "float32"), ("topk", 0.3, "bfloat16"), ("topk", 0.0, "bfloat16"), ("batchtopk", 0.0, "bfloat16"))]])
def test_loss_and_gradient_equal_dense_autodiff(activation, dead_share, dtype, monkeypatch):
    monkeypatch.setattr(sparse_step, "AUX_ENTRIES", 8 * 16)  # AuxK in 4 chunks of 16 rows
    spec, p, x = _problem(activation, dtype=dtype, k_start=12, k_anneal_steps=10)  # k = 8 at step 5
    state = cc.activations.get(activation).init_state(spec)
    dead = jax.random.uniform(jax.random.key(2), (spec.dict_size,)) < dead_share
    step = jnp.int32(5)
    (l0, a0), g0 = jax.value_and_grad(cc.loss_fn, has_aux=True)(p, state, x, spec, step, dead)
    (l1, a1), g1 = jax.jit(sparse_step.value_and_grad, static_argnums=3)(p, state, x, spec, step, dead)
    assert (float(a1["terms"]["auxk"]) > 0) == (dead_share > 0)
    tol = 1e-5 if dtype == "float32" else 1e-3
    np.testing.assert_allclose(l1, l0, rtol=tol)
    for k in a0["terms"]:
        np.testing.assert_allclose(a1["terms"][k], a0["terms"][k], rtol=tol, atol=1e-7, err_msg=k)
    for k in g0:
        scale = float(jnp.max(jnp.abs(g0[k])))
        np.testing.assert_allclose(g1[k], g0[k], rtol=0, atol=tol * scale, err_msg=k)
    np.testing.assert_allclose(a1["fvu"], a0["fvu"], rtol=tol)
    assert float(a1["l0"]) == float(a0["l0"]) == 8.0
    np.testing.assert_array_equal(a1["fired_F"], a0["fired_F"])
    for k in a0["act_update"]:
        np.testing.assert_allclose(a1["act_update"][k], a0["act_update"][k], rtol=tol)
    assert int(a1["dropped"]) == 0


def test_ties_past_the_room_are_dropped_and_counted():
    """Every score equal: all B*F entries tie; the step keeps its room's worth and counts the rest."""
    spec, p, x = _problem("batchtopk", F=512, B=64)
    p["W_enc"] = jnp.zeros_like(p["W_enc"])
    p["b_enc"] = jnp.ones_like(p["b_enc"])
    p["W_dec"] = jnp.full_like(p["W_dec"], 0.25)  # every norm exactly 1 (D = 16)
    (loss, aux), grads = jax.jit(sparse_step.value_and_grad, static_argnums=3)(
        p, {"threshold": jnp.float32(-1)}, x, spec, jnp.int32(0), jnp.zeros(512, bool))
    room = sparse_decode.round_cap(4 * 64 + 64)
    assert int(aux["dropped"]) == 512 * 64 - room
    assert float(aux["l0"]) == 512.0  # the mask keeps every tie; the sums use the first `room`
    assert np.isfinite(float(loss)) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_where_the_sparse_step_applies():
    assert sparse_step.applies(cc.Spec(3, 16, 16384, k=32, sparse_decode=True))
    assert not sparse_step.applies(cc.Spec(3, 16, 16384, k=32))  # switched off
    assert not sparse_step.applies(cc.Spec(3, 16, 1024, k=32, sparse_decode=True))  # 1/32 of codes kept: dense
    with pytest.raises(ValueError, match="sparse_decode needs a top-k activation"):
        cc.Spec(2, 16, 128, activation="l1", sparse_decode=True)


def test_scores_computed_where_read_equal_the_array():
    """`scores.Scores` (relu(pre + b) * w, computed where read) gives the same block maxima, blocks,
    rows, per-row selection and listing as the array of its scores, bit for bit; block j of the
    strided blocks holds latents j, j + F/s, ..."""
    from crosscoder_jax.crosscoder import scores
    from crosscoder_jax.crosscoder.activations.base import select_rows

    rng = np.random.default_rng(3)
    B, F, s = 32, 512, 8
    pre = jnp.asarray(rng.normal(size=(B, F)), jnp.float32)
    b = jnp.asarray(rng.normal(size=F) * 0.3, jnp.float32)
    w = jnp.asarray(rng.uniform(0.5, 2.0, size=F) * (rng.random(F) < 0.9), jnp.float32)  # some latents off
    lazy = scores.Scores(pre, b, w)
    v = scores.full(lazy)
    p = np.asarray(pre + b)
    np.testing.assert_array_equal(np.asarray(v), np.where(p > 0, p * np.asarray(w), 0))
    M = np.asarray(v).reshape(B, s, F // s).max(1)
    for x in (v, lazy):
        np.testing.assert_array_equal(np.asarray(jax.jit(scores.block_max, static_argnums=1)(x, s)), M)
    ids = jnp.asarray(np.sort(rng.choice(F // s, size=(B, 5)), axis=1), jnp.int32)
    cols = np.asarray(ids)[:, None, :] + (F // s) * np.arange(s)[:, None]
    want = np.take_along_axis(np.asarray(v), cols.reshape(B, -1), 1).reshape(cols.shape)
    for x in (v, lazy):
        np.testing.assert_array_equal(np.asarray(scores.take_blocks(x, ids, s)), want)
        np.testing.assert_array_equal(np.asarray(scores.take_rows(x, jnp.asarray([3, 0]))), np.asarray(v)[[3, 0]])
    sel_v, sel_l = (jax.jit(lambda x: select_rows(x, jnp.int32(6), 6))(x) for x in (v, lazy))
    np.testing.assert_array_equal(np.asarray(sel_v.keep_BF), np.asarray(sel_l.keep_BF))
    assert int(sel_v.keep_BF.sum()) == 6 * B
    for a, c in zip(sel_v.blocks, sel_l.blocks):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    bl = sel_l.blocks
    want_e = sparse_decode.entries(sel_v.keep_BF, 8 * B)
    for x in (v, lazy):
        e = jax.jit(sparse_decode.entries_in_blocks, static_argnums=(1, 3))(x, 8 * B, bl.ids, int(bl.s), bl.spill, bl.t)
        n = int(want_e.n)
        assert int(e.n) == int(e.count) == n == 6 * B
        np.testing.assert_array_equal(np.asarray(e.rows)[:n], np.asarray(want_e.rows)[:n])
        np.testing.assert_array_equal(np.asarray(e.cols)[:n], np.asarray(want_e.cols)[:n])
    # every row holds exactly its 6 (no ties): the search's own top latents list them
    assert bool(jnp.all(bl.exact))
    e = sparse_decode.entries_of_rows(bl.cols, 8 * B, F)
    assert int(e.n) == int(e.count) == 6 * B and e.rows.shape[0] >= 6 * B
    got = np.zeros((B, F), bool)
    got[np.asarray(e.rows)[:6 * B], np.asarray(e.cols)[:6 * B]] = True
    np.testing.assert_array_equal(got, np.asarray(sel_v.keep_BF))
    np.testing.assert_array_equal(np.asarray(e.rows)[:6 * B], np.asarray(want_e.rows)[:6 * B])
    # a tie at a row's 6th score, or a k below the bound, is not exact: the blocks are searched then
    v_tie = np.asarray(v).copy()
    order = np.argsort(-v_tie[0])
    v_tie[0, order[6]] = v_tie[0, order[5]]
    sel_t = jax.jit(lambda x: select_rows(x, jnp.int32(6), 6))(jnp.asarray(v_tie))
    assert not bool(sel_t.blocks.exact[0]) and bool(jnp.all(sel_t.blocks.exact[1:]))
    sel_k = jax.jit(lambda x: select_rows(x, jnp.int32(4), 6))(v)
    assert not bool(jnp.any(sel_k.blocks.exact))
