"""Representational presence: a read-out must generalise to carrier tokens it was not fitted on."""

import numpy as np

from crosscoder_jax.analysis import labels, presence
from crosscoder_jax.synthetic import grammar, vocab


def _tokens(n_types=16, per=60, D=24, shared=0.0, seed=0):
    """Rows of n_types token types (type t repeated `per` times), each type a random embedding; the
    latent fires on the first half of the types. `shared` adds a common direction to that half (a
    learned feature); without it only the types' own random directions tell the halves apart."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_types, D))
    tok = np.repeat(np.arange(n_types), per)
    on = (tok < n_types // 2).astype(float)
    u = rng.standard_normal(D)
    acts = emb[tok] + shared * on[:, None] * u / np.linalg.norm(u) * np.sqrt(D) + 0.1 * rng.standard_normal((len(tok), D))
    return acts[:, None, :], on[:, None], tok


def test_a_random_embedding_category_is_absent_and_a_shared_direction_present():
    acts, f, tok = _tokens(shared=0.0)
    dom = np.ones(len(tok), bool)
    assert presence.presence(acts, f, tok, dom)[0, 0] < 0.1
    # fitted and judged on the same token types, the random embeddings alone separate the halves
    assert presence.presence(acts, f, np.arange(len(tok)), dom)[0, 0] > 0.9
    acts, f, tok = _tokens(shared=1.0)
    assert presence.presence(acts, f, tok, dom)[0, 0] > 0.7


def test_presence_per_snapshot_and_too_small_domains():
    a0, f, tok = _tokens(shared=0.0, seed=1)
    a1, _, _ = _tokens(shared=1.0, seed=1)
    acts = np.concatenate([a0, a1], axis=1)  # snapshot 0 before the feature, snapshot 1 after
    p = presence.presence(acts, f, tok, np.ones(len(tok), bool))
    assert p.shape == (2, 1) and p[0, 0] < 0.1 < 0.7 < p[1, 0]
    small = np.zeros(len(tok), bool)
    small[:10] = True
    assert np.isnan(presence.presence(acts, f, tok, small)).all()
    one_type = tok == 3
    assert np.isnan(presence.presence(acts, f, tok, one_type)).all()  # one carrier: nothing to leave out


def test_onsets_of_presence_series():
    assert presence.onset(np.array([0.0, 0.05, 0.02, 0.5, 0.6, 0.7])) == 3
    assert presence.onset(np.array([0.02, 0.05, 0.08, 0.05])) is None  # never reaches the floor
    assert presence.onset(np.array([np.nan, 0.0, 0.4, 0.5])) == 2
    ie = np.array([2.0, 2.0, 0.5, 1.0, 1.0, 1.0])  # a large effect before the feature is present
    p = np.array([0.0, 0.0, 0.05, 0.6, 0.7, 0.7])
    assert presence.gated_onset(ie, p) == 3
    assert presence.gated_onset(ie, np.zeros(6)) is None


def test_label_domains_and_carriers_on_the_language():
    toks = grammar.batch(3, 0, 40, 33, grammar.GrammarConfig(p_novel=0.3, p_pp=0.3))[:, 1:]
    pos = np.tile(np.arange(1, 33), len(toks))
    toks = toks.reshape(-1)
    ann = labels.token_annotations(toks, pos, bos_dropped=True)
    dom, car = presence.label_domain("novel&number==pl", ann, toks)
    assert dom.any() and all(vocab.VOCAB[t] in vocab.NOVEL_WORDS for t in toks[dom]) and (car == toks).all()
    dom, car = presence.label_domain("role==attr&subj_number==sg", ann, toks)
    assert dom.any() and (ann["role"][dom] == "attr").all()
    subj_rows = np.flatnonzero(dom)
    # the carrier is the sentence's subject noun: a noun token id, not the attractor's own
    assert all(vocab.WORD_INFO[vocab.VOCAB[c]][0] == "noun" for c in car[subj_rows])
    assert (car[subj_rows] == ann["subj_token"][subj_rows]).all()
    dom, car = presence.label_domain("role==period", ann, toks)
    assert dom.all() and (car == toks).all()
