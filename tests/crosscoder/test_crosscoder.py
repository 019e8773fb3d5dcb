"""Every crosscoder loss and metric against a plain NumPy float64 formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crosscoder_jax.crosscoder import activations
from crosscoder_jax import crosscoder as cc
from crosscoder_jax.crosscoder.activations.base import k_at, keep_top, kth_largest, select_rows
from crosscoder_jax.crosscoder.activations import select
from crosscoder_jax.crosscoder.activations.select import block_size
from crosscoder_jax.crosscoder.activations.jumprelu import heaviside, jump

B, C, D, F = 24, 3, 8, 40


def setup(activation, **kw):
    kw.setdefault("dec_init_norm", 1.0)  # the scale the thresholds below are written for
    spec = cc.Spec(C, D, F, activation=activation, **kw)
    params = cc.init_params(spec, jax.random.key(0))
    params = dict(params, b_enc=jax.random.normal(jax.random.key(1), (F,)) * 0.1,
                  b_dec=jax.random.normal(jax.random.key(2), (C, D)) * 0.1)
    x = np.asarray(jax.random.normal(jax.random.key(3), (B, C, D)), np.float64)
    return spec, params, x


def np_parts(params, x):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    pre = np.einsum("bcd,cdf->bf", x, p["W_enc"]) + p["b_enc"]
    dn = np.linalg.norm(p["W_dec"], axis=-1).sum(-1)
    return p, pre, dn


def np_decode(p, f, bias=True):
    return np.einsum("bf,fcd->bcd", f, p["W_dec"]) + (p["b_dec"] if bias else 0)


def np_auxk(p, pre, x, xhat, dead, k_aux):
    relu = np.maximum(pre, 0)
    cand = np.where(dead[None], relu, 0)
    f = np.zeros_like(relu)
    k = min(k_aux, int(dead.sum()))
    for b in range(len(f)):
        idx = np.argsort(-cand[b])[:k]
        idx = idx[cand[b, idx] > 0]
        f[b, idx] = relu[b, idx]
    e = x - xhat
    l2 = np.mean(np.sum((e - np_decode(p, f, bias=False)) ** 2, axis=(1, 2)))
    var = np.mean(np.sum((e - e.mean(0)) ** 2, axis=(1, 2)))
    return l2 / var


def run(spec, params, x, step=7, dead=None, state=None):
    dead = np.zeros(F, bool) if dead is None else dead
    state = activations.get(spec.activation).init_state(spec) if state is None else state
    loss, aux = jax.jit(cc.loss_fn, static_argnums=3)(params, state, jnp.asarray(x, jnp.float32), spec,
                                                      jnp.int32(step), jnp.asarray(dead))
    return float(loss), jax.tree.map(np.asarray, aux)


def test_l1_loss_and_warmup():
    spec, params, x = setup("l1", sparsity_coeff=2.0, sparsity_warmup_steps=20)
    p, pre, dn = np_parts(params, x)
    f = np.maximum(pre, 0)
    recon = np.mean(np.sum((np_decode(p, f) - x) ** 2, axis=(1, 2)))
    l1 = 2.0 * (7 / 20) * np.mean(np.sum(f * dn, axis=-1))
    loss, aux = run(spec, params, x, step=7)
    np.testing.assert_allclose(aux["terms"]["recon"], recon, rtol=1e-5)
    np.testing.assert_allclose(aux["terms"]["l1"], l1, rtol=1e-5)
    np.testing.assert_allclose(loss, recon + l1, rtol=1e-5)


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_topk_codes_recon_and_auxk(activation):
    spec, params, x = setup(activation, k=5, k_aux=3)
    p, pre, dn = np_parts(params, x)
    relu = np.maximum(pre, 0)
    v = relu * dn
    keep = np.zeros_like(v, bool)
    if activation == "topk":
        for b in range(B):
            keep[b, np.argsort(-v[b])[:5]] = True
    else:
        keep.flat[np.argsort(-v.ravel())[:5 * B]] = True
    keep &= v > 0
    f = np.where(keep, relu, 0)
    xhat = np_decode(p, f)
    dead = np.arange(F) % 3 == 0
    loss, aux = run(spec, params, x, dead=dead)
    np.testing.assert_allclose(aux["f_BF"], f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["terms"]["recon"], np.mean(np.sum((xhat - x) ** 2, axis=(1, 2))), rtol=1e-5)
    np.testing.assert_allclose(aux["terms"]["auxk"], np_auxk(p, pre, x, xhat, dead, 3) / 32, rtol=1e-4)
    _, aux0 = run(spec, params, x, dead=np.zeros(F, bool))
    assert aux0["terms"]["auxk"] == 0.0


def test_auxk_reconstructs_residual_not_its_negative():
    """The reference code's sign bug (xhat - x) would make the loss larger than with x - xhat."""
    spec, params, x = setup("batchtopk", k=2, k_aux=4)
    p, pre, dn = np_parts(params, x)
    dead = np.ones(F, bool)
    _, aux = run(spec, params, x, dead=dead)
    xhat = aux["xhat_BCD"].astype(np.float64)
    right = np_auxk(p, pre, x, xhat, dead, 4)
    wrong = np_auxk(p, pre, xhat, x, dead, 4)  # swaps the roles: residual xhat - x
    assert abs(aux["terms"]["auxk"] * 32 - right) < 1e-4 * right
    assert abs(right - wrong) > 1e-3 * right


