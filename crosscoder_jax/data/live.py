"""Live activations: the checkpoints' forward passes run during training, nothing written.

`LiveStore` offers what the store reader reads (`store.RowChunks`: `n_chunks`, `chunk_rows`,
`read_chunks`, `estimate_scales`, `meta`) over the chunks that a harvest with the same fields would write, computing
each chunk when it is read: the same contexts (`token_sources`), the same forward pass to the layer
(`harvest.chunk_activations`), the same rounding to the stored dtype. So `StoreReader` streams it
unchanged: the same chunk order and mixing window for a seed, resumable from an integer position
(after kill -9 too: the train loop checkpoints that position), each process computing only the
chunks of its reader shards and, under a snapshot axis, only its own checkpoints (`columns`). A live
run and a run on the harvested store see the same batches (tests/training/test_live.py).

Cost: every chunk read runs C' forward passes, every epoch again (`launch.plan` weighs it against a
store). The shuffling buffer is the reader's window of whole chunks, on the host.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from crosscoder_jax.data import harvest, token_sources
from crosscoder_jax.data.store import RowChunks
from crosscoder_jax.runtime.devices import data_mesh

_DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16}


class LiveStore(RowChunks):
    """A store computed on demand from a harvest config (model, checkpoints, layer, tokens,
    n_contexts, context_len, drop_bos, dtype, model_dtype, batch_size, chunk_contexts)."""

    def __init__(self, config):
        ckpts = harvest.parse_checkpoints(config.checkpoints, config.model)
        if config.dtype not in _DTYPES:
            raise ValueError(f"live.dtype {config.dtype!r} is not one of {sorted(_DTYPES)}")
        self.lms, tok = harvest.load_checkpoints(ckpts, _DTYPES[config.model_dtype])
        D, L = self.lms[0].config.d_model, self.lms[0].config.n_layers
        if not 0 <= config.layer < L:
            raise harvest.HarvestError(f"live.layer {config.layer} is outside the model's blocks 0..{L - 1}")
        self.contexts = token_sources.contexts(config.tokens, tok, config.n_contexts, config.context_len)
        self.drop = int(config.drop_bos)
        self.T = self.contexts.shape[1] - self.drop
        n_tokens = self.contexts.shape[0] * self.T
        self.chunk_size = min(config.chunk_contexts * self.T, n_tokens)
        self.n_chunks = math.ceil(n_tokens / self.chunk_size)
        names = [n for n, _, _ in ckpts]
        self.meta = {"format": "live", "checkpoints": names, "d_model": D, "n_tokens": n_tokens,
                     "dtype": config.dtype, "model": config.model, "layer": int(config.layer),
                     "chunk_size": self.chunk_size, "scales": None}
        self.path = f"live activations of {config.model} ({', '.join(names)}) at layer {config.layer}"
        self._dtype = _DTYPES[config.dtype]
        self._batch = int(config.batch_size)
        self._residual = harvest.make_residual_fn(data_mesh(), int(config.layer))

    def read_chunks(self, ids: Sequence[int], columns: slice = slice(None)) -> list[np.ndarray]:
        """Chunks [rows, C', D] in the stored dtype, computed now (only the checkpoints in `columns`)."""
        lms = self.lms[columns]
        out = []
        for i in ids:
            start, stop = self.chunk_rows(int(i))
            ctx = self.contexts[start // self.T: stop // self.T]
            acts = harvest.chunk_activations(lms, self._residual, ctx, self.drop, self._batch)
            out.append(acts.reshape(-1, len(lms), self.d_model).astype(self._dtype))
        return out
