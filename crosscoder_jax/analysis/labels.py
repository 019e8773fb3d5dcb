"""Automatic, checkable latent labels for the synthetic agreement language.

Every store token gets binary grammatical properties from `synthetic.annotate` (its role, its own
number, the number of its sentence's subject and attractor, whether they differ, ...). A latent's
label is the property whose per-token indicator has the largest absolute Pearson correlation with
the latent's activation over the same tokens; the latent counts as labelled when |corr| >= 0.5.
Everything here is NumPy over arrays: `properties` ([N, K] indicators) and `correlations`
([F, K]) can be checked against a plain formula.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crosscoder_jax.synthetic.annotate import ROLES, annotate
from crosscoder_jax.synthetic.vocab import BOS_ID

LABEL_THRESHOLD = 0.5
# roles whose number (the token's own) makes a useful combined property
_NUMBERED_ROLES = ("det_subj", "subj", "det_attr", "attr", "verb_rc", "verb", "det_obj", "obj", "refl")
# roles between the subject and the main verb, where the subject's number must be carried over
_CARRIER_ROLES = ("prep", "det_attr", "attr", "rel", "verb_rc")


def property_table(ann: dict[str, list]) -> tuple[list[str], np.ndarray]:
    """Binary properties of the tokens of one annotation (`synthetic.annotate.annotate` output).

    Returns (names [K], indicators bool [T, K]). The names are fixed for every input (so tables of
    several contexts stack): `subj_number==sg|pl`, `attr_present`, `attr_number==sg|pl`,
    `subj_attr_differ`, `subj_attr_same`, `number==sg|pl`, `role==R` for every grammar role,
    `role==R&number==sg|pl` for the noun, determiner, verb and reflexive roles, and
    `role==R&subj_number==sg|pl` for the roles between the subject and its verb (prep, det_attr,
    attr, rel, verb_rc), where the subject's number has to be carried across an attractor, and the
    novel nouns' (`vocab.NOVEL_NOUNS`): `novel`, `novel&number==sg|pl` (the token is a novel noun of
    that number), `subj_novel&subj_number==sg|pl` (the sentence's subject is a novel noun of that
    number, from the subject on). Annotations without the novel fields count no token as novel.
    """

    role = np.asarray(ann["role"], object)
    num = np.asarray(ann["number"], object)
    sn = np.asarray(ann["subj_number"], object)
    an = np.asarray(ann["attr_number"], object)
    nov = np.asarray(ann.get("novel", [False] * len(role)), bool)
    snov = np.asarray(ann.get("subj_novel", [False] * len(role)), bool)
    cols: dict[str, np.ndarray] = {}
    for v in ("sg", "pl"):
        cols[f"subj_number=={v}"] = sn == v
    cols["attr_present"] = an != ""
    for v in ("sg", "pl"):
        cols[f"attr_number=={v}"] = an == v
    both = (sn != "") & (an != "")
    cols["subj_attr_differ"] = both & (sn != an)
    cols["subj_attr_same"] = both & (sn == an)
    for v in ("sg", "pl"):
        cols[f"number=={v}"] = num == v
    for r in ROLES:
        cols[f"role=={r}"] = role == r
    for r in _NUMBERED_ROLES:
        for v in ("sg", "pl"):
            cols[f"role=={r}&number=={v}"] = (role == r) & (num == v)
    for r in _CARRIER_ROLES:
        for v in ("sg", "pl"):
            cols[f"role=={r}&subj_number=={v}"] = (role == r) & (sn == v)
    cols["novel"] = nov
    for v in ("sg", "pl"):
        cols[f"novel&number=={v}"] = nov & (num == v)
    for v in ("sg", "pl"):
        cols[f"subj_novel&subj_number=={v}"] = snov & (sn == v)
    names = list(cols)
    return names, np.stack([cols[n] for n in names], axis=1).astype(bool)


def context_starts(positions_N: np.ndarray) -> np.ndarray:
    """Row indices where a new context starts (the position does not increase)."""
    pos = np.asarray(positions_N)
    if len(pos) == 0:
        return np.zeros(0, np.int64)
    return np.concatenate([[0], np.flatnonzero(np.diff(pos) <= 0) + 1]).astype(np.int64)


_FIELDS = ("role", "number", "subj_number", "attr_number", "sentence", "novel", "subj_novel", "subj_index",
           "attr_index")


def token_annotations(tokens_N: np.ndarray, positions_N: np.ndarray, bos_dropped: bool = True) -> dict[str, np.ndarray]:
    """`synthetic.annotate` of store rows, as arrays [N]: each context annotated as a whole (with the
    BOS token put back in front when the store dropped it), plus "subj_token" and "attr_token", the
    token id of the sentence's subject head / attractor noun (-1 where none is seen yet)."""
    tokens_N = np.asarray(tokens_N)
    starts = list(context_starts(positions_N)) + [len(tokens_N)]
    parts: dict[str, list] = {k: [] for k in _FIELDS + ("subj_token", "attr_token")}
    for a, b in zip(starts[:-1], starts[1:]):
        ids = [int(t) for t in tokens_N[a:b]]
        pre = [BOS_ID] if bos_dropped and (not ids or ids[0] != BOS_ID) else []
        ann = annotate(pre + ids)
        full = pre + ids
        for k in _FIELDS:
            parts[k] += ann[k][len(pre):]
        for k, idx in (("subj_token", "subj_index"), ("attr_token", "attr_index")):
            parts[k] += [full[j] if j >= 0 else -1 for j in ann[idx][len(pre):]]
    return {k: np.asarray(v, object if k in ("role", "number", "subj_number", "attr_number") else None)
            for k, v in parts.items()}


