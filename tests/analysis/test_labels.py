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
