"""Prompt construction from task files (PAPER.md section 4): the longest common token prefix of a
BLiMP pair, the drops (answers of unequal length, longer than 2 tokens, identical, no prefix), and
the rule for 2-token answers that share their first token."""

import json

import numpy as np
import pytest

from crosscoder_jax.data import tasks


class WordTokenizer:
    """Word-level tokens, some words split into sub-words, BOS in front by default (like ours)."""

    SPLIT = {"walks": ["walk", "s"], "walked": ["walk", "ed"], "runs": ["run", "s"],
             "unhappily": ["un", "happi", "ly"], "unhappier": ["un", "happi", "er"]}

    def __init__(self, bos: bool = True):
        self.vocab = {"<pad>": 0, "<bos>": 1}
        self.bos_token_id, self.pad_token_id = (1 if bos else None), 0

    def id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab))

    def __call__(self, text: str, add_special_tokens: bool = True):
        ids = [self.id(p) for w in text.split() for p in self.SPLIT.get(w, [w])]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens and self.bos_token_id else []) + ids}


def _ids(tok, *pieces):
    return [tok.id(p) for p in pieces]


def test_blimp_pairs_become_prompts_by_the_papers_rules():
    tok = WordTokenizer()
    pairs = [
        {"sentence_good": "the dog walks", "sentence_bad": "the dog walked"},           # kept: prefix + walk
        {"one_prefix_prefix": "the dogs", "one_prefix_word_good": "run",
         "one_prefix_word_bad": "runs"},                                                   # 1 vs 2 tokens: dropped
        {"sentence_good": "the dog is big", "sentence_bad": "the dogs is big"},          # 3-token answers: dropped
        {"sentence_good": "a cat", "sentence_bad": "a cat"},                             # nothing after the prefix
        {"clean_prefix": "a", "clean_answer": "cat", "patch_answer": "cat"},              # identical answers
        {"one_prefix_prefix": "the cats", "one_prefix_word_good": "sleep",
         "one_prefix_word_bad": "sleeps"},                                                # kept
        {"clean_prefix": "she smiled", "clean_answer": "walks", "patch_answer": "walked"},  # shared first token
        {"clean_prefix": "she smiled", "clean_answer": "walks", "patch_answer": "runs"},    # 2 tokens, first differs
        {"clean_prefix": "she smiled", "clean_answer": "unhappily", "patch_answer": "unhappier"},  # 3 tokens
        {"foo": "bar"},
    ]
    prompts, report = tasks.build_prompts(pairs, tok)
    assert report["kept_index"] == [0, 5, 6, 7]
    assert report["dropped"] == {"answers differ in token length": 1, "answer longer than 2 tokens": 2,
                                 "empty answer": 1, "identical answers": 1,
                                 "unknown format (needs clean_prefix/clean_answer/patch_answer or BLiMP fields)": 1}
    want = [  # (prompt, clean, patch)
        ([1, *_ids(tok, "the", "dog", "walk")], tok.id("s"), tok.id("ed")),
        ([1, *_ids(tok, "the", "cats")], tok.id("sleep"), tok.id("sleeps")),
        ([1, *_ids(tok, "she", "smiled", "walk")], tok.id("s"), tok.id("ed")),  # the shared token joins the prompt
        ([1, *_ids(tok, "she", "smiled")], tok.id("walk"), tok.id("run")),     # else the first tokens are compared
    ]
    for n, (p, c, q) in enumerate(want):
        assert prompts.ids_NT[n, :len(p)].tolist() == p and prompts.mask_NT[n].sum() == len(p)
        assert not np.any(prompts.mask_NT[n, len(p):]) and np.all(prompts.ids_NT[n, len(p):] == 0)
        assert prompts.last_N[n] == len(p) - 1 and prompts.clean_N[n] == c and prompts.patch_N[n] == q


def test_no_common_prefix_without_bos_and_files_with_no_usable_pair(tmp_path):
    tok = WordTokenizer(bos=False)
    _, report = tasks.build_prompts([{"sentence_good": "dogs bark", "sentence_bad": "dog barks"},
                                     {"sentence_good": "the dog walks", "sentence_bad": "the dog walked"}], tok)
    assert report["dropped"] == {"no common prefix": 1} and report["kept"] == 1
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"sentence_good": "a b c d", "sentence_bad": "x b c d"}) for _ in range(3)))
    with pytest.raises(tasks.TaskError, match=r"t.jsonl: no usable pair among 3 after filtering .*no common prefix.: 3"):
        tasks.load_task(path, tok)
