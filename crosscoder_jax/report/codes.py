"""The codes of a crosscoder on the first contexts of its store: what labels, latent cards and the
presence measure read."""

from __future__ import annotations

from typing import Any

import numpy as np

from crosscoder_jax.analysis import labels as labels_mod
from crosscoder_jax.synthetic import vocab


def token_strings(ids: np.ndarray, meta: dict[str, Any]) -> list[str]:
    """Token ids as words: the synthetic grammar's vocabulary, else "#id"."""
    synthetic = (meta.get("token_source") or {}).get("kind") == "synthetic" or meta.get("model") == "tiny-grammar"
    if synthetic and (len(ids) == 0 or int(np.max(ids)) < len(vocab.VOCAB)):
        return [vocab.VOCAB[int(t)] for t in ids]
    return [f"#{int(t)}" for t in ids]


def encode_store(cc, store, max_tokens: int, batch: int = 4096) -> dict[str, np.ndarray]:
    """Codes f [N, F] of the first whole contexts of the store (at most `max_tokens` rows), with
    their tokens, positions, context starts and raw activations [N, C, D]."""
    n = min(store.n_tokens, max_tokens + 1)
    pos = np.asarray(store.read_rows(0, n, "positions"))
    starts = labels_mod.context_starts(pos)
    N = n if n == store.n_tokens else int(starts[-1]) if len(starts) > 1 else min(n, max_tokens)
    pos, starts = pos[:N], starts[starts < N]
    toks = np.asarray(store.read_rows(0, N, "tokens"))
    acts = np.asarray(store.read_rows(0, N), np.float32)
    f = cc.encode_rows(acts, batch)
    return {"f": f, "tokens": toks, "positions": pos, "starts": starts, "acts": acts}


def top_contexts(f_N: np.ndarray, starts: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    """The `n` contexts with the largest activation: (start, stop, row of the max) each."""
    stops = np.append(starts[1:], len(f_N))
    peak = np.maximum.reduceat(f_N, starts) if len(starts) else np.zeros(0)
    order = [int(j) for j in np.argsort(-peak, kind="stable")[:n] if peak[j] > 0]
    return [(int(starts[j]), int(stops[j]), int(starts[j] + np.argmax(f_N[starts[j]:stops[j]]))) for j in order]