def test_batchtopk_threshold_ema_and_inference():
    spec, params, x = setup("batchtopk", k=4, threshold_start_step=2, threshold_beta=0.9)
    act = activations.get("batchtopk")
    p, pre, dn = np_parts(params, x)
    v = np.maximum(pre, 0) * dn
    min_kept = np.sort(v.ravel())[-4 * B]
    state = act.init_state(spec)
    _, aux = run(spec, params, x, step=1, state=state)
    np.testing.assert_allclose(aux["act_update"]["min_kept"], min_kept, rtol=1e-5)
    s1 = act.update_state(state, aux["act_update"], spec, jnp.int32(1))
    assert float(s1["threshold"]) == -1.0  # before threshold_start_step
    s2 = act.update_state(s1, aux["act_update"], spec, jnp.int32(2))
    np.testing.assert_allclose(s2["threshold"], min_kept, rtol=1e-5)
    s3 = act.update_state(s2, {"min_kept": jnp.float32(1.0)}, spec, jnp.int32(3))
    np.testing.assert_allclose(s3["threshold"], 0.9 * min_kept + 0.1, rtol=1e-5)
    # Inference uses the threshold, not the batch top-k: L0 varies per token.
    f = np.asarray(cc.encode(params, jnp.asarray(x, jnp.float32), spec, s2))
    np.testing.assert_allclose(f, np.where(v > min_kept, np.maximum(pre, 0), 0), rtol=1e-5, atol=1e-6)
    assert len(set((f > 0).sum(-1).tolist())) > 1


def test_jumprelu_codes_l0_and_straight_through_gradients():
    spec, params, x = setup("jumprelu", sparsity_coeff=0.5, bandwidth=0.4, init_threshold=0.3)
    p, pre, dn = np_parts(params, x)
    theta = np.exp(p["log_threshold"])
    f = pre * (pre > theta)
    loss, aux = run(spec, params, x)
    np.testing.assert_allclose(aux["f_BF"], f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["terms"]["l0"], 0.5 * np.mean(np.sum(pre > theta, -1)), rtol=1e-6)
    # STE: d/dtheta sum(g * jump(x, theta)) = -theta/eps * sum_b g * rect((x - theta)/eps)
    xs = jnp.asarray(pre, jnp.float32)
    th = jnp.asarray(theta, jnp.float32)
    g = np.asarray(jax.random.normal(jax.random.key(9), xs.shape), np.float64)
    rect = (np.abs((pre - theta) / 0.4) < 0.5)
    dth = jax.grad(lambda t: jnp.sum(jump(xs, t, 0.4) * g))(th)
    np.testing.assert_allclose(dth, -(theta / 0.4) * np.sum(g * rect, 0), rtol=1e-4, atol=1e-5)
    dx = jax.grad(lambda z: jnp.sum(jump(z, th, 0.4) * g))(xs)
    np.testing.assert_allclose(dx, g * (pre > theta), rtol=1e-5)
    dh = jax.grad(lambda t: jnp.sum(heaviside(xs, t, 0.4) * g))(th)
    np.testing.assert_allclose(dh, -(1 / 0.4) * np.sum(g * rect, 0), rtol=1e-4, atol=1e-5)


