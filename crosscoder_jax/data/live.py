"""Live activations: the checkpoints' forward passes run during training, nothing written.

`LiveStore` offers what the store reader reads (`store.RowChunks`: `n_chunks`, `chunk_rows`,
`read_chunks`, `estimate_scales`, `meta`) over the chunks that a harvest with the same fields would
write, computing each chunk when it is read: the same contexts (`token_sources`), the same forward
pass to the layer (`harvest.chunk_activations`), the same rounding to the stored dtype. So
`StoreReader` streams it unchanged: the same chunk order and mixing window for a seed, resumable from
an integer position (after kill -9 too: the train loop checkpoints that position), each process
computing only the chunks of its reader shards and, under a snapshot axis, only its own checkpoints
(`columns`): a checkpoint's weights are read the first time one of its columns is asked for, so a
process never loads the other snapshot groups' models. A live run and a run on the harvested store
see the same batches (tests/training/test_live.py).

The shuffling buffer: with `buffer="device"` (the default) the chunks stay where the forward pass
left them, on the process's devices (split over them by rows), and the reader's mixing window,
row permutation and batch cuts run there, so activations never cross to the host and back; the
window then takes `window_chunks x chunk rows x C' x D` of device memory (lower
`reader.window_chunks` or `live.chunk_contexts` if that is too much). `buffer="host"` keeps the window
in host memory instead. Both give the same batches, bit for bit.

Cost: every chunk read runs C' forward passes, every epoch again (`launch.plan` weighs it against a
store).
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crosscoder_jax import models
from crosscoder_jax.data import harvest, token_sources
from crosscoder_jax.data.store import RowChunks
from crosscoder_jax.runtime.devices import local_data_mesh

_DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16}
BUFFERS = ("device", "host")


class LiveStore(RowChunks):
    """A store computed on demand from a harvest config (model, checkpoints, layer, tokens,
    n_contexts, context_len, drop_bos, dtype, model_dtype, batch_size, chunk_contexts, buffer)."""

    def __init__(self, config):
        self._ckpts = harvest.parse_checkpoints(config.checkpoints, config.model)
        for field, value, allowed in (("dtype", config.dtype, _DTYPES), ("model_dtype", config.model_dtype, _DTYPES),
                                      ("buffer", config.get("buffer", "device"), BUFFERS)):
            if value not in allowed:
                raise ValueError(f"live.{field} {value!r} is not one of {sorted(allowed)}")
        cfgs, self.tokenizer = harvest.check_checkpoints(self._ckpts)  # configs and tokenizers: no weights yet
        D, L = cfgs[0].d_model, cfgs[0].n_layers
        if not 0 <= config.layer < L:
            raise harvest.HarvestError(f"live.layer {config.layer} is outside the model's blocks 0..{L - 1}")
        self.contexts = token_sources.contexts(config.tokens, self.tokenizer, config.n_contexts, config.context_len)
        self.drop = int(config.drop_bos)
        self.T = self.contexts.shape[1] - self.drop
        n_tokens = self.contexts.shape[0] * self.T
        self.chunk_size = min(config.chunk_contexts * self.T, n_tokens)
        self.n_chunks = math.ceil(n_tokens / self.chunk_size)
        names = [n for n, _, _ in self._ckpts]
        # a store harvested with these fields would carry the same, so evaluation and attribution
        # of a live run find its checkpoints, layer and held-out tokens where they look for a store's
        self.meta = {**harvest.identity(config, self._ckpts, self.contexts, n_tokens, self.chunk_size),
                     "format": "live", "d_model": D, "scales": None}
        self.path = f"live activations of {config.model} ({', '.join(names)}) at layer {config.layer}"
        self.on_device = config.get("buffer", "device") == "device"
        self._dtype = _DTYPES[config.dtype]
        self._model_dtype = _DTYPES[config.model_dtype]
        self._batch = int(config.batch_size)
        self._residual = harvest.make_residual_fn(local_data_mesh(), int(config.layer))
        self._lms: dict[int, models.LM] = {}
        self._loading = threading.Lock()  # the reader's prefetch thread and the main thread both read

    @property
    def loaded(self) -> list[int]:
        """The checkpoints (indices into C) whose weights this process has read."""
        return sorted(self._lms)

    def models(self, columns: slice = slice(None)) -> list[models.LM]:
        """The checkpoints in `columns` (default all), their weights read on first use."""
        with self._loading:
            for c in range(self.n_checkpoints)[columns]:
                if c not in self._lms:
                    _, source, revision = self._ckpts[c]
                    self._lms[c] = models.load(source, revision=revision, dtype=self._model_dtype)
            return [self._lms[c] for c in range(self.n_checkpoints)[columns]]

    def read_chunks(self, ids: Sequence[int], columns: slice = slice(None)) -> list[np.ndarray | jax.Array]:
        """Chunks [rows, C', D] in the stored dtype, computed now (only the checkpoints in `columns`):
        jax arrays on this process's devices with `buffer="device"`, numpy arrays otherwise."""
        lms = self.models(columns)
        out = []
        for i in ids:
            start, stop = self.chunk_rows(int(i))
            ctx = self.contexts[start // self.T: stop // self.T]
            acts = harvest.chunk_activations(lms, self._residual, ctx, self.drop, self._batch,
                                             on_device=self.on_device)
            out.append(acts.reshape(-1, len(lms), self.d_model).astype(self._dtype))
        return out
