"""IE approximations against exact quantities on toy downstream maps; RelIE, classes, lifecycles, Spearman."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from crosscoder_jax.analysis import attribution as attr
from crosscoder_jax.analysis import relie
from crosscoder_jax.data.tasks import Prompts

N, T, D, F, V = 4, 5, 6, 8, 7


def toy(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((N, T), np.int32)
    mask[1, 4:] = 0  # a right-padded prompt
    prompts = Prompts(np.zeros((N, T), np.int32), mask, mask.sum(1) - 1, rng.integers(0, V, N).astype(np.int32),
                      ((rng.integers(1, V, N) + rng.integers(0, V, N)) % V).astype(np.int32))
    prompts = prompts._replace(patch_N=np.where(prompts.patch_N == prompts.clean_N, (prompts.clean_N + 1) % V,
                                                prompts.patch_N).astype(np.int32))
    splice = jnp.asarray((mask > 0) & (np.arange(T)[None] >= 1))
    dec = attr.Decoder(jnp.asarray(rng.normal(size=(F, D)), jnp.float32), jnp.asarray(rng.normal(size=D), jnp.float32))
    a = jnp.asarray(rng.normal(size=(N, T, D)), jnp.float32)
    f = jnp.asarray(np.maximum(rng.normal(size=(N, T, F)), 0), jnp.float32) * splice[..., None]
    return prompts, splice, dec, a, f, rng


def test_linear_downstream_atp_ig_exact_equal_the_analytic_answer():
    prompts, splice, dec, a, f, rng = toy()
    U = jnp.asarray(rng.normal(size=(D, V)), jnp.float32)
    metric = attr.spliced_metric(lambda r: r @ U, prompts, dec, a, splice)
    eps = a - attr.decode_one(f, dec)
    zero = jnp.zeros_like(f)
    # analytic: only the last position reaches m; zero-patching latent i changes m by -f_i W_i . u
    u = np.asarray(U)[:, prompts.patch_N].T - np.asarray(U)[:, prompts.clean_N].T  # [N, D]
    f_last = np.asarray(f)[np.arange(N), prompts.last_N]  # [N, F]
    analytic = -f_last * (u @ np.asarray(dec.W_FD).T)  # [N, F]
    atp, m_atp = attr.ie_entries(metric, f, eps, zero, eps, "atp")
    ig, m_ig = attr.ie_entries(metric, f, eps, zero, eps, "ig", steps=10)
    np.testing.assert_allclose(m_atp, metric(f, eps), rtol=1e-6)
    np.testing.assert_allclose(m_ig, metric(f, eps), rtol=1e-6)
    atp, ig = np.asarray(atp.sum(1)), np.asarray(ig.sum(1))
    exact = np.asarray(attr.exact_patch(metric, f, eps, zero, jnp.arange(F)))
    for got in (atp, ig, exact):
        np.testing.assert_allclose(got, analytic, rtol=1e-4, atol=1e-4)
    # The clean spliced output equals the unspliced one (error term kept).
    np.testing.assert_allclose(metric(f, eps), np.einsum("nd,nd->n", np.asarray(a)[np.arange(N), prompts.last_N], u),
                               rtol=1e-4, atol=1e-4)


def nonlinear(rng):
    A = jnp.asarray(rng.normal(size=(D, 16)) / np.sqrt(D), jnp.float32)
    B = jnp.asarray(rng.normal(size=(16, V)), jnp.float32)
    return lambda r: jnp.tanh(r @ A) @ B


def test_ig_completeness_and_left_riemann_convergence():
    """IG over the path clean -> patch sums to m(patch) - m(clean), up to the left-Riemann error."""
    prompts, splice, dec, a, f, rng = toy(1)
    metric = attr.spliced_metric(nonlinear(rng), prompts, dec, a, splice)
    eps = a - attr.decode_one(f, dec)
    zero = jnp.zeros_like(f)
    for eps_patch in (eps, jnp.zeros_like(eps)):
        target = np.asarray(metric(zero, eps_patch) - metric(f, eps))
        if eps_patch is not eps:
            # the error term moves along the same path; its share (left Riemann on its own gradient,
            # computed here independently) is not attributed to latents, so latents + error = total
            d_eps = eps_patch - eps
            g_eps = jax.grad(lambda e, al: jnp.sum(metric(f + al * (zero - f), e)))
            alphas = np.arange(400) / 400
            share = sum(np.asarray(jnp.sum(g_eps(eps + al * d_eps, al) * d_eps, axis=(1, 2)))
                        for al in alphas) / 400
        else:
            share = 0.0
        errs = []
        for steps in (10, 400):
            ig = np.asarray(attr.ie_entries(metric, f, eps, zero, eps_patch, "ig", steps=steps)[0].sum((1, 2)))
            errs.append(np.max(np.abs(ig + share - target)) / np.max(np.abs(target)))
        assert errs[1] < 0.01 and errs[1] < errs[0], (eps_patch is eps, errs)


def test_atp_approximates_exact_single_latent_patching_for_small_patches():
    prompts, splice, dec, a, f, rng = toy(2)
    metric = attr.spliced_metric(nonlinear(rng), prompts, dec, a, splice)
    eps = a - attr.decode_one(f, dec)
    errs = []
    for scale in (0.99, 0.9, 0.0):
        patch = f * scale
        atp = np.asarray(attr.ie_entries(metric, f, eps, patch, eps, "atp")[0].sum(1))
        exact = np.asarray(attr.exact_patch(metric, f, eps, patch, jnp.arange(F)))
        errs.append(np.max(np.abs(atp - exact)) / np.max(np.abs(exact)))
    # first-order: the error shrinks with the size of the patch (float32 rounding floors the smallest)
    assert errs[0] < 0.01 and errs[1] < 0.05 and errs[0] < errs[1] < errs[2], errs


def test_reduce_entries_threshold_and_mean_or_sum():
    rng = np.random.default_rng(3)
    ie = rng.normal(scale=0.2, size=(N, T, F)).astype(np.float32)
    splice = (rng.random((N, T)) > 0.3)
    splice[:, 0] = True
    kept = np.where(splice[..., None] & (np.abs(ie) > 0.1), ie, 0)
    np.testing.assert_allclose(attr.reduce_entries(jnp.asarray(ie), jnp.asarray(splice), 0.1, "sum"), kept.sum(1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attr.reduce_entries(jnp.asarray(ie), jnp.asarray(splice), 0.1, "mean"),
                               kept.sum(1) / splice.sum(1)[:, None], rtol=1e-5, atol=1e-6)


def test_relie_reldec_and_selection():
    ie = np.array([[0.5, 0.0, -2.0, 0.0], [1.5, 0.0, 2.0, 0.3]])
    np.testing.assert_allclose(relie.rel_ie(ie), [[0.25, 0.5, 0.5, 0.0], [0.75, 0.5, 0.5, 1.0]])
    W = np.zeros((4, 2, 3))
    W[1, 0, 0], W[1, 1, 1] = 3.0, 1.0
    np.testing.assert_allclose(relie.rel_dec(W, [1]), [[0.75], [0.25]])
    assert relie.select_top(ie, top=1).tolist() == [2]
    assert sorted(relie.select_top(ie, top=2).tolist()) == [0, 2]


def test_classes_two_and_three_way():
    two = relie.rel_ie(np.array([[1.0, 0.1, 0.5], [0.1, 1.0, 0.5]]))
    assert relie.classify(two, ["A", "B"]) == ["A specific (discontinued)", "B specific (emerged)",
                                              "shared (maintained)"]
    r3 = np.array([[0.8, 0.34, 0.45, 0.5, 0.2], [0.1, 0.33, 0.45, 0.25, 0.6], [0.1, 0.33, 0.1, 0.25, 0.2]])
    assert relie.classify(r3, ["A", "B", "C"]) == ["A specific", "all shared", "A+B shared", "other", "other"]


def test_lifecycles_over_a_series():
    names = ["s1", "s2", "s3", "s4"]
    ie = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.9, 1.0], [0.0, 1.0, 0.9, 0.0], [0.0, 0.0, 0.0, 0.0]])
    lc = relie.lifecycles(ie.T, names)  # rows above are latents; lifecycles takes [C, K]
    assert lc[0]["label"] == "emerges at s3, maintained" and lc[0]["emerges"] == "s3"
    assert lc[1]["label"] == "present throughout"
    assert lc[2]["label"] == "emerges at s2, discontinued at s4" and lc[2]["discontinued"] == "s4"
    assert lc[3]["label"] == "never active"
    assert lc[2]["abs_ie"] == [0.0, 1.0, 0.9, 0.0]


def test_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
        assert abs(relie.spearman(a, b) - scipy.stats.spearmanr(a, b).statistic) < 1e-12
    res = relie.ablation_correlations(np.array([[1.0, 2, 3, 4], [4.0, 3, 2, 1]]),
                                      np.array([[0.1, 0.3, 0.6, 0.9], [0.9, 0.7, 0.4, 0.1]]),
                                      np.array([[0.5, 0.4, 0.6, 0.5], [0.5, 0.6, 0.4, 0.5]]))
    assert res["rho_relie"] == pytest.approx(1.0)
    # two checkpoints: one correlation, of checkpoint B's ablation share with its RelDec
    share_b = np.array([4.0, 3, 2, 1]) / 5
    assert res["rho_reldec"] == pytest.approx(scipy.stats.spearmanr(share_b, [0.5, 0.6, 0.4, 0.5]).statistic)
    # C = 3: per checkpoint shares |delta_c| / sum_c |delta|, both correlations per checkpoint and averaged
    delta, rie, rdec = rng.normal(size=(3, 12)), rng.random((3, 12)), rng.random((3, 12))
    res3 = relie.ablation_correlations(delta, rie, rdec)
    share = np.abs(delta) / np.abs(delta).sum(0)
    want_ie = [scipy.stats.spearmanr(share[c], rie[c]).statistic for c in range(3)]
    want_dec = [scipy.stats.spearmanr(share[c], rdec[c]).statistic for c in range(3)]
    np.testing.assert_allclose(res3["per_checkpoint_relie"], want_ie, atol=1e-12)
    np.testing.assert_allclose(res3["per_checkpoint_reldec"], want_dec, atol=1e-12)
    assert res3["rho_relie"] == pytest.approx(np.mean(want_ie)) and res3["rho_reldec"] == pytest.approx(np.mean(want_dec))
