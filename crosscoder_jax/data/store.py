"""The activation store: a directory that holds `[N, C, D]` activations as a tensorstore zarr3 array.

Layout (a stable interface, documented in docs/interfaces.md):
  store.json     {"format": "crosscoder_jax.activations/1", "checkpoints": [...], "d_model": D,
                  "n_tokens": N, "dtype": "float32" | "bfloat16", "model": ..., "layer": L,
                  "chunk_size": rows per chunk, "scales": [C] or null, "progress": {"chunks_written": n}, ...}
  activations/   zarr3 array [N, C, D], chunked along N (and, since stores record "checkpoint_chunk",
                 along C: one checkpoint per chunk by default; older stores hold all C in a chunk)
  tokens/        optional zarr3 int32 [N];  positions/  optional zarr3 int32 [N]

The writer fills chunks in order and records progress after each, so a killed harvest resumes.
Reading is in `reader.py`.
"""

from __future__ import annotations

import abc

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorstore as ts

from crosscoder_jax.data.location import Location

FORMAT = "crosscoder_jax.activations/1"
_DTYPES = ("float32", "bfloat16")


class StoreError(ValueError):
    """A store that cannot be used as asked; the message says why and what to do."""


class StoreDamaged(StoreError):
    """Data that store.json records as written is missing (a deleted or lost chunk file)."""


def _array_spec(loc: Location, name: str, shape: Sequence[int] | None = None, dtype: str | None = None,
                chunk_rows: int | None = None, chunk_checkpoints: int | None = None) -> dict:
    # Missing chunks are errors, not zeros (zarr's default fill), and chunks of zeros are stored,
    # so that a missing chunk file always means lost data.
    spec: dict[str, Any] = {"driver": "zarr3", "kvstore": loc.kvstore(name),
                            "fill_missing_data_reads": False, "store_data_equal_to_fill_value": True}
    if shape is not None:
        chunk = [chunk_rows, *shape[1:]]
        if len(shape) == 3 and chunk_checkpoints:
            chunk[1] = chunk_checkpoints
        spec["metadata"] = {"shape": list(shape), "data_type": dtype,
                            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}}}
        spec.update(create=True, delete_existing=True)
    return spec


def _write_meta(loc: Location, obj: Mapping[str, Any]) -> None:
    loc.write_text("store.json", json.dumps(obj, indent=1))


def read_meta(path: str | os.PathLike | Location) -> dict[str, Any]:
    """store.json of the store at `path` (a directory or a kvstore URL), checked for the format
    this version reads."""
    path = Location(path)
    meta_path = path / "store.json"
    text = path.read_text("store.json")
    if text is None:
        raise StoreError(f"{path} is not an activation store: no store.json. Harvest one with "
                         "`python -m launch.harvest`, or write the layout in docs/interfaces.md "
                         "(\"Stable interfaces\") with tensorstore.")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise StoreError(f"{meta_path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): the "
                         "store's description is damaged. Restore it from a copy, or re-harvest the store "
                         "(a harvest to the same --config.out resumes only from a readable store.json)") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{meta_path} holds a JSON {type(meta).__name__}, not the store's description (an object)")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise StoreError(f"{path} was written as format {fmt!r}, this version reads {FORMAT!r}: "
                         "re-harvest it with this version, or convert it to the layout in docs/interfaces.md "
                         "(\"Stable interfaces\").")
    missing = [k for k in ("checkpoints", "d_model", "n_tokens", "dtype") if k not in meta]
    if missing:
        raise StoreError(f"{meta_path} lacks required fields {missing}")
    if meta["dtype"] not in _DTYPES:
        raise StoreError(f"{meta_path}: dtype {meta['dtype']!r} is not one of {_DTYPES}")
    return meta