def test_fvu_against_numpy():
    x = np.random.default_rng(0).normal(size=(50, C, D))
    xhat = x + 0.3 * np.random.default_rng(1).normal(size=x.shape)
    ref = ((x - xhat) ** 2).sum((0, 2)) / ((x - x.mean(0)) ** 2).sum((0, 2))
    np.testing.assert_allclose(cc.fvu(jnp.asarray(x, jnp.float32), jnp.asarray(xhat, jnp.float32)), ref, rtol=1e-5)


def test_init_norms_per_activation_and_the_papers():
    """Defaults by activation (topk/batchtopk rows at 1/sqrt(3 C), a joined row of norm 1/sqrt(3), not
    the paper's 1.0); dec_init_norm=1.0 gives the paper's."""
    cases = (("l1", None, 0.08, C), ("topk", None, (3 * C) ** -0.5, C), ("batchtopk", None, (3 * C) ** -0.5, C),
             ("topk", None, 3 ** -0.5, 1), ("jumprelu", None, 1.0, C), ("batchtopk", 1.0, 1.0, C))
    for activation, given, norm, n_checkpoints in cases:
        spec = cc.Spec(n_checkpoints, D, F, activation=activation, dec_init_norm=given)
        p = cc.init_params(spec, jax.random.key(0))
        np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=-1), norm, rtol=1e-5)
        np.testing.assert_array_equal(p["W_enc"], np.transpose(p["W_dec"], (1, 2, 0)))
        assert not np.any(p["b_enc"]) and not np.any(p["b_dec"])


