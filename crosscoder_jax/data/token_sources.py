"""Token sources for harvesting: fixed-length contexts `int32 [n_contexts, context_len]`.

Kinds (`config.tokens.kind`):
  synthetic  the synthetic agreement language (`grammar.batch`), seeded by `tokens.seed`, with novel
             nouns for a share `tokens.p_novel` of the animate nouns (0: none)
  text       plain-text files, one document per file (`tokens.path`: a file, a glob, or a comma list)
  jsonl      JSON-lines files, the document in field `tokens.field` (default "text")
  npy        a pre-tokenised integer array: [n, >= context_len] rows, or a flat [n_tokens] stream
Text is tokenised, documents are joined with EOS, and each context starts with BOS when the
tokenizer has one (the paper drops that first position when harvesting).
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

KINDS = ("synthetic", "text", "jsonl", "npy")


def expand_paths(spec: str) -> list[Path]:
    """Files named by a comma list of paths or globs; an error names the ones that do not exist."""
    out: list[Path] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        matches = sorted(glob.glob(part)) or [part]
        out.extend(Path(m) for m in matches)
    missing = [str(p) for p in out if not p.exists()]
    if not out or missing:
        raise FileNotFoundError(f"files not found: {missing or spec!r}; give existing files (a path, a glob, "
                                "or a comma-separated list)")
    return out


def describe(tokens) -> dict[str, Any]:
    """What identifies the source (recorded in the store, compared on resume)."""
    d = {"kind": tokens.kind}
    if tokens.kind == "synthetic":
        d["seed"] = int(tokens.seed)
        if _p_novel(tokens):  # recorded only when used: stores harvested before it resume as they were
            d["p_novel"] = _p_novel(tokens)
    else:
        d["paths"] = [str(p.resolve()) for p in expand_paths(tokens.path)]
    if tokens.kind == "jsonl":
        d["field"] = tokens.field
    return d


def _p_novel(tokens) -> float:
    return float(tokens.get("p_novel", 0.0) or 0.0)


def _documents(tokens) -> Iterator[str]:
    for path in expand_paths(tokens.path):
        if tokens.kind == "text":
            yield path.read_text()
        else:
            with open(path) as fh:
                for n, line in enumerate(fh):
                    if line.strip():
                        obj = json.loads(line)
                        if tokens.field not in obj:
                            raise KeyError(f"{path}:{n + 1} has no field {tokens.field!r}; set --config.tokens.field")
                        yield obj[tokens.field]


def _from_text(tokens, tokenizer, n: int, T: int, skip: int) -> np.ndarray:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    body = T - (bos is not None)
    need = (skip + n) * body
    stream: list[int] = []
    for doc in _documents(tokens):
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise ValueError(f"the token source gives {len(stream) // body} contexts of {T} tokens, fewer than "
                         f"the {skip} skipped + n_contexts={n}: lower n_contexts or context_len, or add text")
    rows = np.asarray(stream[skip * body:need], np.int32).reshape(n, body)
    return np.concatenate([np.full((n, 1), bos, np.int32), rows], axis=1) if bos is not None else rows


def contexts(tokens, tokenizer, n_contexts: int, context_len: int, skip: int = 0) -> np.ndarray:
    """`int32 [n_contexts, context_len]` from the configured source, after its first `skip` contexts
    (held-out evaluation skips the contexts a store was harvested from)."""
    if tokens.kind not in KINDS:
        raise ValueError(f"unknown token source kind {tokens.kind!r}; choose one of {KINDS}")
    if tokens.kind == "synthetic":
        from crosscoder_jax.synthetic import grammar

        # The synthetic stream is indexed by draw: `skip` picks another, independent draw.
        return grammar.batch(int(tokens.seed), skip, n_contexts, context_len,
                             grammar.GrammarConfig(p_novel=_p_novel(tokens)))
    if tokens.kind == "npy":
        (path,) = expand_paths(tokens.path)
        arr = np.load(path)
        if arr.ndim == 1:
            usable = (len(arr) // context_len) * context_len
            arr = arr[:usable].reshape(-1, context_len)
        if arr.ndim != 2 or arr.shape[1] < context_len or arr.shape[0] < skip + n_contexts:
            raise ValueError(f"{path} has shape {arr.shape}; need at least [{skip + n_contexts}, {context_len}] "
                             "(or a flat stream of that many tokens)")
        return np.ascontiguousarray(arr[skip:skip + n_contexts, :context_len], np.int32)
    return _from_text(tokens, tokenizer, n_contexts, context_len, skip)