class StoreWriter:
    """Appends chunks to a store in order; `chunks_written` survives a kill (store.json)."""

    def __init__(self, path: str | os.PathLike | Location):
        self.location = Location(path)
        self.path = self.location.path
        self.meta = read_meta(self.location)
        self.acts = ts.open(_array_spec(self.location, "activations")).result()
        self.tokens = self._maybe_open("tokens")
        self.positions = self._maybe_open("positions")

    def _maybe_open(self, name: str):
        loc = self.location
        return ts.open(_array_spec(loc, name)).result() if loc.exists(f"{name}/zarr.json") else None

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.meta["n_tokens"] / self.chunk_size)

    @property
    def chunks_written(self) -> int:
        return int(self.meta["progress"]["chunks_written"])

    @property
    def complete(self) -> bool:
        return self.chunks_written >= self.n_chunks

    def chunk_rows(self, i: int) -> tuple[int, int]:
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, int(self.meta["n_tokens"]))

    def write_chunk(self, i: int, acts_NCD: np.ndarray, tokens_N: np.ndarray | None = None,
                    positions_N: np.ndarray | None = None) -> None:
        """Writes chunk i (must be the next one) and records it as done."""
        if i != self.chunks_written:
            raise StoreError(f"chunk {i} written out of order: the store has {self.chunks_written} chunks")
        start, stop = self.chunk_rows(i)
        C, D = len(self.meta["checkpoints"]), int(self.meta["d_model"])
        if acts_NCD.shape != (stop - start, C, D):
            raise StoreError(f"chunk {i} has shape {acts_NCD.shape}, the store expects {(stop - start, C, D)}")
        futures = [self.acts[start:stop].write(np.asarray(acts_NCD).astype(self.acts.dtype.numpy_dtype))]
        for arr, values, name in ((self.tokens, tokens_N, "tokens"), (self.positions, positions_N, "positions")):
            if arr is not None:
                if values is None:
                    raise StoreError(f"this store keeps {name}: pass {name} for chunk {i}")
                futures.append(arr[start:stop].write(np.asarray(values, np.int32)))
        for fut in futures:
            fut.result()
        self.meta["progress"]["chunks_written"] = i + 1
        _write_meta(self.location, self.meta)

    def update_meta(self, **fields: Any) -> None:
        """Records extra fields in store.json (e.g. `scales`)."""
        self.meta.update(fields)
        _write_meta(self.location, self.meta)


def create_store(path: str | os.PathLike | Location, *, checkpoints: Sequence[str], d_model: int, n_tokens: int,
                 dtype: str = "float32", chunk_size: int = 8192, model: str | None = None,
                 layer: int | None = None, with_tokens: bool = False, checkpoint_chunk: int = 1,
                 **extra: Any) -> StoreWriter:
    """Creates an empty store (replacing any at `path`) and returns its writer.

    Chunks hold `chunk_size` rows of `checkpoint_chunk` checkpoints (default 1), so a reader of
    some checkpoints (a snapshot group of the training mesh) fetches only their bytes."""
    if dtype not in _DTYPES:
        raise StoreError(f"dtype {dtype!r} is not one of {_DTYPES}")
    if n_tokens < 1 or chunk_size < 1 or d_model < 1 or not checkpoints:
        raise StoreError("a store needs n_tokens, chunk_size, d_model >= 1 and at least one checkpoint")
    path = Location(path)
    path.make()
    C = len(checkpoints)
    rows = min(chunk_size, n_tokens)
    if not 1 <= checkpoint_chunk <= C:
        raise StoreError(f"checkpoint_chunk {checkpoint_chunk} must be between 1 and the {C} checkpoints")
    ts.open(_array_spec(path, "activations", (n_tokens, C, d_model), dtype, rows, checkpoint_chunk)).result()
    if with_tokens:
        for name in ("tokens", "positions"):
            ts.open(_array_spec(path, name, (n_tokens,), "int32", rows)).result()
    meta = {"format": FORMAT, "checkpoints": list(checkpoints), "d_model": int(d_model),
            "n_tokens": int(n_tokens), "dtype": dtype, "model": model, "layer": layer,
            "chunk_size": rows, "checkpoint_chunk": int(checkpoint_chunk), "scales": None, "progress": {"chunks_written": 0}, **extra}
    _write_meta(path, meta)
    return StoreWriter(path)


class RowChunks(abc.ABC):
    """What a reader needs of a source of activations cut into row chunks: `meta` (store.json's
    fields), `chunk_size`, `n_chunks`, `read_chunks(ids, columns)`; the shape, chunk bounds and the normalisation
    estimate follow from them (a `Store`, or `live.LiveStore` that computes its chunks)."""

    meta: dict[str, Any]
    chunk_size: int
    n_chunks: int
    path: Any

    @abc.abstractmethod
    def read_chunks(self, ids: Sequence[int], columns: slice = slice(None)) -> list[np.ndarray]:
        """The chunks `ids`, each [rows, C', D] for the checkpoints in `columns`, in the stored dtype."""

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def n_checkpoints(self) -> int:
        return len(self.meta["checkpoints"])

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    def chunk_rows(self, i: int) -> tuple[int, int]:
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, self.n_tokens)

    def estimate_scales(self, max_rows: int = 65536, seed: int = 0, columns: slice = slice(None)) -> np.ndarray:
        """Per-checkpoint input scale `s_c = sqrt(D) / E||a_c||` [C'] (float64) of the checkpoints in
        `columns` (default all), from whole chunks picked at random until `max_rows` rows are read
        (each checkpoint's value does not depend on which others are read with it)."""
        order = np.random.default_rng(seed).permutation(self.n_chunks)
        sums, rows = np.zeros(len(range(self.n_checkpoints)[columns])), 0
        for i in order:
            (chunk,) = self.read_chunks([int(i)], columns)
            norms = np.linalg.norm(np.asarray(chunk).astype(np.float64), axis=-1)
            if not np.all(np.isfinite(norms)):
                bad = int(np.argwhere(~np.isfinite(norms))[0, 0]) + self.chunk_rows(int(i))[0]
                raise StoreError(f"{self.path}: non-finite activations in chunk {int(i)} (row {bad}); "
                                 "re-harvest that checkpoint or drop the rows")
            sums += norms.sum(axis=0)
            rows += norms.shape[0]
            if rows >= max_rows:
                break
        mean_norm = sums / rows
        if np.any(mean_norm <= 0):
            zero = [range(self.n_checkpoints)[columns][j] for j in np.flatnonzero(mean_norm <= 0)]
            raise StoreError(f"{self.path}: checkpoint(s) {zero} have "
                             "all-zero activations; check the harvest")
        return np.sqrt(self.d_model) / mean_norm