@pytest.mark.parametrize("activation", ["l1", "topk", "batchtopk", "jumprelu"])
def test_fold_unfold_gives_same_codes_in_raw_space(activation):
    spec, params, x = setup(activation, k=5)
    # unequal decoder rows: folding then scales each latent's norm sum differently
    row_scale = np.random.default_rng(3).uniform(0.2, 3.0, size=params["W_dec"].shape[:2])
    params = {**params, "W_dec": params["W_dec"] * row_scale[..., None]}
    state = activations.get(activation).init_state(spec)
    if "threshold" in state:
        state = {"threshold": jnp.float32(0.5)}
    scales = np.array([0.5, 2.0, 7.0])
    raw = x / scales[None, :, None]
    folded = cc.fold_scales(params, scales)
    f_norm = cc.encode(params, jnp.asarray(x, jnp.float32), spec, state)
    # the same codes from the folded weights on raw inputs (top-k picks the same latents)
    f_raw = cc.encode(folded, jnp.asarray(raw, jnp.float32), spec, state)
    np.testing.assert_allclose(f_raw, f_norm, rtol=1e-4, atol=1e-5)
    assert np.array_equal(np.asarray(f_raw) > 0, np.asarray(f_norm) > 0)
    unweighted = {k: v for k, v in folded.items() if k != "decoder_norm_sum"}  # what encode did before
    if activation in ("topk", "batchtopk"):
        assert not np.array_equal(np.asarray(cc.encode(unweighted, jnp.asarray(raw, jnp.float32), spec, state)) > 0,
                                  np.asarray(f_norm) > 0)
    pre_raw = cc.encoder_pre(folded, jnp.asarray(raw, jnp.float32), spec)
    np.testing.assert_allclose(pre_raw, cc.encoder_pre(params, jnp.asarray(x, jnp.float32), spec), rtol=1e-4,
                               atol=1e-5)
    xhat_raw = cc.decode(folded, f_norm, spec)
    np.testing.assert_allclose(xhat_raw * scales[None, :, None], cc.decode(params, f_norm, spec), rtol=1e-4, atol=1e-5)
    back = cc.unfold_scales(folded, scales)
    for k in params:
        np.testing.assert_allclose(back[k], params[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("activation", ["l1", "topk", "batchtopk", "jumprelu"])
def test_absorbed_shift_reads_the_unshifted_inputs(activation):
    """Params trained on x - shift, with the shift absorbed, give on x the codes and (shifted back)
    reconstructions the trained params give on x - shift; checked against a float64 NumPy formula."""
    spec, params, x = setup(activation, k=5)
    state = activations.get(activation).init_state(spec)
    if "threshold" in state:
        state = {"threshold": jnp.float32(0.5)}
    rng = np.random.default_rng(5)
    params = {**params, "b_enc": jnp.asarray(rng.normal(size=params["b_enc"].shape) * 0.1, jnp.float32),
              "b_dec": jnp.asarray(rng.normal(size=params["b_dec"].shape), jnp.float32)}
    shift = rng.normal(size=params["b_dec"].shape).astype(np.float32) * 3.0
    absorbed = cc.absorb_shift(params, shift)
    want_b_enc = (np.asarray(params["b_enc"], np.float64)
                  - np.einsum("cd,cdf->f", shift.astype(np.float64), np.asarray(params["W_enc"], np.float64)))
    np.testing.assert_allclose(absorbed["b_enc"], want_b_enc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(absorbed["b_dec"], np.asarray(params["b_dec"]) + shift, rtol=1e-6, atol=1e-6)
    xs = jnp.asarray(x + shift[None], jnp.float32)
    f_shifted = cc.encode(params, jnp.asarray(x, jnp.float32), spec, state)
    f_absorbed = cc.encode(absorbed, xs, spec, state)
    np.testing.assert_allclose(f_absorbed, f_shifted, rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.asarray(f_absorbed) > 0, np.asarray(f_shifted) > 0)
    np.testing.assert_allclose(cc.decode(absorbed, f_shifted, spec), cc.decode(params, f_shifted, spec) + shift[None],
                               rtol=1e-5, atol=1e-4)


def test_batchtopk_codes_without_threshold_do_not_depend_on_the_batch():
    spec, params, x = setup("batchtopk", k=5)
    state = activations.get("batchtopk").init_state(spec)  # threshold not estimated (-1)
    x = jnp.asarray(x, jnp.float32)
    f_all = np.asarray(cc.encode(params, x, spec, state))
    f_one = np.concatenate([np.asarray(cc.encode(params, x[i:i + 1], spec, state)) for i in range(x.shape[0])])
    np.testing.assert_array_equal(f_all, f_one)
    assert np.all((f_all > 0).sum(-1) == 5)  # each row its own top k


def test_kth_largest_is_exact():
    rng = np.random.default_rng(0)
    v = np.maximum(rng.normal(size=(16, 300)), 0).astype(np.float32)
    for k in (1, 7, 150, 299):
        np.testing.assert_array_equal(kth_largest(jnp.asarray(v), k, axis=-1), np.sort(v, axis=-1)[:, -k])
        assert float(kth_largest(jnp.asarray(v), k * 16)) == np.sort(v.ravel())[-k * 16]
    assert float(kth_largest(jnp.asarray(v), 0)) == np.inf


def _kth_ref(v, k):
    """float64 reference: k-th largest of v >= 0 (0 past the end, +inf for k <= 0)."""
    if k <= 0:
        return np.inf
    s = np.sort(v.ravel())[::-1]
    return s[k - 1] if k <= s.size else 0.0


@pytest.mark.parametrize("case", ["normal", "sparse", "ties", "constant", "few_positive", "all_zero"])
def test_compacted_kth_largest_matches_sort(case, monkeypatch):
    """The block-compacted search (k_bound given) against np.sort, on the paths it can take:
    compacted, fewer positive blocks than k, and the fall-back when ties overflow its room."""
    monkeypatch.setattr(select, "single_device", lambda: True)  # on even where devices are faked
    rng = np.random.default_rng(1)
    R, n = 24, 512
    v = np.maximum(rng.normal(size=(R, n)), 0) * rng.uniform(0.5, 2.0, size=n)
    if case == "sparse":
        v *= rng.random((R, n)) < 0.02
    elif case == "ties":
        v = np.round(v * 4) / 4
    elif case == "constant":
        v = np.ones((R, n))
    elif case == "few_positive":
        v *= rng.random((R, n)) < 0.003
    elif case == "all_zero":
        v = np.zeros((R, n))
    v = v.astype(np.float32)
    assert block_size(n, 8, 1) and block_size(n, 8 * R, R)  # the compacted path is taken
    # jitted with k traced: one compilation per search serves every k (eager calls compile each time)
    overall = jax.jit(lambda v, k: kth_largest(v, k, k_bound=8 * R))
    per_row = jax.jit(lambda v, ks: kth_largest(v, ks, axis=-1, k_bound=8))
    for k in (0, 1, 3, 8):
        got = overall(jnp.asarray(v), jnp.int32(k * R))
        assert float(got) == _kth_ref(v, k * R), (case, k)
        ks = rng.integers(0, k + 1, size=R)
        got_rows = np.asarray(per_row(jnp.asarray(v), jnp.asarray(ks, jnp.int32)))
        want_rows = [_kth_ref(v[r], int(ks[r])) for r in range(R)]
        np.testing.assert_array_equal(got_rows, np.float32(want_rows), err_msg=f"{case} k={k}")
    mask = np.asarray(keep_top(jnp.asarray(v), 5 * R, axis=None, k_bound=8 * R))
    np.testing.assert_array_equal(mask, (v >= _kth_ref(v, 5 * R)) & (v > 0))
    # the per-row selection's blocks hold every kept entry, unless the row is flagged as spilling
    sel = jax.jit(lambda v, ks: select_rows(v, ks, 8))(jnp.asarray(v), jnp.asarray(ks, jnp.int32))
    assert sel.blocks is not None
    ids, s_ = np.asarray(sel.blocks.ids), sel.blocks.s
    for r in range(R):
        want_keep = (v[r] >= want_rows[r]) & (v[r] > 0)
        np.testing.assert_array_equal(np.asarray(sel.keep_BF)[r], want_keep)
        outside = want_keep.reshape(s_, n // s_).copy()  # strided blocks: block j holds j, j + n/s, ...
        outside[:, ids[r]] = False
        assert np.all(np.diff(ids[r]) > 0)
        assert not outside.any() or bool(sel.blocks.spill[r]), (case, r)
        # and flagged only where another block ties at the k-th value (a flag costs a recount)
        if ks[r] >= 1 and (v[r] == want_rows[r]).sum() <= 1:
            assert not bool(sel.blocks.spill[r]), (case, r)


def test_k_annealing_and_bad_k():
    spec = cc.Spec(C, D, F, activation="batchtopk", k=4, k_start=20, k_anneal_steps=10)
    assert [int(k_at(spec, jnp.int32(s))) for s in (0, 5, 10, 50)] == [20, 12, 4, 4]
    with pytest.raises(ValueError, match="k=41 must lie in"):
        cc.Spec(C, D, F, activation="topk", k=41)
    with pytest.raises(ValueError, match="unknown activation 'relu2'"):
        cc.Spec(C, D, F, activation="relu2")


def test_single_checkpoint_is_a_plain_sae():
    spec = cc.Spec(1, D, F, activation="topk", k=3)
    p = cc.init_params(spec, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (B, 1, D))
    f = cc.encode(p, x, spec, {})
    assert f.shape == (B, F) and int((f > 0).sum(-1).max()) <= 3
    assert cc.decode(p, f, spec).shape == (B, 1, D)


def test_bf16_matmuls_match_float32_forward_and_backward():
    """bf16 operands with float32 accumulation, forward and backward, against float32 math on the
    same bf16-rounded inputs (the rounding of the inputs alone moves the W_enc gradient by ~8% here)."""
    spec32, params, x = setup("l1")
    spec16 = cc.Spec(C, D, F, activation="l1", matmul_dtype="bfloat16")
    st = {}
    r16 = lambda a: jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731

    def grad(spec, p, xs):
        return jax.grad(lambda q: cc.loss_fn(q, st, xs, spec, jnp.int32(0), jnp.zeros(F, bool))[0])(p)

    g16 = grad(spec16, params, jnp.asarray(x, jnp.float32))
    ref = grad(spec32, jax.tree.map(r16, params), r16(x))
    for k in ref:
        rel = np.linalg.norm(np.asarray(g16[k]) - np.asarray(ref[k])) / np.linalg.norm(np.asarray(ref[k]))
        assert rel < 2e-2, (k, rel)
    # Every dot of the compiled step, the backward's included, really takes bf16 operands: XLA
    # upcasts a bf16 dot it has no fast kernel for (e.g. one contracting the batch axis of both
    # operands) to a float32 dot on float32 parameters.
    hlo = jax.jit(jax.grad(lambda p: cc.loss_fn(p, st, jnp.asarray(x, jnp.float32), spec16, jnp.int32(0),
                                                jnp.zeros(F, bool))[0])).lower(params).compile().as_text()
    dot_blocks = [b for b in hlo.split("\n\n") if " dot(" in b]
    assert len(dot_blocks) >= 4, hlo
    for block in dot_blocks:
        params_ = [l for l in block.splitlines() if "parameter(" in l]
        assert params_ and all(" bf16[" in l for l in params_), block
