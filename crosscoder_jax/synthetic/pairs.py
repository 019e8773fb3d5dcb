"""Minimal pairs of the synthetic language (`grammar`), one task per phenomenon.

Each pair is a feature-circuits jsonl line

    {"clean_prefix": "the key to the cabinets", "clean_answer": " is", "patch_answer": " are",
     "task": "across_pp_attractor", "subject_number": "sg", "attractor_number": "pl",
     "annotation": {"tokens": ["<bos>", "the", ...], "role": [...], "number": [...],
                    "subj_number": [...], "attr_number": [...], "sentence": [...]}}

`annotation` lists are aligned to the tokenizer's ids of `clean_prefix` (which start with `<bos>`);
answers are single tokens. Pairs come from a random stream seeded apart from the training corpus
(`grammar.batch`), so with the default seeds no stream is shared; exact duplicates of training
sentences can still occur (the language is small) and are not filtered.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable

from crosscoder_jax.synthetic import annotate, grammar as g, vocab as v

# task name -> (description, builder). A builder returns (sentence, index of the answer token).


def _flip(number: str) -> str:
    return v.PL if number == v.SG else v.SG


def _agreement(structure: str, nouns: list[v.Noun] | None, answer_role: str,
               mismatch: bool | None, subj_det: str | None = None) -> Callable:
    def build(rng: random.Random, cfg: g.GrammarConfig, subj_number: str):
        noun = rng.choice(nouns) if nouns else None
        attr = None
        if structure != "simple":
            attr = _flip(subj_number) if mismatch else subj_number
        vp = rng.choice(("intr", "cop")) if answer_role == "verb" else None
        s = g.sample_sentence(rng, cfg, structure=structure, subj_number=subj_number,
                              attr_number=attr, subj_noun=noun, vp=vp, subj_det=subj_det)
        return s, [r for _, r, _ in s.tokens].index(answer_role)
    return build


def _det_noun(rng: random.Random, cfg: g.GrammarConfig, subj_number: str):
    # "the doctor sees these" -> " dogs" / " dog"; the object number is what is balanced
    s = g.sample_sentence(rng, cfg, structure="simple", vp="tr",
                          subj_noun=rng.choice(v.ANIMATE_NOUNS))
    obj_noun = rng.choice(v.ANIMATE_NOUNS + v.IRREGULAR_NOUNS + v.INANIMATE_NOUNS)
    obj = g.noun_phrase(rng, cfg, obj_noun, subj_number, "det_obj", "obj", force_marked=True)
    toks = s.tokens[:3] + obj + [(v.PERIOD, "period", v.NONE)]
    return g.Sentence(toks, s.subj_number, None, "simple"), 4


def _reflexive(rng: random.Random, cfg: g.GrammarConfig, subj_number: str):
    noun = rng.choice(v.ANIMATE_NOUNS + v.IRREGULAR_NOUNS)
    s = g.sample_sentence(rng, cfg, structure="simple", subj_number=subj_number, subj_noun=noun,
                          vp="refl")
    return s, [r for _, r, _ in s.tokens].index("refl")


REGULAR_SUBJECTS = v.ANIMATE_NOUNS + v.INANIMATE_NOUNS

TASKS: dict[str, tuple[str, Callable]] = {
    "simple_agreement": ("subject-verb agreement, no attractor: 'the author' -> ' laughs'",
                         _agreement("simple", REGULAR_SUBJECTS, "verb", None)),
    "irregular_plural_agreement": ("irregular plural subject: 'the men' -> ' are'",
                                   _agreement("simple", v.IRREGULAR_NOUNS, "verb", None)),
    "invariant_noun_agreement": ("number only from the determiner: 'these sheep' -> ' are'",
                                 _agreement("simple", v.INVARIANT_NOUNS, "verb", None)),
    "across_pp_attractor": ("across a PP attractor of the other number: 'the key to the "
                            "cabinets' -> ' is'", _agreement("pp", None, "verb", True)),
    "across_orc_attractor": ("across an object relative clause: 'the author that the guards "
                             "like' -> ' laughs'", _agreement("orc", None, "verb", True)),
    "across_src_attractor": ("across a subject relative clause: 'the author that likes the "
                             "guards' -> ' laughs'", _agreement("src", None, "verb", True)),
    "within_orc_agreement": ("relative-clause verb agrees with its own subject, not the head: "
                             "'the author that the guards' -> ' like'",
                             _agreement("orc", None, "verb_rc", True)),
    "det_noun_agreement": ("determiner-noun number: 'the doctor sees these' -> ' dogs'",
                           _det_noun),
    "reflexive_agreement": ("reflexive agrees with the subject: 'the authors hurt' -> "
                            "' themselves'", _reflexive),
    "novel_noun_agreement": ("a novel noun, withheld from pretraining until a known step, as the "
                             "subject, number only from the noun: 'the robots' -> ' are'",
                             _agreement("simple", v.NOVEL_NOUNS, "verb", None, subj_det="the")),
}
ATTRACTOR_TASK = "across_pp_attractor"
NOVEL_TASK = "novel_noun_agreement"  # the task of the construction withheld until a known step
BASE_TASKS = [t for t in TASKS if t != NOVEL_TASK]  # a language without novel nouns has no novel task


def _answer_alternative(tok: g.Token) -> str:
    word, role, number = tok
    if role in ("verb", "verb_rc"):
        pair = next(p for p in v.ALL_VERBS if word in p)
        return pair[1] if word == pair[0] else pair[0]
    if role == "obj":
        noun = v.NOUN_BY_FORM[word]
        return noun.form(_flip(number))
    raise ValueError(f"no alternative for {tok}")


def _reflexive_patch(sent: g.Sentence, idx: int) -> str:
    word, _, number = sent.tokens[idx]
    if number == v.SG:
        return v.REFL[v.PL]
    noun = v.NOUN_BY_FORM[sent.tokens[1][0]]
    return v.REFL[noun.gender]


def make_pairs(task: str, n: int = 256, seed: int = 1234,
               cfg: g.GrammarConfig = g.GrammarConfig()) -> list[dict]:
    """`n` distinct minimal pairs of `task` (balanced over the number that decides the answer)."""
    _, build = TASKS[task]
    rng = random.Random(f"crosscoder_jax.grammar_pairs:{task}:{seed}")  # old module name: same seeds, same pairs
    pairs, seen = [], set()
    for attempt in range(50 * n):
        if len(pairs) >= n:
            break
        number = (v.SG, v.PL)[len(pairs) % 2]
        sent, idx = build(rng, cfg, number)
        prefix_toks, answer = sent.tokens[:idx], sent.tokens[idx]
        patch = (_reflexive_patch(sent, idx) if answer[1] == "refl"
                 else _answer_alternative(answer))
        prefix = " ".join(w for w, _, _ in prefix_toks)
        key = (prefix, answer[0])
        if key in seen:
            continue
        seen.add(key)
        ann = annotate.annotate([v.BOS] + prefix.split())
        pairs.append({
            "clean_prefix": prefix, "clean_answer": " " + answer[0], "patch_answer": " " + patch,
            "task": task, "subject_number": sent.subj_number,
            "attractor_number": sent.attr_number or "",
            "annotation": {"tokens": [v.BOS] + prefix.split(), **ann},
        })
    return pairs


def write_tasks(directory: str | os.PathLike, n: int = 256, seed: int = 1234,
                tasks: list[str] | None = None) -> dict[str, Path]:
    """Writes `<directory>/<task>.jsonl` for every task of `tasks` (default: all but the novel-noun
    task) and `tasks.json` with descriptions."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in tasks or BASE_TASKS:
        path = directory / f"{name}.jsonl"
        with open(path, "w") as fh:
            for p in make_pairs(name, n, seed):
                fh.write(json.dumps(p) + "\n")
        out[name] = path
    (directory / "tasks.json").write_text(json.dumps(
        {name: {"file": f"{name}.jsonl", "description": TASKS[name][0]} for name in out},
        indent=2))
    return out


def read_pairs(path: str | os.PathLike) -> list[dict]:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
