"""Representational presence of a labelled latent's feature at each snapshot, by a probe that must
generalise to tokens it never saw.

Why decoder norms stay flat on the tiny model: every snapshot's activations are scaled to the same
mean norm, and a crosscoder has to reconstruct each of them with the one shared code, so a latent
that fires on some tokens gets a decoder row at every snapshot that reconstructs whatever those
tokens' activations hold there, random-init embeddings included. A random embedding is a direction
of its own for every token: any few dozen of them are linearly separable in D dimensions, so
"linearly present" in-sample holds at step 0 for every token category (and for the categories of
earlier tokens, which attention mixes in). What a random-init model cannot do is place tokens it has
not been fitted on: a feature is present at snapshot c when a linear read-out of c's activations,
fitted on some carrier tokens, predicts the latent on carriers left out.

`presence(acts, f, carrier, domain)`: over the `domain` rows (the tokens where the latent's label
can hold: novel nouns for `novel&number==pl`, tokens after a subject for `subj_number==sg`, ...),
a ridge read-out from snapshot c's activations [D] to the latent's activation, cross-validated in
`K_FOLDS` folds that split the *carrier* token types (the token that carries the label's value: the
token itself for its own number, the subject head noun for the subject's number, the attractor
noun for the attractor's): the pooled held-out R^2, clipped at 0. `label_domain` maps a label
(`labels.property_table` names) to its domain and carrier. Onset: `timeline`'s rule on that series
where it reaches `FLOOR` (an R^2 below it is no presence).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crosscoder_jax.analysis import timeline

K_FOLDS = 5
FLOOR = 0.1
RIDGE = 1e-2          # ridge strength per row, in the units of the normalised activations' second moment
MIN_ROWS = 50         # fewer domain rows, or carriers in fewer than 2 folds: no presence is computed


def label_domain(prop: str, ann: dict[str, np.ndarray], tokens_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(domain mask [N] bool, carrier token id [N]) of a label on rows annotated by
    `labels.token_annotations`."""
    tok = np.asarray(tokens_N, np.int64)
    role, num = ann["role"], ann["number"]
    sn, an = ann["subj_number"], ann["attr_number"]
    subj_tok, attr_tok = np.asarray(ann["subj_token"], np.int64), np.asarray(ann["attr_token"], np.int64)
    known_s, known_a = (sn == "sg") | (sn == "pl"), (an == "sg") | (an == "pl")
    if prop.startswith("novel&number=="):
        return np.asarray(ann["novel"], bool), tok
    if prop.startswith("subj_novel&subj_number=="):
        return np.asarray(ann["subj_novel"], bool) & known_s, subj_tok
    if prop.startswith("role==") and "&subj_number==" in prop:
        r = prop[len("role=="):prop.index("&")]
        return (role == r) & known_s, subj_tok
    if prop.startswith("role==") and "&number==" in prop:
        r = prop[len("role=="):prop.index("&")]
        return role == r, tok
    if prop.startswith("subj_number=="):
        return known_s, subj_tok
    if prop == "attr_present":
        return known_s, subj_tok
    if prop.startswith("attr_number=="):
        return known_a, attr_tok
    if prop in ("subj_attr_differ", "subj_attr_same"):
        return known_s & known_a, subj_tok * 100_003 + attr_tok
    if prop.startswith("number=="):
        return (num == "sg") | (num == "pl"), tok
    return np.ones(len(tok), bool), tok


def folds_of(carrier_N: np.ndarray, k: int = K_FOLDS) -> np.ndarray:
    """Fold [N] of each row: its carrier token type hashed into k folds (the same type, the same fold)."""
    return (np.asarray(carrier_N, np.int64) * 2654435761 % 2**32) % k


