"""Minimal-pair tasks: loading, prompt construction, padded batches, and per-checkpoint task curves.

Formats (auto-detected per line):
  BLiMP one-prefix   `one_prefix_prefix`, `one_prefix_word_good`, `one_prefix_word_bad`
  BLiMP full pair    `sentence_good`, `sentence_bad` (prompt = longest common token prefix)
  feature-circuits   `clean_prefix`, `clean_answer`, `patch_answer` (also the synthetic language's pairs)

Prompt construction follows the paper: tokenize `prefix + " " + good` and `prefix + " " + bad`,
take the longest common token prefix as the prompt and the remainders as clean / patch answers;
drop pairs whose answers differ in token length or are longer than 2 tokens; for 2-token answers
with identical first tokens, append that token to the prompt and compare the second. The metric
is `m = logit[patch] - logit[clean]` at the last prompt position.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crosscoder_jax import models


class TaskError(ValueError):
    pass


class Prompts(NamedTuple):
    """A right-padded batch of prompts: ids and mask [N, T], last real position [N], answers [N]."""

    ids_NT: np.ndarray
    mask_NT: np.ndarray
    last_N: np.ndarray
    clean_N: np.ndarray
    patch_N: np.ndarray

    @property
    def n(self) -> int:
        """Number of prompts (a NamedTuple must keep len() = number of fields)."""
        return len(self.last_N)

    def batches(self, batch_size: int):
        """(batch, n_real) over the prompts, every batch the same shape (full length; the last one
        filled up with copies of its first prompt, to be dropped), so a jitted program over the
        batches compiles once instead of once per batch shape."""
        size = min(batch_size, self.n)
        for b in range(0, self.n, size):
            idx = np.arange(b, min(b + size, self.n))
            n_real = len(idx)
            idx = np.concatenate([idx, np.full(size - n_real, idx[0])])
            yield Prompts(*(np.asarray(a)[idx] for a in self)), n_real


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task file {path} not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno}): "
                            f"{line[:80]!r}; fix or delete that line") from None
    return rows


def _bos_prefix(tokenizer) -> list[int]:
    """[bos] if this tokenizer puts BOS in front of a text by default (ours does, Pythia's does not)."""
    bos = tokenizer.bos_token_id
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return [bos] if bos is not None and len(with_special) > len(plain) and with_special[0] == bos else []


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _split(prompt: list[int], clean: list[int], patch: list[int]) -> tuple[list[int], int, int] | str:
    """Paper's filtering rules on (prompt, clean answer tokens, patch answer tokens)."""
    if len(clean) != len(patch):
        return "answers differ in token length"
    if not clean or len(clean) > 2:
        return "answer longer than 2 tokens" if clean else "empty answer"
    if clean == patch:
        return "identical answers"
    if len(clean) == 2 and clean[0] == patch[0]:
        return prompt + [clean[0]], clean[1], patch[1]
    return prompt, clean[0], patch[0]


def pair_to_prompt(pair: dict[str, Any], tokenizer, bos: list[int]) -> tuple[list[int], int, int] | str:
    """One pair -> (prompt ids, clean id, patch id), or the reason it is dropped."""
    if "clean_prefix" in pair:
        return _split(bos + _encode(tokenizer, pair["clean_prefix"]), _encode(tokenizer, pair["clean_answer"]),
                      _encode(tokenizer, pair["patch_answer"]))
    if "one_prefix_prefix" in pair and pair.get("one_prefix_method", True):
        prefix, good, bad = pair["one_prefix_prefix"], pair["one_prefix_word_good"], pair["one_prefix_word_bad"]
        a, b = _encode(tokenizer, f"{prefix} {good}"), _encode(tokenizer, f"{prefix} {bad}")
    elif "sentence_good" in pair:
        a, b = _encode(tokenizer, pair["sentence_good"]), _encode(tokenizer, pair["sentence_bad"])
    else:
        return "unknown format (needs clean_prefix/clean_answer/patch_answer or BLiMP fields)"
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n == 0 and not bos:
        return "no common prefix"
    return _split(bos + a[:n], a[n:], b[n:])


def build_prompts(pairs: Sequence[dict[str, Any]], tokenizer, pad_id: int | None = None,
                  name: str = "task") -> tuple[Prompts, dict[str, Any]]:
    """Padded prompts of every usable pair, and a report {kept, dropped: {reason: count}, kept_index}."""
    bos = _bos_prefix(tokenizer)
    kept, index, dropped = [], [], Counter()
    for i, pair in enumerate(pairs):
        r = pair_to_prompt(pair, tokenizer, bos)
        if isinstance(r, str):
            dropped[r] += 1
        else:
            kept.append(r)
            index.append(i)
    if not kept:
        raise TaskError(f"{name}: no usable pair among {len(pairs)} after filtering (dropped: {dict(dropped)}). "
                        "Check the file's format and that its answers are 1-2 tokens for this tokenizer.")
    pad = pad_id if pad_id is not None else (tokenizer.pad_token_id or 0)
    T = max(len(p) for p, _, _ in kept)
    ids = np.full((len(kept), T), pad, np.int32)
    mask = np.zeros((len(kept), T), np.int32)
    for n, (p, _, _) in enumerate(kept):
        ids[n, :len(p)] = p
        mask[n, :len(p)] = 1
    prompts = Prompts(ids, mask, mask.sum(1) - 1, np.array([c for _, c, _ in kept], np.int32),
                      np.array([p for _, _, p in kept], np.int32))
    return prompts, {"kept": len(kept), "dropped": dict(dropped), "kept_index": index}


def load_task(path: str | Path, tokenizer, limit: int | None = None) -> tuple[Prompts, dict[str, Any]]:
    """Reads a task file (any supported format) and builds its prompts."""
    pairs = read_jsonl(path)[:limit]
    return build_prompts(pairs, tokenizer, name=str(path))


def logit_diff(logits_NTV: jax.Array, prompts: Prompts) -> jax.Array:
    """m = logit[patch] - logit[clean] at each prompt's last position, [N]."""
    n = jnp.arange(logits_NTV.shape[0])
    last = logits_NTV[n, jnp.asarray(prompts.last_N)]
    return last[n, jnp.asarray(prompts.patch_N)] - last[n, jnp.asarray(prompts.clean_N)]


@jax.jit
def _prompt_logit_diff(lm, ids, mask, last, clean, patch):
    logits = models.forward(lm, ids, mask)
    return logit_diff(logits, Prompts(ids, mask, last, clean, patch))


def task_metrics(lm: models.LM, prompts: Prompts, batch_size: int = 256) -> dict[str, float]:
    """Accuracy (fraction with logit[clean] > logit[patch]) and mean logit[clean] - logit[patch]."""
    m = np.concatenate([np.asarray(_prompt_logit_diff(lm, *sub))[:n_real] for sub, n_real in prompts.batches(batch_size)])
    return {"accuracy": float(np.mean(m < 0)), "mean_clean_minus_patch": float(np.mean(-m)), "n": int(len(m))}


def task_curves(lms: Sequence[models.LM], names: Sequence[str], tasks: dict[str, Prompts]) -> dict[str, dict]:
    """{task: {checkpoint: metrics}} for every checkpoint of a series on every task."""
    return {t: {n: task_metrics(lm, p) for n, lm in zip(names, lms)} for t, p in tasks.items()}