def token_properties(tokens_N: np.ndarray, positions_N: np.ndarray, bos_dropped: bool = True
                     ) -> tuple[list[str], np.ndarray]:
    """Properties [N, K] of store rows (tokens and positions as in the activation store), from
    `token_annotations`."""
    return property_table(token_annotations(tokens_N, positions_N, bos_dropped))


def correlations(f_NF: np.ndarray, props_NK: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Pearson correlation [F, K] of every latent's activation with every property over N tokens,
    accumulated in float64 over row chunks. Constant columns (a latent that never fires, a property
    that never holds) get correlation 0."""
    N = f_NF.shape[0]
    F, K = f_NF.shape[1], props_NK.shape[1]
    sf, sff = np.zeros(F), np.zeros(F)
    sp, spp = np.zeros(K), np.zeros(K)
    sfp = np.zeros((F, K))
    for a in range(0, N, chunk):
        f = np.asarray(f_NF[a:a + chunk], np.float64)
        p = np.asarray(props_NK[a:a + chunk], np.float64)
        sf += f.sum(0)
        sff += (f * f).sum(0)
        sp += p.sum(0)
        spp += (p * p).sum(0)
        sfp += f.T @ p
    if N == 0:
        return np.zeros((F, K))
    mf, mp = sf / N, sp / N
    cov = sfp / N - np.outer(mf, mp)
    vf = np.maximum(sff / N - mf * mf, 0.0)
    vp = np.maximum(spp / N - mp * mp, 0.0)
    denom = np.sqrt(np.outer(vf, vp))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 1e-12 * max(1.0, float(denom.max(initial=0.0))), cov / denom, 0.0)
    return np.clip(corr, -1.0, 1.0)


def best_labels(corr_FK: np.ndarray, names: Sequence[str], threshold: float = LABEL_THRESHOLD
                ) -> list[dict[str, Any]]:
    """Per latent: the property with the largest |corr|, its correlation, and whether it is labelled."""
    corr_FK = np.asarray(corr_FK)
    if corr_FK.shape[1] == 0:
        return [{"latent": i, "property": None, "corr": 0.0, "labelled": False} for i in range(corr_FK.shape[0])]
    j = np.argmax(np.abs(corr_FK), axis=1)
    c = corr_FK[np.arange(len(j)), j]
    return [{"latent": i, "property": names[int(j[i])], "corr": float(c[i]), "labelled": bool(abs(c[i]) >= threshold)}
            for i in range(len(j))]


def label_latents(f_NF: np.ndarray, props_NK: np.ndarray, names: Sequence[str],
                  threshold: float = LABEL_THRESHOLD) -> list[dict[str, Any]]:
    """`best_labels(correlations(f, props), names)`: one dict per latent."""
    return best_labels(correlations(f_NF, props_NK), names, threshold)


def is_novel_number(prop: str | None) -> bool:
    """True for labels about a novel noun's number: the noun's own (`novel&number==v`) or its
    sentence's subject's (`subj_novel&subj_number==v`): the features of the construction that
    pretraining withholds until a known step."""
    return bool(prop) and prop.startswith(("novel&number==", "subj_novel&subj_number=="))


def is_subject_number(prop: str | None) -> bool:
    """True for labels about the subject's number: the sentence-level `subj_number==v`, the subject's
    number carried at a later role (`role==attr&subj_number==v`, ...), or the number of the subject
    noun or its determiner itself (`role==subj&number==v`, `role==det_subj&number==v`)."""
    if not prop:
        return False
    return "subj_number==" in prop or prop.startswith(("role==subj&number==", "role==det_subj&number=="))


def number_carried_at(f_NF: np.ndarray, props_NK: np.ndarray, names: Sequence[str], role: str = "attr",
                      threshold: float = LABEL_THRESHOLD) -> dict[str, Any]:
    """Which latents carry the subject's number at the tokens of `role` (default: the attractor noun,
    the last token before the verb across a PP, where predicting the verb needs the subject's number
    and the attractor's own number is the distractor).

    Over the tokens of `role` in sentences whose subject and attractor both have a number, the
    Pearson correlation [F] of each latent's activation with the subject being singular (`subj`) and
    with the attractor being singular (`attr`); a latent is labelled "subject number at the <role>"
    when |subj| >= `threshold` and |subj| > |attr| (it follows the subject, not the noun it sits on;
    the sign says which number it marks). Returns {"subj" [F], "attr" [F], "labelled" [F] bool,
    "n_tokens", "n_mismatch" (of those tokens, how many have subject and attractor numbers differing:
    without them the two correlations cannot be told apart)}."""
    col = {n: props_NK[:, i] for i, n in enumerate(names)}
    known = (col["subj_number==sg"] | col["subj_number==pl"]) & (col["attr_number==sg"] | col["attr_number==pl"])
    rows = np.flatnonzero(col[f"role=={role}"] & known)
    targets = np.stack([col["subj_number==sg"][rows], col["attr_number==sg"][rows]], axis=1)
    corr = correlations(f_NF[rows], targets) if len(rows) else np.zeros((f_NF.shape[1], 2))
    subj, attr = corr[:, 0], corr[:, 1]
    return {"subj": subj, "attr": attr, "labelled": (np.abs(subj) >= threshold) & (np.abs(subj) > np.abs(attr)),
            "n_tokens": int(len(rows)), "n_mismatch": int(np.sum(targets[:, 0] != targets[:, 1]))}
