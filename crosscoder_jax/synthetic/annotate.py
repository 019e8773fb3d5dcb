"""Per-token grammatical annotation of the synthetic language: each token's role and the
grammatical numbers in play, the properties that latents are labelled by (`analysis.labels`)."""

from __future__ import annotations

from typing import Sequence

from crosscoder_jax.synthetic.vocab import BOS, EOS, NONE, NOVEL_WORDS, PAD, SPECIALS, VOCAB, WORD_INFO

# ---------------------------------------------------------------------------------------------
# Annotation of any token sequence
# ---------------------------------------------------------------------------------------------

ROLES = ("bos", "eos", "pad", "unk", "period", "det_subj", "subj", "prep", "det_attr", "attr",
         "rel", "verb_rc", "verb", "det_obj", "obj", "adj", "refl", "other")

# parser transitions: state -> {category: (role, next_state)}
_TRANSITIONS = {
    "start": {"det": ("det_subj", "subj")},
    "subj": {"noun": ("subj", "after_subj")},
    "after_subj": {"prep": ("prep", "pp_det"), "rel": ("rel", "rel"), "verb": ("verb", "vp")},
    "pp_det": {"det": ("det_attr", "pp_noun")},
    "pp_noun": {"noun": ("attr", "main_verb")},
    "rel": {"det": ("det_attr", "orc_noun"), "verb": ("verb_rc", "src_det")},
    "orc_noun": {"noun": ("attr", "orc_verb")},
    "orc_verb": {"verb": ("verb_rc", "main_verb")},
    "src_det": {"det": ("det_attr", "src_noun")},
    "src_noun": {"noun": ("attr", "main_verb")},
    "main_verb": {"verb": ("verb", "vp")},
    "vp": {"det": ("det_obj", "obj"), "adj": ("adj", "end"), "refl": ("refl", "end")},
    "obj": {"noun": ("obj", "end")},
    "end": {},
}


def annotate(tokens: Sequence[int] | Sequence[str] | str) -> dict[str, list]:
    """Per-token grammatical annotation of a token sequence of this language.

    `tokens`: ids, words, or a whitespace-separated string (specials allowed; several sentences and
    truncated windows are fine). Returns parallel lists, one entry per token:
      role:        see ROLES ("subj" = subject head noun, "attr" = attractor noun inside the
                   subject's PP / relative clause, "verb" = main verb, "verb_rc" = relative-clause
                   verb, "other" = does not parse)
      number:      the token's own grammatical number in context ("sg"/"pl"/""): nouns take their
                   phrase's number (from determiner or verb where the noun is invariant), verbs
                   and reflexives their form's, determiners theirs ("the" -> "")
      subj_number: number of the sentence's subject, from the subject head noun to the period
      attr_number: number of the sentence's attractor, from the attractor noun to the period
                   ("" where none or not yet seen)
      sentence:    index of the sentence the token belongs to (-1 for specials)
      novel:       the token is a novel noun (`vocab.NOVEL_NOUNS`)
      subj_novel:  the sentence's subject is a novel noun, from the subject head noun to the period
      subj_index:  position of the sentence's subject head noun, from it to the period (-1 elsewhere)
      attr_index:  position of the sentence's attractor noun, from it to the period (-1 elsewhere)
    """
    if isinstance(tokens, str):
        tokens = tokens.split()
    words = [VOCAB[int(t)] if not isinstance(t, str) else t for t in tokens]
    n = len(words)
    role, number = ["other"] * n, [NONE] * n
    subj_num, attr_num, sent = [NONE] * n, [NONE] * n, [-1] * n
    novel = [w in NOVEL_WORDS for w in words]
    subj_novel = [False] * n
    subj_idx, attr_idx = [-1] * n, [-1] * n

    def close(idx: list[int]) -> None:
        """Resolves phrase numbers of one sentence (token positions idx) and fills its fields."""
        r = {role[i]: i for i in reversed(idx)}  # first position of each role

        def phrase_num(det_role, noun_role, verb_role=None):
            nums = [number[r[k]] for k in (noun_role, det_role) if k in r]
            if verb_role and verb_role in r:
                nums.append(number[r[verb_role]])
            return next((x for x in nums if x), NONE)

        s_num = phrase_num("det_subj", "subj", "verb")
        a_verb = "verb_rc" if any(role[i] == "rel" for i in idx) and "det_attr" in r and \
            "verb_rc" in r and r["verb_rc"] > r["det_attr"] else None
        a_num = phrase_num("det_attr", "attr", a_verb)
        o_num = phrase_num("det_obj", "obj")
        for key, val in (("subj", s_num), ("attr", a_num), ("obj", o_num)):
            if key in r:
                number[r[key]] = val
        for i in idx:
            if "subj" in r and i >= r["subj"]:
                subj_num[i] = s_num
                subj_novel[i] = novel[r["subj"]]
                subj_idx[i] = r["subj"]
            if "attr" in r and i >= r["attr"]:
                attr_num[i] = a_num
                attr_idx[i] = r["attr"]

    state, k, cur = "start", 0, []
    for i, w in enumerate(words):
        if w in SPECIALS or w not in WORD_INFO:
            role[i] = {PAD: "pad", BOS: "bos", EOS: "eos"}.get(w, "unk")
            if w in (BOS, EOS):
                if cur:
                    close(cur)
                    k += 1
                cur, state = [], "start"
            continue
        cat, num = WORD_INFO[w]
        number[i], sent[i] = num, k
        cur.append(i)
        if cat == "period":
            role[i] = "period"
            close(cur)
            cur, state, k = [], "start", k + 1
            continue
        nxt = _TRANSITIONS.get(state, {}).get(cat)
        if nxt is None:
            role[i], state = "other", "lost"
        else:
            role[i], state = nxt
    if cur:
        close(cur)
    return {"role": role, "number": number, "subj_number": subj_num, "attr_number": attr_num,
            "sentence": sent, "novel": novel, "subj_novel": subj_novel, "subj_index": subj_idx,
            "attr_index": attr_idx}
