"""Streaming reader of an activation store: whole chunks in random order, a mixing window, prefetch.

The stream is a pure function of (seed, number of reader shards, window size, batch size), so a
run resumes from an integer position (batches consumed) and gives the same batches as a run that
never stopped. Each reader shard s of S owns the chunks `perm_epoch[s::S]`; it reads `window_chunks`
of them at a time (whole chunks, concurrently), shuffles their rows together, and cuts sub-batches
of B / S rows. A process reads only the shards it owns (`shards`), so every host reads its own
part of the data; one process that owns all shards sees exactly the same global batch as S hosts.
Random single-row reads from zarr are slow; whole chunks into a mixing window are not.
The window lives wherever the store's chunks are: numpy arrays in host memory, or jax arrays on the
devices (`live.LiveStore` with `buffer="device"`), which are mixed and cut there with the same
permutations, so both give the same batches.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crosscoder_jax.data.store import Store, StoreError


class Batch(NamedTuple):
    """A process-local batch: activations [B_local, C, D] (stored dtype; numpy, or a jax array when
    the store's chunks are on the devices), and the chunk of each row."""

    acts_BCD: np.ndarray | jax.Array
    chunk_B: np.ndarray
    index: int


class NonFiniteActivations(StoreError):
    """Raised when a batch holds NaN or inf; names the chunks and rows."""


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _concat(parts: list) -> np.ndarray | jax.Array:
    """Rows of host or device arrays joined where they are."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else jnp.concatenate(parts)


class _Window:
    """The chunks of one mixing window, read whole; rows are addressed by their position in the
    chunks joined in order."""

    def __init__(self, ids: Sequence[int], chunks: list):
        self.ids, self.chunks = list(ids), chunks
        self.starts = np.cumsum([0] + [len(c) for c in chunks])
        # device arrays (a live store's window): joined once where they are, gathered there
        self.joined = None if isinstance(chunks[0], np.ndarray) else _concat(chunks)

    def take(self, pos: np.ndarray) -> tuple[np.ndarray | jax.Array, np.ndarray]:
        """Rows at positions `pos` [n] of the joined window, and the chunk id of each."""
        j = np.searchsorted(self.starts, pos, side="right") - 1
        chunk_of_row = np.asarray(self.ids, np.int32)[j]
        if self.joined is not None:
            return self.joined[jnp.asarray(pos)], chunk_of_row
        first = self.chunks[0]
        out = np.empty((len(pos),) + first.shape[1:], first.dtype)
        for c in np.unique(j):
            sel = j == c
            out[sel] = self.chunks[c][pos[sel] - self.starts[c]]
        return out, chunk_of_row


class StoreReader:
    """Iterator over batches of a store, starting at batch `position`.

    Args:
      store: an open `Store`.
      batch_size: the global batch B (all shards together); divisible by `num_shards`.
      seed: data-order seed.
      num_shards: S, reader shards in the whole job (default 1; the train loop uses the process count).
      shards: the shards this process reads (default all); the local batch concatenates them in order.
      window_chunks: chunks mixed together (the shuffle buffer, in chunks).
      prefetch: batches prepared ahead on a background thread (0: read on demand).
      position: batches already consumed (to resume).
      check_finite: raise `NonFiniteActivations` naming chunk and row on NaN / inf.
      columns: the checkpoints this process reads (a slice of C; default all): a snapshot group of
        the training mesh reads only its own.
    """

    def __init__(self, store: Store, batch_size: int, seed: int = 0, num_shards: int = 1,
                 shards: Sequence[int] | None = None, window_chunks: int = 8, prefetch: int = 4,
                 position: int = 0, check_finite: bool = True, columns: slice = slice(None)):
        if batch_size % num_shards:
            raise StoreError(f"batch_size {batch_size} must be divisible by the {num_shards} reader shards")
        if store.n_chunks < num_shards:
            raise StoreError(f"{store.path} has {store.n_chunks} chunks, fewer than the {num_shards} reader "
                             "shards: re-harvest with a smaller chunk_size")
        self.store, self.seed, self.num_shards = store, seed, num_shards
        self.shards = list(range(num_shards)) if shards is None else list(shards)
        self.sub_batch = batch_size // num_shards
        self.window_chunks, self.check_finite = max(1, window_chunks), check_finite
        self.position, self.columns = position, columns
        self._prefetch = prefetch
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gen: Iterator[Batch] | None = None

    # The stream of one shard ------------------------------------------------------------------
    def _windows(self, shard: int) -> Iterator[tuple[list[int], int]]:
        """(chunk ids, rows) of every window of `shard`, epoch after epoch."""
        epoch = 0
        while True:
            perm = _rng(self.seed, epoch).permutation(self.store.n_chunks)[shard::self.num_shards]
            for w in range(0, len(perm), self.window_chunks):
                ids = [int(i) for i in perm[w:w + self.window_chunks]]
                yield ids, sum(b - a for a, b in map(self.store.chunk_rows, ids))
            epoch += 1

    def _shard_windows(self, shard: int, start_row: int) -> Iterator[tuple["_Window", np.ndarray]]:
        """Windows of `shard` as (window, positions): the window's chunks as read and the order its
        rows are drawn in (a permutation of the window's joined rows), the first one cut to begin
        at start_row. The rows are never copied as a whole: batches gather theirs (`_Window.take`)."""
        offset = 0
        for n, (ids, rows) in enumerate(self._windows(shard)):
            if offset + rows <= start_row:
                offset += rows
                continue
            window = _Window(ids, self.store.read_chunks(ids, self.columns))
            order = _rng(self.seed, shard, n, 1).permutation(rows)
            skip = max(0, start_row - offset)
            offset += rows
            yield window, order[skip:]

    def _shard_batches(self, shard: int, start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        pending: list[tuple[_Window, np.ndarray]] = []  # rows not yet handed out, window by window
        have = 0
        for window, pos in self._shard_windows(shard, start * self.sub_batch):
            pending.append((window, pos))
            have += len(pos)
            while have >= self.sub_batch:
                need, parts = self.sub_batch, []
                while need:
                    w, p = pending[0]
                    parts.append(w.take(p[:need]))
                    if len(p) > need:
                        pending[0] = (w, p[need:])
                        need = 0
                    else:
                        pending.pop(0)
                        need -= len(p)
                have -= self.sub_batch
                yield _concat([a for a, _ in parts]), np.concatenate([c for _, c in parts])

    def _batches(self, start: int) -> Iterator[Batch]:
        streams = [self._shard_batches(s, start) for s in self.shards]
        index = start
        while True:
            parts = [next(s) for s in streams]
            acts = _concat([p[0] for p in parts])
            chunk = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            if self.check_finite:
                self._check(acts, chunk, index)
            yield Batch(acts, chunk, index)
            index += 1

    def _check(self, acts: np.ndarray, chunk: np.ndarray, index: int) -> None:
        xp = np if isinstance(acts, np.ndarray) else jnp
        finite_B = np.asarray(xp.isfinite(acts.reshape(len(acts), -1)).all(axis=1))
        if not finite_B.all():
            bad = np.flatnonzero(~finite_B)
            chunks = sorted({int(c) for c in chunk[bad]})
            raise NonFiniteActivations(
                f"non-finite activations (NaN/inf) in batch {index}: {len(bad)} rows from chunk(s) {chunks} "
                f"(rows {[self.store.chunk_rows(c) for c in chunks]}) of {self.store.path}; re-harvest those "
                "rows or fix the model producing them")

    # Iteration with prefetch ----------------------------------------------------------------------
    def _worker(self, start: int) -> None:
        try:
            for batch in self._batches(start):
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer, raised where the batch was wanted
            self._queue.put(e)

    def __iter__(self) -> "StoreReader":
        return self

    def __next__(self) -> Batch:
        if self._prefetch <= 0:
            if self._gen is None:
                self._gen = self._batches(self.position)
            batch = next(self._gen)
        else:
            if self._thread is None:
                self._queue = queue.Queue(maxsize=self._prefetch)
                self._thread = threading.Thread(target=self._worker, args=(self.position,), daemon=True)
                self._thread.start()
            batch = self._queue.get()
            if isinstance(batch, BaseException):
                raise batch
        self.position = batch.index + 1
        return batch

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
