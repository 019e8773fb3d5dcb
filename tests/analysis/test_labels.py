"""Automatic latent labels: correlations against a plain formula, a planted latent, annotations."""

import numpy as np

from crosscoder_jax.synthetic import vocab
from crosscoder_jax.analysis import labels


def test_correlations_match_plain_pearson():
    rng = np.random.default_rng(0)
    N, F, K = 500, 7, 5
    f = np.maximum(rng.normal(size=(N, F)), 0.0)
    f[:, 3] = 0.0  # a dead latent: correlation 0, not nan
    p = rng.random((N, K)) < 0.3
    p[:, 4] = False  # a property that never holds
    got = labels.correlations(f, p, chunk=64)
    for i in range(F):
        for k in range(K):
            x, y = f[:, i], p[:, k].astype(float)
            if x.std() == 0 or y.std() == 0:
                want = 0.0
            else:
                want = np.sum((x - x.mean()) * (y - y.mean())) / np.sqrt(np.sum((x - x.mean()) ** 2) * np.sum((y - y.mean()) ** 2))
            assert abs(got[i, k] - want) < 1e-9, (i, k, got[i, k], want)


def test_planted_latent_is_labelled_with_its_property():
    tokens = vocab.encode("the keys to the cabinet are old . a dog that the men see runs . these sheep are happy .")
    contexts = [tokens[1:] for _ in range(3)]  # BOS dropped, as in the store
    toks = np.concatenate(contexts)
    pos = np.concatenate([np.arange(1, len(c) + 1) for c in contexts])
    names, props = labels.token_properties(toks, pos, bos_dropped=True)
    assert props.shape == (len(toks), len(names))
    k = names.index("subj_number==pl")
    rng = np.random.default_rng(1)
    f = np.abs(rng.normal(size=(len(toks), 4))) * 0.1
    f[:, 2] = props[:, k] * 3.0  # latent 2 is exactly the indicator (scaled)
    out = labels.label_latents(f, props, names)
    assert out[2]["property"] == "subj_number==pl" and out[2]["corr"] > 0.999 and out[2]["labelled"]
    assert labels.is_subject_number(out[2]["property"])
    assert sum(o["labelled"] for o in out) >= 1


def test_token_properties_follow_annotation():
    ids = vocab.encode("the keys to the cabinet are old .")
    names, props = labels.token_properties(np.asarray(ids[1:]), np.arange(1, len(ids)), bos_dropped=True)
    col = {n: props[:, i] for i, n in enumerate(names)}
    words = vocab.decode(ids[1:]).split()
    assert words[1] == "keys" and col["role==subj"][1] and col["role==subj&number==pl"][1]
    assert col["subj_number==pl"][1:].all() and not col["subj_number==pl"][0]
    assert col["attr_number==sg"][4] and col["subj_attr_differ"][4] and not col["attr_present"][3]
    # two contexts back to back split on the position reset
    starts = labels.context_starts(np.array([1, 2, 3, 1, 2, 1]))
    assert starts.tolist() == [0, 3, 5]


def test_number_carried_at_the_attractor_against_plain_pearson():
    """A latent that marks the subject's number at the attractor noun is labelled; one that marks the
    attractor's own number there, or the subject's number elsewhere only, is not; the correlations
    equal a plain float64 Pearson over the attractor tokens."""
    text = ("the keys to the cabinet are old . the key to the cabinets is old . "
            "the keys to the cabinets are old . the key to the cabinet is old . ")
    ids = vocab.encode(text * 3)
    toks, pos = np.asarray(ids[1:]), np.arange(1, len(ids))
    names, props = labels.token_properties(toks, pos, bos_dropped=True)
    col = {n: props[:, i] for i, n in enumerate(names)}
    at_attr = col["role==attr"]
    rng = np.random.default_rng(0)
    f = np.abs(rng.normal(size=(len(toks), 4))) * 0.1
    f[:, 0] += at_attr * col["subj_number==pl"] * 2.0           # subject number, at the attractor
    f[:, 1] += at_attr * col["attr_number==pl"] * 2.0           # the attractor's own number
    f[:, 2] += col["role==subj"] * col["subj_number==pl"] * 2.0  # subject number at the subject only
    out = labels.number_carried_at(f, props, names)
    rows = np.flatnonzero(at_attr)
    assert out["n_tokens"] == len(rows) == 12 and out["n_mismatch"] == 6
    for i in range(4):
        for key, target in (("subj", "subj_number==sg"), ("attr", "attr_number==sg")):
            x, y = f[rows, i].astype(np.float64), col[target][rows].astype(np.float64)
            want = np.corrcoef(x, y)[0, 1]
            assert abs(out[key][i] - want) < 1e-9, (i, key, out[key][i], want)
    assert out["subj"][0] < -0.99 and out["labelled"].tolist() == [True, False, False, False]
