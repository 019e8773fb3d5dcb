"""A synthetic English-like language whose grammatical structure is known token by token.

Sentences (one grammar, sampled with seeded mixture weights, see `GrammarConfig`):

    S    -> NP_subj [MOD] VP "."
    NP   -> Det N                  determiner agrees in number with the noun ("this key", "these keys")
    MOD  -> Prep NP_attr           "the key to the cabinets"           (prepositional phrase)
          | "that" NP_attr V_rc    "the author that the guards like"   (object relative clause)
          | "that" V_rc NP_attr    "the author that likes the guards"  (subject relative clause)
    VP   -> V_intr | V_tr NP_obj | Cop Adj | V_tr Refl
                                   the main verb agrees with the subject head noun, never with the
                                   attractor; the reflexive ("himself" / "themselves") agrees with the
                                   subject in number (and with the noun's fixed gender)

Novel nouns (`vocab.NOVEL_NOUNS`, "robot/robots") are drawn for a share `p_novel` of the animate
nouns; with `p_novel = 0` (the default) they never occur, which is how the pretraining withholds
them until a known step.

Phenomena: regular, irregular ("man/men", "mouse/mice") and invariant ("sheep/sheep", number only
from the determiner) plurals; singular-only (a/an, this, every, one), plural-only (these, several,
two, many) and neutral ("the") determiners; attractor nouns of either number inside PPs and relative
clauses; agreement of the relative-clause verb with its own subject; reflexive anaphors; animate /
inanimate selection of verbs.

The words, their ids and the tokenizer are in `vocab`. `annotate.annotate(tokens)` recovers, for
any token sequence of this language (several sentences, truncated windows, with specials), each
token's role and the grammatical numbers in play; minimal-pair files (`pairs`) carry the same
annotation.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Iterator

import numpy as np

from crosscoder_jax.synthetic.vocab import (ADJS, ANIMATE_NOUNS, BOS_ID, COPULA, DETS, INANIMATE_NOUNS, INTR_ANIMATE,
                                            INTR_INANIMATE, INVARIANT_NOUNS, IRREGULAR_NOUNS, NONE, NOVEL_NOUNS, PERIOD,
                                            PL, PREPS, REL, SG, TRANSITIVE, VOWELS, WORD_INFO, WORD_TO_ID, Noun,
                                            reflexive)

# ---------------------------------------------------------------------------------------------
# Sentence sampling
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GrammarConfig:
    """Mixture weights of the sentence generator (the rest of the grammar is fixed).

    p_pp / p_orc / p_src: probability that the subject carries a prepositional phrase / object
    relative clause / subject relative clause (at most one); the rest are attractor-free.
    p_mismatch: probability that the attractor's number differs from the subject's.
    p_the: probability of the number-neutral determiner "the" for any noun phrase.
    vp weights: intransitive, transitive + object, copula + adjective, transitive + reflexive.
    """

    p_pp: float = 0.15
    p_orc: float = 0.10
    p_src: float = 0.05
    p_mismatch: float = 0.5
    p_the: float = 0.5
    vp_weights: tuple[float, float, float, float] = (0.35, 0.3, 0.2, 0.15)
    p_irregular: float = 0.15  # share of animate subjects / attractors that are irregular nouns
    p_invariant: float = 0.07  # ... that are invariant nouns ("sheep")
    p_novel: float = 0.0  # share of animate noun draws that are novel nouns (`vocab.NOVEL_NOUNS`); 0: never


# A token of a sampled sentence: (word, role, number). Roles: det_subj subj prep det_attr attr rel
# verb_rc verb det_obj obj adj refl period (annotate() adds bos eos pad unk other).
Token = tuple[str, str, str]


@dataclasses.dataclass
class Sentence:
    tokens: list[Token]
    subj_number: str
    attr_number: str | None  # None: no attractor
    structure: str  # "simple" | "pp" | "orc" | "src"

    @property
    def words(self) -> list[str]:
        return [w for w, _, _ in self.tokens]

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _pick_noun(rng: random.Random, cfg: GrammarConfig, animate: bool | None) -> Noun:
    if animate is None:
        animate = rng.random() < 0.7
    if not animate:
        return rng.choice(INANIMATE_NOUNS)
    # no draw at all when p_novel is 0, so a language without novel nouns samples as it always did
    if cfg.p_novel > 0 and rng.random() < cfg.p_novel:
        return rng.choice(NOVEL_NOUNS)
    u = rng.random()
    if u < cfg.p_invariant:
        return rng.choice(INVARIANT_NOUNS)
    if u < cfg.p_invariant + cfg.p_irregular:
        return rng.choice(IRREGULAR_NOUNS)
    return rng.choice(ANIMATE_NOUNS)


def _det(rng: random.Random, cfg: GrammarConfig, noun: Noun, number: str,
         force_marked: bool = False, det: str | None = None) -> str:
    if det is not None:
        return det
    if noun.kind == "invariant":
        force_marked = True  # the determiner is the only number cue
    if not force_marked and rng.random() < cfg.p_the:
        return "the"
    if number == SG:
        word = noun.sg
        choices = ("this", "every", "one", "an" if word[0] in VOWELS else "a")
        return rng.choice(choices)
    return rng.choice(DETS[PL])


def noun_phrase(rng: random.Random, cfg: GrammarConfig, noun: Noun, number: str, det_role: str,
                noun_role: str, force_marked: bool = False, det: str | None = None) -> list[Token]:
    det = _det(rng, cfg, noun, number, force_marked, det)
    return [(det, det_role, WORD_INFO[det][1]), (noun.form(number), noun_role, number)]


def _verb(pair: tuple[str, str], number: str, role: str) -> Token:
    return (pair[0] if number == SG else pair[1], role, number)


def sample_sentence(rng: random.Random, cfg: GrammarConfig = GrammarConfig(), *,
                    structure: str | None = None, subj_number: str | None = None,
                    attr_number: str | None = None, subj_noun: Noun | None = None,
                    vp: str | None = None, subj_det: str | None = None) -> Sentence:
    """One sentence; keyword arguments pin parts of it (used by the minimal-pair builders)."""
    if structure is None:
        u = rng.random()
        structure = ("pp" if u < cfg.p_pp else "orc" if u < cfg.p_pp + cfg.p_orc
                     else "src" if u < cfg.p_pp + cfg.p_orc + cfg.p_src else "simple")
    if subj_number is None:
        subj_number = rng.choice((SG, PL))
    if structure != "simple" and attr_number is None:
        mismatch = rng.random() < cfg.p_mismatch
        attr_number = (PL if subj_number == SG else SG) if mismatch else subj_number
    if structure == "simple":
        attr_number = None
    if subj_noun is None:
        subj_noun = _pick_noun(rng, cfg, animate=True if structure in ("orc", "src") else None)
    toks = noun_phrase(rng, cfg, subj_noun, subj_number, "det_subj", "subj", det=subj_det)
    if structure == "pp":
        toks.append((rng.choice(PREPS), "prep", NONE))
        toks += noun_phrase(rng, cfg, _pick_noun(rng, cfg, None), attr_number, "det_attr", "attr")
    elif structure == "orc":  # the author that the guards like
        toks.append((REL, "rel", NONE))
        toks += noun_phrase(rng, cfg, _pick_noun(rng, cfg, True), attr_number, "det_attr", "attr")
        toks.append(_verb(rng.choice(TRANSITIVE), attr_number, "verb_rc"))
    elif structure == "src":  # the author that likes the guards
        toks.append((REL, "rel", NONE))
        toks.append(_verb(rng.choice(TRANSITIVE), subj_number, "verb_rc"))
        toks += noun_phrase(rng, cfg, _pick_noun(rng, cfg, None), attr_number, "det_attr", "attr")
    if vp is None:
        kinds = ("intr", "tr", "cop", "refl") if subj_noun.animate else ("intr", "cop")
        weights = cfg.vp_weights if subj_noun.animate else cfg.vp_weights[0:1] + cfg.vp_weights[2:3]
        vp = rng.choices(kinds, weights=weights)[0]
    if vp == "intr":
        toks.append(_verb(rng.choice(INTR_ANIMATE if subj_noun.animate else INTR_INANIMATE),
                          subj_number, "verb"))
    elif vp == "cop":
        toks.append(_verb(rng.choice(COPULA), subj_number, "verb"))
        toks.append((rng.choice(ADJS), "adj", NONE))
    elif vp == "tr":
        toks.append(_verb(rng.choice(TRANSITIVE), subj_number, "verb"))
        toks += noun_phrase(rng, cfg, _pick_noun(rng, cfg, None), rng.choice((SG, PL)),
                            "det_obj", "obj")
    elif vp == "refl":
        toks.append(_verb(rng.choice(TRANSITIVE), subj_number, "verb"))
        toks.append((reflexive(subj_noun, subj_number), "refl", subj_number))
    else:
        raise ValueError(f"unknown vp {vp!r}")
    toks.append((PERIOD, "period", NONE))
    return Sentence(toks, subj_number, attr_number, structure)


# ---------------------------------------------------------------------------------------------
# Corpus: deterministic token windows
# ---------------------------------------------------------------------------------------------


def _rng(seed: int, index: int) -> random.Random:
    # The old module name stays in the seed string: the same seeds give the same corpus as before the move.
    return random.Random(f"crosscoder_jax.grammar:{seed}:{index}")


def sentences(seed: int, cfg: GrammarConfig = GrammarConfig()) -> Iterator[Sentence]:
    """An endless deterministic stream of sentences."""
    rng = _rng(seed, -1)
    while True:
        yield sample_sentence(rng, cfg)


def sample_window(rng: random.Random, seq_len: int, cfg: GrammarConfig = GrammarConfig()
                  ) -> list[int]:
    """`<bos>` then whole sentences, cut to exactly `seq_len` tokens (no padding needed)."""
    ids = [BOS_ID]
    while len(ids) < seq_len:
        ids += [WORD_TO_ID[w] for w, _, _ in sample_sentence(rng, cfg).tokens]
    return ids[:seq_len]


def batch(seed: int, step: int, batch_size: int, seq_len: int,
          cfg: GrammarConfig = GrammarConfig()) -> np.ndarray:
    """Training batch `int32 [batch_size, seq_len]` for `step`: a pure function of its arguments,
    so a resumed run sees exactly the data it would have seen."""
    rng = _rng(seed, step)
    return np.asarray([sample_window(rng, seq_len, cfg) for _ in range(batch_size)], np.int32)
