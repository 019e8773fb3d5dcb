"""Onset / peak / offset over N snapshots, causal and representational, and the lag between them."""

import numpy as np

from crosscoder_jax.analysis import timeline


def test_rule_on_hand_made_series():
    opo = timeline.onset_peak_offset
    # rises at 2, peaks at 4, falls below 0.3 * peak from 6 on: onset 2, peak 4, offset 6
    assert opo([0, 0.1, 0.5, 0.8, 1.0, 0.6, 0.1, 0.0]) == (2, 4, 6)
    # a blip at 1 that does not persist is not the onset
    assert opo([0, 0.5, 0.0, 0.4, 1.0, 1.0]) == (3, 4, None)
    # a lone spike: onset at the peak, offset right after
    assert opo([0, 0, 1.0, 0, 0]) == (2, 2, 3)
    # a dip of one snapshot is not an offset; the last snapshot alone is enough at the end
    assert opo([1.0, 0.1, 0.9, 0.9, 0.1]) == (0, 0, 4)
    assert opo([0, 0, 0, 0.2, 1.0]) == (4, 4, None)
    # the sign of IE does not matter, an all-zero series has no lifecycle
    assert opo([0, -0.5, -1.0, -0.8]) == (1, 2, None)
    assert opo(np.zeros(4)) == (None, None, None)
    # tau moves the onset
    a = [0.05, 0.2, 0.4, 1.0, 1.0]
    assert [opo(a, tau)[0] for tau in (0.1, 0.3, 0.5)] == [1, 2, 3]


def test_lag_and_counts():
    names = ["step0", "step10", "step100", "step1000"]
    ie = np.array([[0, 0, 1.0, 1.0], [0, 1.0, 1.0, 0], [0, 0, 0, 0]]).T        # [C, K]
    dec = np.array([[0.1, 1.0, 1.0, 1.0], [0, 1.0, 1.0, 1.0], [1, 1, 1, 1]]).T
    lines = timeline.latent_timelines(ie, dec, names)
    assert lines[0] == {"causal_onset": "step100", "causal_peak": "step100", "causal_offset": None,
                        "repr_onset": "step10", "repr_peak": "step10", "repr_offset": None,
                        "lag_snapshots": 1, "lag_steps": 90}
    assert lines[1]["causal_offset"] == "step1000" and lines[1]["lag_snapshots"] == 0
    assert lines[2]["causal_onset"] is None and lines[2]["lag_snapshots"] is None
    lag = timeline.lag_summary(lines)
    assert (lag["n"], lag["represented_first"], lag["same_snapshot"]) == (2, 1, 1)
    counts = timeline.onset_counts(ie, names)
    assert counts["0.3"]["onset"] == {"step0": 0, "step10": 1, "step100": 1, "step1000": 0}
    assert counts["0.3"]["offset"]["step1000"] == 1 and counts["0.3"]["never_off"] == 1
    assert timeline.steps_of(["a", "step1"]) is None


def test_vectorised_onsets_equal_the_rule():
    rng = np.random.default_rng(0)
    series = [rng.random(9) * (rng.random(9) < p) for p in (0.2, 0.5, 0.9) for _ in range(300)]
    series += [np.zeros(9), np.eye(9)[4], np.eye(9)[8], np.linspace(0, 1, 9), -np.linspace(1, 0, 9)]
    a = np.stack(series)
    for tau, persist in ((0.3, 2), (0.1, 2), (0.5, 3), (0.3, 1)):
        want = [timeline.onset_peak_offset(x, tau, persist)[0] for x in a]
        got = timeline.onsets(a, tau, persist)
        assert [(-1 if w is None else w) for w in want] == got.tolist(), (tau, persist)