def presence(acts_NCD: np.ndarray, f_NL: np.ndarray, carrier_N: np.ndarray, domain_N: np.ndarray,
             k: int = K_FOLDS, ridge: float = RIDGE) -> np.ndarray:
    """Held-out-carrier R^2 [C, L] of L latents' activations (columns of f) from each snapshot's
    activations over the domain rows, clipped at 0; NaN where the domain is too small to judge (or
    a latent is constant on it). Each fold's ridge read-out is fitted on the other folds' rows."""
    rows = np.flatnonzero(np.asarray(domain_N, bool))
    C, L = acts_NCD.shape[1], f_NL.shape[1]
    fold = folds_of(np.asarray(carrier_N)[rows], k)
    folds = np.unique(fold)
    if len(rows) < MIN_ROWS or len(folds) < 2:
        return np.full((C, L), np.nan)
    Y = np.asarray(f_NL, np.float64)[rows]
    sst = np.sum((Y - Y.mean(0)) ** 2, axis=0)
    member = [fold == j for j in folds]
    out = np.zeros((C, L))
    for c in range(C):
        X = np.concatenate([np.asarray(acts_NCD[rows, c], np.float64), np.ones((len(rows), 1))], axis=1)
        G_j = [X[m].T @ X[m] for m in member]  # each fold's moments once; a fold's training set is the rest
        XY_j = [X[m].T @ Y[m] for m in member]
        G, XY = sum(G_j), sum(XY_j)
        scale = np.trace(G[:-1, :-1]) / len(rows) / (X.shape[1] - 1)  # ridge in the data's own units
        sse = np.zeros(L)
        for m, Gm, XYm in zip(member, G_j, XY_j):
            n_tr = len(rows) - m.sum()
            B = np.linalg.solve(G - Gm + ridge * n_tr * scale * np.eye(X.shape[1]), XY - XYm)
            sse += np.sum((Y[m] - X[m] @ B) ** 2, axis=0)
        out[c] = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    return np.where(np.isnan(out), np.nan, np.clip(out, 0.0, 1.0))


def onset(p_C: np.ndarray, tau: float = 0.3, floor: float = FLOOR) -> int | None:
    """Representational onset (snapshot index) of a presence series: `timeline`'s rule over the
    values that reach `floor`; None when none does (or the series is undefined)."""
    p = np.nan_to_num(np.asarray(p_C, np.float64), nan=0.0)
    p = np.where(p >= floor, p, 0.0)
    o = int(timeline.onsets(p[None, :], tau)[0])
    return None if o < 0 else o


def gated_onset(ie_C: np.ndarray, p_C: np.ndarray, tau: float = 0.3, floor: float = FLOOR) -> int | None:
    """Causal onset among the snapshots where the feature is present (presence at least
    max(floor, tau x its peak)): an IE at a snapshot whose activations do not hold the feature is an
    effect of the crosscoder's shared code (computed from the other snapshots), not of a feature
    that snapshot's model has."""
    p = np.nan_to_num(np.asarray(p_C, np.float64), nan=0.0)
    if p.max() < floor:
        return None
    here = p >= max(floor, tau * p.max())
    o = int(timeline.onsets((np.abs(np.asarray(ie_C, np.float64)) * here)[None, :], tau)[0])
    return None if o < 0 else o


def latent_presence(acts_NCD: np.ndarray, f_NF: np.ndarray, tokens_N: np.ndarray, ann: dict[str, np.ndarray],
                    latent_labels: dict[int, str]) -> dict[int, np.ndarray]:
    """Presence series [C] of each latent in `latent_labels` ({latent: its label}); latents whose
    labels share a domain and carrier are computed together."""
    groups: dict[tuple, tuple[np.ndarray, np.ndarray, list[int]]] = {}
    for i, prop in latent_labels.items():
        domain, carrier = label_domain(prop, ann, tokens_N)
        key = (domain.tobytes(), np.asarray(carrier).tobytes())
        groups.setdefault(key, (domain, carrier, []))[2].append(int(i))
    out: dict[int, np.ndarray] = {}
    for domain, carrier, ids in groups.values():
        p = presence(acts_NCD, np.asarray(f_NF)[:, ids], carrier, domain)
        out.update({i: p[:, k] for k, i in enumerate(ids)})
    return out


def summary(series: dict[int, np.ndarray], names: Sequence[str], tau: float = 0.3) -> dict[str, Any]:
    """Per latent: its presence series and representational onset (name)."""
    return {int(i): {"presence": [None if np.isnan(v) else float(v) for v in p],
                     "onset": (lambda o: None if o is None else names[o])(onset(p, tau))}
            for i, p in series.items()}
