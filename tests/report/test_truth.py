"""The report's ground-truth rules on hand-made inputs: chance band, jump, false-early and jump-window counts."""

import numpy as np

from crosscoder_jax.analysis import labels
from crosscoder_jax.report import truth


def test_chance_band_and_jump():
    assert abs(truth.chance_band(32) - 1 / np.sqrt(32)) < 1e-12
    names = ["s0", "s1", "s2", "s3"]
    assert truth.jump_of({"s0": 0.5, "s1": 0.45, "s2": 0.9, "s3": 1.0}, names) == (1, 2, 0.45)
    assert truth.jump_of({"s0": 0.5}, names) is None


def _seed(early_ie: bool):
    names = ["step0", "step10", "step100", "step200", "step210", "step300"]
    steps = [0, 10, 100, 200, 210, 300]
    rng = np.random.default_rng(0)
    N = 400
    novel_sg = rng.random(N) < 0.2
    subj = rng.random(N) < 0.3
    props = np.stack([novel_sg, subj], axis=1)
    f = np.zeros((N, 3))
    f[:, 0] = novel_sg * (1 + rng.random(N))        # labelled novel&number==sg
    f[:, 1] = subj * (1 + rng.random(N))            # labelled role==subj: not about novel nouns
    ie = np.zeros((6, 3))
    ie[4:, 0] = 1.0
    if early_ie:
        ie[1:3, 0] = 2.0                            # an effect before the nouns exist: the shared code's
    ie[:, 1] = 0.5
    pres = {0: np.array([0, 0, 0, 0.02, 0.6, 0.7])}
    dec = np.full((3, 6), 0.3)  # flat decoder norms: onset at the first snapshot
    labs = labels.label_latents(f, props, ["novel&number==sg", "role==subj"], threshold=0.5)
    return truth.novel_seed(names, steps, 100, (3, 4, 0.5), labs, f.max(axis=0) > 0, ie, pres, top=1, decnorm_FC=dec)


def test_novel_seed_counts_false_early_and_the_jump_window():
    s = _seed(early_ie=True)
    assert s["labelled"] == 1 and s["selected"] == 1
    (row,) = s["latents"]
    assert row["latent"] == 0 and row["causal_onset"] == "step10" and row["early_causal"]
    assert row["gated_onset"] == "step210" and not row["early_gated"] and row["repr_onset"] == "step210"
    assert row["from_jump"] == -3 and row["gated_from_jump"] == 0
    assert s["false_early"] == {"causal": 1, "gated": 0, "repr": 0, "decnorm": 1} and row["decnorm_onset"] == "step0"
    assert s["near_jump"] == {"n": 1, "with_onset": 1, "within": 0}
    assert s["gated_near_jump"]["within"] == 1
    clean = _seed(early_ie=False)
    assert clean["false_early"]["causal"] == 0 and clean["near_jump"]["within"] == 1
    p = truth.pool({0: s, 1: clean})
    assert p["labelled"] == 2 and p["false_early_rate"] == {"causal": 0.5, "gated": 0.0, "repr": 0.0, "decnorm": 1.0}
    assert p["near_jump"] == {"n": 2, "within": 1, "fraction": 0.5}
    assert p["gated_near_jump"]["fraction"] == 1.0
