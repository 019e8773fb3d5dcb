"""Seed matching, prompt bootstrap and seed agreement of onsets, on small hand-made inputs."""

import numpy as np
import pytest

from crosscoder_jax.analysis import matching, timeline, uncertainty


def _crosscoders(seed=0, F=24, C=3, D=8, swapped=4):
    """Decoder b holds a's latents in another order, rescaled per snapshot and slightly perturbed,
    except `swapped` latents that b replaces with new random ones."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((F, C, D))
    perm = rng.permutation(F)
    b = a[perm] * rng.uniform(0.5, 2.0, (F, 1, 1)) + 0.05 * rng.standard_normal((F, C, D))
    new = rng.choice(F, swapped, replace=False)  # rows of b that are new features
    b[new] = rng.standard_normal((swapped, C, D))
    return a, b, perm, new


def test_matching_recovers_a_permutation_and_leaves_new_latents_unmatched():
    a, b, perm, new = _crosscoders()
    m = matching.match(a, b, cut=0.7)
    inv = np.argsort(perm)  # a's latent i sits at row inv[i] of b
    kept = [i for i in range(len(a)) if inv[i] not in set(new)]
    assert all(m["partner"][i] == inv[i] and m["cos"][i] > 0.95 for i in kept)
    gone = [i for i in range(len(a)) if inv[i] in set(new)]
    assert all(m["partner"][i] == -1 and np.isnan(m["cos"][i]) for i in gone)
    # one to one, and a dead latent of b is never a partner
    p = m["partner"][m["partner"] >= 0]
    assert len(set(p.tolist())) == len(p)
    live_b = np.ones(len(b), bool)
    live_b[inv[kept[0]]] = False
    assert matching.match(a, b, 0.7, live_b=live_b)["partner"][kept[0]] == -1
    with pytest.raises(ValueError, match="same store"):
        matching.match(a, b[:, :2])


def test_assignment_maximises_the_summed_cosine():
    cos = np.array([[0.9, 0.8], [0.85, 0.1]])  # greedy would pair 0-0 and leave 1 alone
    partner, value = matching.assign(cos, cut=0.5)
    assert partner.tolist() == [1, 0] and np.allclose(value, [0.8, 0.85])
    partner, _ = matching.assign(cos, cut=0.95)
    assert partner.tolist() == [-1, -1]


def test_cosine_stats_chance_and_nearest_neighbour():
    eye = np.eye(12).reshape(12, 3, 4)  # orthogonal latents: the nearest other one is at cosine 0
    s = matching.cosine_stats(eye)
    assert s["dims"] == 12 and s["nearest_within_max"] == 0.0
    assert 0.5 < s["chance_999"] < 1.0  # 12 dimensions: random directions are often close
    big = matching.cosine_stats(np.random.default_rng(1).standard_normal((50, 23, 96)))
    assert big["chance_999"] < 0.1 and big["nearest_within_q50"] < 0.15


def test_bootstrap_matches_a_loop_over_resamples():
    rng = np.random.default_rng(3)
    C, N, K = 7, 30, 5
    ie = rng.random((C, N, K)) * (rng.random((C, N, K)) < 0.4) * np.linspace(0.2, 1, C)[:, None, None]
    onset = timeline.onsets(ie.mean(axis=1).T)
    out = uncertainty.bootstrap_onsets(ie, onset, n_boot=50, seed=9)
    counts = np.random.default_rng(9).multinomial(N, np.full(N, 1 / N), size=50)
    ref = np.array([[timeline.onset_peak_offset((ie * c[None, :, None]).sum(axis=1)[:, k] / N)[0] for k in range(K)]
                    for c in counts], float)
    agree = (np.abs(ref - onset[None, :]) <= 1).mean(axis=0)
    assert np.allclose(out["agreement"], agree)
    assert (out["lo"] <= onset).all() and (out["hi"] >= onset).all() and (out["lo"] <= out["hi"]).all()
    assert np.array_equal(out["lo"], np.quantile(ref, 0.025, axis=0, method="lower").astype(int))
    assert np.array_equal(out["stable"], agree >= uncertainty.PROMPT_STABLE)


def test_identical_prompts_give_a_sure_onset_and_split_prompts_do_not():
    N = 40
    early = np.array([0, 1, 1, 1, 1, 1.0])
    late = np.array([0, 0, 0, 0, 1, 1.0])
    same = np.repeat(early[:, None, None], N, axis=1)
    out = uncertainty.bootstrap_onsets(same, np.array([1]), n_boot=40)
    assert out["lo"][0] == out["hi"][0] == 1 and out["agreement"][0] == 1.0 and out["stable"][0]
    # 12 of 40 prompts use the latent early: the mean sits at 0.3 of the peak there, the threshold
    split = np.concatenate([np.repeat(early[:, None, None], 12, 1), np.repeat(late[:, None, None], 28, 1)], 1)
    onset = timeline.onsets(split.mean(axis=1).T)
    out = uncertainty.bootstrap_onsets(split, onset, n_boot=200)
    assert onset[0] == 1 and out["lo"][0] == 1 and out["hi"][0] == 4 and not out["stable"][0]
    assert 0.2 < out["agreement"][0] < 0.8


def test_seed_onsets_and_agreement():
    C = 6
    ie0 = np.zeros((C, 3))
    ie0[2:, 0] = 1.0   # latent 0: onset 2
    ie0[4:, 1] = 1.0   # latent 1: onset 4
    ie1 = np.zeros((C, 4))
    ie1[3:, 2] = 1.0   # seed 1's match of latent 0 (its latent 2): onset 3, within one
    ie1[1:, 3] = 1.0   # seed 1's match of latent 1 (its latent 3): onset 1, far
    ie2 = np.zeros((C, 3))
    ie2[2:, 0] = 1.0   # seed 2 matches latent 0 only
    partners = [None, np.array([2, 3, -1]), np.array([0, -1, -1])]
    matched, partner, onset = uncertainty.seed_onsets([ie0, ie1, ie2], partners, [0, 1, 2])
    assert onset.tolist() == [[2, 4, -1], [3, 1, -1], [2, -1, -1]]
    assert partner[1].tolist() == [2, 3, -1] and matched[:, 2].tolist() == [True, False, False]
    agr = uncertainty.seed_agreement(matched, onset)
    assert np.allclose(agr["match_fraction"], [1, 2 / 3, 1 / 3])
    assert np.allclose(agr["agreement"], [1, 1 / 3, 0]) and agr["stable"].tolist() == [True, False, False]
    assert uncertainty.shares(agr["stable"], [True, True, False]) == {"n": 3, "seed_stable": 1 / 3,
                                                                     "prompt_stable": 2 / 3, "both": 1 / 3}