class Store(RowChunks):
    """A finished store opened for reading: whole-chunk reads and normalisation statistics."""

    def __init__(self, path: str | os.PathLike | Location, require_complete: bool = True):
        self.location = Location(path)
        self.path = self.location.path
        self.meta = read_meta(self.location)
        try:
            self.acts = ts.open(_array_spec(self.location, "activations")).result()
        except ValueError as e:
            raise StoreError(f"{self.path}/activations cannot be opened as a zarr3 array: {e}") from e
        C, D, N = len(self.meta["checkpoints"]), int(self.meta["d_model"]), int(self.meta["n_tokens"])
        if tuple(self.acts.shape) != (N, C, D):
            raise StoreError(f"{self.path}: activations have shape {tuple(self.acts.shape)} but store.json "
                             f"says {(N, C, D)}")
        self.chunk_size = int(self.meta.get("chunk_size") or self._chunk_shape()[0])
        self.n_chunks = math.ceil(N / self.chunk_size)
        done = self.meta.get("progress", {}).get("chunks_written", self.n_chunks)
        if require_complete and done < self.n_chunks:
            raise StoreError(f"{self.path} is incomplete ({done} of {self.n_chunks} chunks written): "
                             "rerun the harvest command that made it to finish it")
        missing = self.missing_chunks(min(done, self.n_chunks))
        if missing:
            raise StoreDamaged(self._damage(missing))

    def _chunk_shape(self) -> list[int]:
        """The zarr chunk shape (tensorstore's read chunks may be smaller subdivisions of it)."""
        grid = self.acts.spec().to_json().get("metadata", {}).get("chunk_grid", {})
        return list(grid.get("configuration", {}).get("chunk_shape") or self.acts.chunk_layout.write_chunk.shape)

    def missing_chunks(self, n: int) -> list[int]:
        """Row chunks among the first n whose files are not all in the store's directory."""
        layout = self._chunk_shape()
        enc = self.acts.spec().to_json().get("metadata", {}).get("chunk_key_encoding", {})
        if enc.get("name", "default") != "default" or enc.get("configuration", {}).get("separator", "/") != "/":
            return []  # unknown key layout: reads still fail on a missing chunk
        keys = self.location.keys("activations")
        grid = [math.ceil(dim / c) for dim, c in zip(self.acts.shape[1:], layout[1:])]
        cells = [f"{j}/{d}" for j in range(grid[0]) for d in range(grid[1])]
        return [i for i in range(n) if any(f"c/{i}/{cell}" not in keys for cell in cells)]

    def _damage(self, chunks: Sequence[int]) -> str:
        shown = ", ".join(f"{i} (rows {a}:{b})" for i, (a, b) in ((i, self.chunk_rows(i)) for i in chunks[:8]))
        more = f" and {len(chunks) - 8} more" if len(chunks) > 8 else ""
        return (f"{self.path}: chunk(s) {shown}{more} of the activations are missing from the store, though store.json "
                "records them as written (a deleted or lost file or object under activations/c/). Training on it would "
                "read zeros there. Restore the files from a copy, or harvest the store again into a new directory.")

    def read_chunks(self, ids: Sequence[int], columns: slice = slice(None)) -> list[np.ndarray]:
        """Whole row chunks [rows, C', D] in the stored dtype, read concurrently; `columns` picks
        checkpoints, and on a store chunked per checkpoint only their bytes are fetched."""
        futures = [self.acts[slice(*self.chunk_rows(i)), columns].read() for i in ids]
        out = []
        for i, f in zip(ids, futures):
            try:
                out.append(f.result())
            except ValueError as e:
                if "NOT_FOUND" in str(e):
                    raise StoreDamaged(self._damage([i])) from e
                raise
        return out

    def read_rows(self, start: int, stop: int, name: str = "activations") -> np.ndarray:
        arr = self.acts if name == "activations" else ts.open(_array_spec(self.location, name)).result()
        return arr[start:stop].read().result()
