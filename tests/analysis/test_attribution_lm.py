"""Attribution through real (tiny, random) GPT-NeoX checkpoints: splicing keeps the output, IG is
complete along its path, and the task analysis writes its CSV and summary."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_fixtures import tiny_gpt_neox
from crosscoder_jax import analysis, crosscoder as cc_lib, models
from crosscoder_jax.analysis import attribution
from crosscoder_jax.synthetic import pairs as grammar_pairs, vocab
from crosscoder_jax.data import tasks
from crosscoder_jax.crosscoder.export import Crosscoder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr")
    lms = [models.load(tiny_gpt_neox(root / f"m{i}", seed=20 + i)) for i in range(2)]
    spec = cc_lib.Spec(2, 32, 64, activation="l1")
    params = cc_lib.init_params(spec, jax.random.key(0))
    params["W_dec"] = params["W_dec"] * 40.0  # O(1) codes for O(1) activations
    params["W_enc"] = params["W_enc"] * 10.0
    cc = Crosscoder(params, {}, spec, np.array([1.0, 1.0]), ["m0", "m1"], {})
    pairs = grammar_pairs.make_pairs(next(iter(grammar_pairs.TASKS)), n=12, seed=3)
    prompts, report = tasks.build_prompts(pairs, vocab.hf_tokenizer())
    return lms, cc, prompts


def test_clean_splice_keeps_the_model_output(setup):
    lms, cc, prompts = setup
    res = attribution.attribute(lms, cc, prompts, layer=1, method="atp", batch_size=5)
    for c, lm in enumerate(lms):
        m = tasks.task_metrics(lm, prompts)
        assert res["metric"][c] == pytest.approx(-m["mean_clean_minus_patch"], abs=1e-4)


def test_ig_is_complete_along_its_path(setup):
    lms, cc, prompts = setup
    res = attribution.attribute(lms, cc, prompts, layer=1, method="ig", steps=64, threshold=0.0, batch_size=12)
    batch = attribution.encode_batch(lms, cc, prompts, layer=1, drop_bos=True)
    decs = attribution.decoders(cc)
    for c, lm in enumerate(lms):
        downstream = lambda r, lm=lm: models.logits_from(lm, r, jnp.asarray(prompts.mask_NT), layer=1)
        metric = attribution.spliced_metric(downstream, prompts, decs[c], batch.a_CNTD[c], batch.splice_NT)
        eps = batch.a_CNTD[c] - attribution.decode_one(batch.f_NTF, decs[c])
        target = float(jnp.mean(metric(jnp.zeros_like(batch.f_NTF), eps) - metric(batch.f_NTF, eps)))
        assert abs(target) > 1e-3
        assert res["ie_raw"][c].sum() == pytest.approx(target, rel=0.05, abs=1e-3)


def test_analyze_task_writes_csv_and_summary(setup, tmp_path):
    lms, cc, prompts = setup
    result = analysis.analyze_task(lms, ["m0", "m1"], cc, prompts, layer=1, threshold=0.0, top=3, batch_size=6,
                                   validate_top=5)
    csv_path, json_path = analysis.write_outputs(result, tmp_path, "task")
    rows = list(csv.DictReader(open(csv_path)))
    assert 3 <= len(rows) <= 6
    assert {"latent", "ie_m0", "relie_m1", "reldec_m0", "ablation_m1", "class", "lifecycle"} <= set(rows[0])
    for r in rows:
        assert float(r["relie_m0"]) + float(r["relie_m1"]) == pytest.approx(1.0)
    s = json.loads(json_path.read_text())
    assert set(s["task"]) == {"m0", "m1"} and "rho_relie" in s["ablation"]
    assert len(s["validation"]["ig_vs_exact"]) == 2
    # lifecycles over the series: decoder norms of the normalised weights, onsets from both
    W = np.asarray(cc.params["W_dec"], np.float64)
    for r in rows:
        assert float(r["decnorm_m1"]) == pytest.approx(np.linalg.norm(W[int(r["latent"]), 1]), rel=1e-5)
        assert r["causal_onset"] in ("m0", "m1") and r["repr_onset"] in ("m0", "m1")
    assert set(s["timeline"]["causal_onsets_by_tau"]) == {"0.1", "0.3", "0.5"}


def test_validation_uses_the_runs_own_settings(setup):
    """AtP with the mean patch is validated as AtP against exact mean patching, each checkpoint's
    latents patched in that checkpoint."""
    lms, cc, prompts = setup
    res = attribution.attribute(lms, cc, prompts, layer=1, method="atp", patch="mean", threshold=0.0, batch_size=6)
    v = analysis.task_analysis._validate(lms, cc, prompts, 1, res["ie_raw"], method="atp", steps=10, patch="mean",
                                         eps_patch="clean", drop_bos=True, batch_size=6, top=4)
    assert "ig_vs_exact" not in v and "atp_vs_exact" in v and v["patch"] == "mean" and v["method"] == "atp"
    lat = np.argsort(-np.abs(res["ie_raw"]), axis=1)[:, :4]
    per = attribution.exact_effects(lms, cc, prompts, 1, lat, patch="mean", batch_size=6)
    for c in range(2):
        alone = attribution.exact_effects(lms, cc, prompts, 1, lat[c], patch="mean", batch_size=6)[c]
        np.testing.assert_allclose(per[c], alone, rtol=1e-5, atol=1e-6)
        assert v["atp_vs_exact"][c] == pytest.approx(analysis.relie.spearman(res["ie_raw"][c, lat[c]], per[c]))


def test_unequal_scales_match_a_raw_space_reference(setup):
    """Input scales 0.5 and 4: the exact single-latent ablation and AtP equal a reference computed
    by hand in raw space (float64 codes from the raw-space weights, decoder rows subtracted from the
    clean residual, the model run on from the layer)."""
    lms, cc, prompts = setup
    scales = np.array([0.5, 4.0])
    cc_s = cc._replace(scales=scales)
    latents = np.arange(4)
    got = attribution.exact_effects(lms, cc_s, prompts, 1, latents, batch_size=12)
    atp = attribution.attribute(lms, cc_s, prompts, layer=1, method="atp", threshold=0.0, batch_size=12)["ie_raw"]
    ids, mask = jnp.asarray(prompts.ids_NT), jnp.asarray(prompts.mask_NT)
    a = [np.asarray(models.residual_at(lm, ids, mask, layer=1), np.float64) for lm in lms]
    p = {k: np.asarray(v, np.float64) for k, v in cc.params.items()}
    W_enc_raw, W_dec_raw = p["W_enc"] * scales[:, None, None], p["W_dec"] / scales[None, :, None]
    f = np.maximum(sum(a[c] @ W_enc_raw[c] for c in range(2)) + p["b_enc"], 0)  # l1 codes: relu
    splice = (prompts.mask_NT > 0) & (np.arange(ids.shape[1])[None] >= 1)
    f = f * splice[..., None]
    rows = np.arange(prompts.n)

    @jax.jit
    def metric_N(lm, resid):  # logit[patch] - logit[clean] at the last position, from the layer on
        logits = models.logits_at_from(lm, resid, mask, 1, jnp.asarray(prompts.last_N))
        return logits[rows, prompts.patch_N] - logits[rows, prompts.clean_N]

    def metric(lm, resid):
        return np.asarray(metric_N(lm, jnp.asarray(resid, jnp.float32)), np.float64)

    grad_m = jax.jit(jax.grad(lambda lm, r: jnp.sum(metric_N(lm, r)), argnums=1))
    for c, lm in enumerate(lms):
        m0 = metric(lm, a[c])
        ref = [np.mean(metric(lm, a[c] - f[..., i:i + 1] * W_dec_raw[i, c]) - m0) for i in latents]
        np.testing.assert_allclose(got[c], ref, rtol=2e-3, atol=2e-4)
        assert np.max(np.abs(ref)) > 1e-2
        # AtP: the gradient of m at the clean residual times the zero-ablation's change of it
        grad = np.asarray(grad_m(lm, jnp.asarray(a[c], jnp.float32)), np.float64)
        ref_atp = [np.sum(grad * -(f[..., i:i + 1] * W_dec_raw[i, c])) / prompts.n for i in latents]
        np.testing.assert_allclose(atp[c, latents], ref_atp, rtol=2e-3, atol=2e-4)


def test_mean_ablation_patches_to_the_mean_code(setup):
    lms, cc, prompts = setup
    batch = attribution.encode_batch(lms, cc, prompts, layer=1, drop_bos=True)
    f_mean = attribution.mean_code(lms, cc, prompts, layer=1, drop_bos=True, batch_size=5)
    manual = np.asarray(batch.f_NTF).sum((0, 1)) / np.asarray(batch.splice_NT).sum()
    np.testing.assert_allclose(f_mean, manual, rtol=1e-5, atol=1e-6)
    patched = np.asarray(attribution._patch_codes(batch, f_mean))
    assert np.allclose(patched[np.asarray(batch.splice_NT)], manual) and not patched[:, 0].any()
    zero = attribution.attribute(lms, cc, prompts, layer=1, method="atp", threshold=0.0, batch_size=12)["ie_raw"]
    mean = attribution.attribute(lms, cc, prompts, layer=1, method="atp", threshold=0.0, patch="mean",
                                 batch_size=12)["ie_raw"]
    assert not np.allclose(zero, mean)


def test_one_compilation_per_task_whatever_the_batches(setup):
    lms, cc, prompts = setup
    attribution.checkpoint_program.clear_cache()
    attribution.attribute(lms, cc, prompts, layer=1, method="ig", steps=2, batch_size=5)  # 5 + 5 + 2 prompts
    assert attribution.checkpoint_program._cache_size() == 1
