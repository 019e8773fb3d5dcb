"""The vocabulary of the synthetic agreement language: its lexicon (nouns with their number,
gender and kind, determiners, verbs, prepositions, adjectives, reflexives), every word's category
and number (`WORD_INFO`), token ids, and the word-level tokenizer files.

`NOVEL_NOUNS` are regular animate nouns that the pretraining can withhold until a chosen step
(`grammar.GrammarConfig.p_novel`, `configs/pretrain.py: novel_from_step`): until then their tokens
never occur, so nothing about them (their number in particular) can be learned before it. Their
words come last in the vocabulary, so every other word keeps its id.

Tokens are whole words (a `tokenizers` WordLevel model with a whitespace pre-tokenizer): `" is"` and
`"is"` are the same single token, so `prefix + " " + answer` tokenizes as the prefix's tokens plus one
answer token. The tokenizer prepends `<bos>` (id 1). The grammar (`grammar`) and the annotation
(`annotate`) both read this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence


SG, PL, NONE = "sg", "pl", ""

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
PERIOD = "."
REL = "that"

# ---------------------------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Noun:
    sg: str
    pl: str
    animate: bool
    gender: str  # "m" | "f" | "n": picks the singular reflexive
    kind: str  # "regular" | "irregular" | "invariant"

    def form(self, number: str) -> str:
        return self.sg if number == SG else self.pl


def _nouns(words: str, animate: bool, kind: str) -> list[Noun]:
    out = []
    for item in words.split():
        sg, pl, gender = item.split("/")
        out.append(Noun(sg, pl, animate, gender, kind))
    return out


ANIMATE_NOUNS = _nouns(
    "author/authors/m guard/guards/m senator/senators/f pilot/pilots/f doctor/doctors/f "
    "teacher/teachers/m farmer/farmers/m painter/painters/f dancer/dancers/f singer/singers/m "
    "manager/managers/f student/students/m officer/officers/m nurse/nurses/f "
    "dog/dogs/n cat/cats/n horse/horses/n bird/birds/n", True, "regular")
IRREGULAR_NOUNS = _nouns(
    "man/men/m woman/women/f child/children/f person/people/m mouse/mice/n goose/geese/n "
    "ox/oxen/n", True, "irregular")
INVARIANT_NOUNS = _nouns("sheep/sheep/n fish/fish/n deer/deer/n", True, "invariant")
INANIMATE_NOUNS = _nouns(
    "key/keys/n picture/pictures/n book/books/n box/boxes/n door/doors/n letter/letters/n "
    "road/roads/n cabinet/cabinets/n table/tables/n house/houses/n car/cars/n window/windows/n "
    "bridge/bridges/n", False, "regular")
NOVEL_NOUNS = _nouns(
    "robot/robots/n wizard/wizards/m pirate/pirates/m alien/aliens/n knight/knights/m "
    "queen/queens/f giant/giants/m ghost/ghosts/n monk/monks/m clown/clowns/m chef/chefs/f "
    "judge/judges/f baker/bakers/m tiger/tigers/n rabbit/rabbits/n witch/witches/f", True, "regular")
# ALL_NOUNS keeps the original lexicon (its order fixes the token ids); LEXICON_NOUNS adds the novel ones
ALL_NOUNS = ANIMATE_NOUNS + IRREGULAR_NOUNS + INVARIANT_NOUNS + INANIMATE_NOUNS
LEXICON_NOUNS = ALL_NOUNS + NOVEL_NOUNS

DETS = {SG: ("a", "an", "this", "every", "one"), PL: ("these", "several", "two", "many"),
        NONE: ("the",)}
VOWELS = "aeiou"

# verbs as (singular, plural)
INTR_ANIMATE = [("laughs", "laugh"), ("sleeps", "sleep"), ("smiles", "smile"), ("runs", "run"),
                ("sings", "sing"), ("waits", "wait"), ("swims", "swim"), ("arrives", "arrive")]
INTR_INANIMATE = [("falls", "fall"), ("breaks", "break"), ("shines", "shine"),
                  ("stays", "stay"), ("moves", "move")]
TRANSITIVE = [("likes", "like"), ("sees", "see"), ("helps", "help"), ("admires", "admire"),
              ("follows", "follow"), ("hurts", "hurt"), ("knows", "know"), ("blames", "blame")]
COPULA = [("is", "are"), ("was", "were")]
ALL_VERBS = INTR_ANIMATE + INTR_INANIMATE + TRANSITIVE + COPULA
PREPS = ("near", "behind", "beside", "with", "of", "to", "above", "under")
ADJS = ("old", "new", "small", "big", "quiet", "ready", "red", "happy")
REFL = {"m": "himself", "f": "herself", "n": "itself", PL: "themselves"}


def reflexive(noun: Noun, number: str) -> str:
    return REFL[PL] if number == PL else REFL[noun.gender]


def _build_vocab() -> list[str]:
    words: list[str] = list(SPECIALS) + [PERIOD, REL]
    for group in (DETS[NONE], DETS[SG], DETS[PL]):
        words += list(group)
    for n in ALL_NOUNS:
        words += [n.sg, n.pl]
    for v in ALL_VERBS:
        words += list(v)
    words += list(PREPS) + list(ADJS) + list(dict.fromkeys(REFL.values()))
    for n in NOVEL_NOUNS:  # last: the ids of the original vocabulary do not move
        words += [n.sg, n.pl]
    return list(dict.fromkeys(words))


VOCAB: list[str] = _build_vocab()
WORD_TO_ID: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}


def _word_info() -> dict[str, tuple[str, str]]:
    """word -> (category, number). number "" where the word form is neutral."""
    info: dict[str, tuple[str, str]] = {PERIOD: ("period", NONE), REL: ("rel", NONE)}
    for number, dets in DETS.items():
        for d in dets:
            info[d] = ("det", number)
    for n in LEXICON_NOUNS:
        if n.sg == n.pl:
            info[n.sg] = ("noun", NONE)
        else:
            info[n.sg], info[n.pl] = ("noun", SG), ("noun", PL)
    for sg, pl in ALL_VERBS:
        info[sg], info[pl] = ("verb", SG), ("verb", PL)
    for p in PREPS:
        info[p] = ("prep", NONE)
    for a in ADJS:
        info[a] = ("adj", NONE)
    for g, r in REFL.items():
        info[r] = ("refl", PL if g == PL else SG)
    return info


WORD_INFO = _word_info()
NOUN_BY_FORM: dict[str, Noun] = {}
for _n in LEXICON_NOUNS:
    NOUN_BY_FORM[_n.sg] = NOUN_BY_FORM[_n.pl] = _n
NOVEL_WORDS = frozenset(w for n in NOVEL_NOUNS for w in (n.sg, n.pl))


def encode(text: str | Sequence[str], add_bos: bool = True) -> list[int]:
    """Word-level encoding identical to the saved tokenizer's (unknown words -> `<unk>`)."""
    words = text.split() if isinstance(text, str) else list(text)
    ids = [WORD_TO_ID.get(w, UNK_ID) for w in words]
    return [BOS_ID] + ids if add_bos else ids


def decode(ids: Sequence[int]) -> str:
    return " ".join(VOCAB[int(i)] for i in ids)


# ---------------------------------------------------------------------------------------------
# Tokenizer files
# ---------------------------------------------------------------------------------------------


def build_tokenizer():
    """The word-level `tokenizers.Tokenizer` (adds `<bos>` in front of every encoded text)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders

    tok = Tokenizer(models.WordLevel(vocab=dict(WORD_TO_ID), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, BOS_ID)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.add_special_tokens(list(SPECIALS))
    return tok


def hf_tokenizer():
    """`transformers.PreTrainedTokenizerFast` over `build_tokenizer()` (what save_pretrained writes)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), bos_token=BOS,
                                   eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                   model_max_length=1024, clean_up_tokenization_spaces=False)


def save_tokenizer(directory: str | os.PathLike):
    """Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json; returns the HF
    tokenizer. `transformers.AutoTokenizer.from_pretrained(directory)` loads it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = hf_tokenizer()
    tok.save_pretrained(str(directory))
    smap = directory / "special_tokens_map.json"
    if not smap.exists():
        smap.write_text(json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
                                    "unk_token": UNK}, indent=2))
    return tok
