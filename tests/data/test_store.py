"""Activation store: layout, writer progress, deterministic resumable chunk-shuffled reading, errors."""

import json

import numpy as np
import pytest
import tensorstore as ts

from crosscoder_jax.data import store as store_lib
from crosscoder_jax.data.store import Store, StoreError, StoreWriter, create_store
from crosscoder_jax.data.reader import NonFiniteActivations, StoreReader

N, C, D, CHUNK = 1000, 2, 4, 64


def rows(n=N):
    return np.arange(n * C * D, dtype=np.float32).reshape(n, C, D)


@pytest.fixture
def full_store(tmp_path):
    w = create_store(tmp_path / "s", checkpoints=["a", "b"], d_model=D, n_tokens=N, chunk_size=CHUNK,
                     with_tokens=True, model="m", layer=3)
    x = rows()
    for i in range(w.n_chunks):
        a, b = w.chunk_rows(i)
        w.write_chunk(i, x[a:b], np.arange(a, b), np.arange(a, b) % 7)
    return Store(tmp_path / "s")


def row_ids(batch):
    return (batch.acts_BCD[:, 0, 0] / (C * D)).astype(int)


def test_layout_is_the_documented_one(full_store):
    meta = json.loads((full_store.path / "store.json").read_text())
    assert meta["format"] == "crosscoder_jax.activations/1"
    assert (meta["checkpoints"], meta["d_model"], meta["n_tokens"], meta["dtype"]) == (["a", "b"], D, N, "float32")
    # A user can read it with tensorstore alone.
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(full_store.path / "activations")}}).result()
    np.testing.assert_array_equal(arr[10:20].read().result(), rows()[10:20])
    np.testing.assert_array_equal(full_store.read_rows(5, 9, "positions"), np.arange(5, 9) % 7)


def test_user_written_store_with_tensorstore_alone_trains_reader(tmp_path):
    path = tmp_path / "u"
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "activations")},
                   "metadata": {"shape": [300, 1, 4], "data_type": "bfloat16",
                                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [100, 1, 4]}}},
                   "create": True}).result()
    arr.write(np.ones((300, 1, 4), arr.dtype.numpy_dtype)).result()
    (path / "store.json").write_text(json.dumps({"format": store_lib.FORMAT, "checkpoints": ["x"], "d_model": 4,
                                                 "n_tokens": 300, "dtype": "bfloat16"}))
    s = Store(path)
    assert s.chunk_size == 100 and s.n_chunks == 3
    assert next(StoreReader(s, 50, prefetch=0)).acts_BCD.shape == (50, 1, 4)


def test_reader_covers_every_row_once_per_epoch_and_mixes_chunks(full_store):
    r = StoreReader(full_store, 40, seed=3, window_chunks=4, prefetch=2)
    seen = np.concatenate([row_ids(next(r)) for _ in range(N // 40)])
    r.close()
    assert sorted(seen.tolist()) == list(range(N))
    first = row_ids(StoreReader(full_store, 40, seed=3, window_chunks=4, prefetch=0).__next__())
    assert len(set(first // CHUNK)) > 1  # rows of one batch come from several chunks
    other = row_ids(next(StoreReader(full_store, 40, seed=4, window_chunks=4, prefetch=0)))
    assert not np.array_equal(first, other)


def test_reader_is_deterministic_and_resumes(full_store):
    a = StoreReader(full_store, 32, seed=1, window_chunks=3, prefetch=3)
    ref = [next(a).acts_BCD for _ in range(45)]  # crosses an epoch boundary
    a.close()
    assert a.position == 45
    b = StoreReader(full_store, 32, seed=1, window_chunks=3, prefetch=0, position=29)
    for i in range(29, 45):
        np.testing.assert_array_equal(next(b).acts_BCD, ref[i])


def test_shards_split_the_global_batch(full_store):
    whole = StoreReader(full_store, 32, seed=1, num_shards=2, prefetch=0)
    parts = [StoreReader(full_store, 32, seed=1, num_shards=2, shards=[s], prefetch=0) for s in (0, 1)]
    for _ in range(20):
        g = next(whole).acts_BCD
        p0, p1 = (next(p).acts_BCD for p in parts)
        np.testing.assert_array_equal(g, np.concatenate([p0, p1]))
        assert not set(row_ids_of(p0) // CHUNK) & set(row_ids_of(p1) // CHUNK)  # hosts read disjoint chunks


def row_ids_of(a):
    return (a[:, 0, 0] / (C * D)).astype(int)


def test_reader_reads_one_window_at_a_time(full_store, monkeypatch):
    """What keeps a store larger than RAM trainable: reads are whole chunks, a window at a time."""
    calls = []
    orig = Store.read_chunks
    monkeypatch.setattr(Store, "read_chunks", lambda self, ids, cols=slice(None): calls.append(list(ids))
                        or orig(self, ids, cols))
    r = StoreReader(full_store, 16, window_chunks=2, prefetch=0)
    for _ in range(30):
        next(r)
    assert calls and max(len(c) for c in calls) <= 2
    assert sum(len(c) for c in calls) <= 30 * 16 // CHUNK + 2


def test_a_snapshot_group_reads_only_its_checkpoints_bytes(full_store, tmp_path):
    """Stores are chunked per checkpoint: the reader of checkpoint "b" gets the same rows as a full
    reader's column b, and the chunk files it would open hold no other checkpoint."""
    assert json.loads((full_store.path / "store.json").read_text())["checkpoint_chunk"] == 1
    chunk_files = {p.relative_to(full_store.path / "activations").parts[1:3]
                   for p in (full_store.path / "activations" / "c").rglob("*") if p.is_file()}
    assert chunk_files == {(str(i), str(c)) for i in range(full_store.n_chunks) for c in range(C)}
    full, col = StoreReader(full_store, 40, seed=2, prefetch=0), StoreReader(full_store, 40, seed=2, prefetch=0,
                                                                             columns=slice(1, 2))
    for _ in range(5):
        np.testing.assert_array_equal(next(col).acts_BCD, next(full).acts_BCD[:, 1:2])


def test_stores_with_all_checkpoints_in_a_chunk_stay_readable(tmp_path):
    """Stores written before per-checkpoint chunking hold [rows, C, D] per chunk and no
    "checkpoint_chunk" field; a column reader reads them too."""
    path = tmp_path / "old"
    w = create_store(path, checkpoints=["a", "b"], d_model=D, n_tokens=N, chunk_size=CHUNK, checkpoint_chunk=C)
    x = rows()
    for i in range(w.n_chunks):
        a, b = w.chunk_rows(i)
        w.write_chunk(i, x[a:b])
    meta = json.loads((path / "store.json").read_text())
    del meta["checkpoint_chunk"]
    (path / "store.json").write_text(json.dumps(meta))
    assert not (path / "activations" / "c" / "0" / "1").exists()
    s = Store(path)
    full, col = StoreReader(s, 40, seed=2, prefetch=0), StoreReader(s, 40, seed=2, prefetch=0, columns=slice(1, 2))
    for _ in range(5):
        np.testing.assert_array_equal(next(col).acts_BCD, next(full).acts_BCD[:, 1:2])


def test_scales_estimate(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 2, 16)).astype(np.float32) * np.array([1.0, 10.0])[None, :, None]
    w = create_store(tmp_path / "s", checkpoints=["a", "b"], d_model=16, n_tokens=512, chunk_size=128)
    for i in range(4):
        w.write_chunk(i, x[i * 128:(i + 1) * 128])
    s = Store(tmp_path / "s").estimate_scales()
    ref = np.sqrt(16) / np.linalg.norm(x.astype(np.float64), axis=-1).mean(0)
    np.testing.assert_allclose(s, ref, rtol=1e-6)


def test_writer_resumes_and_refuses_out_of_order(tmp_path):
    w = create_store(tmp_path / "s", checkpoints=["a"], d_model=2, n_tokens=10, chunk_size=4)
    w.write_chunk(0, np.zeros((4, 1, 2)))
    w2 = StoreWriter(tmp_path / "s")  # a new process resuming
    assert w2.chunks_written == 1 and not w2.complete
    with pytest.raises(StoreError, match="out of order"):
        w2.write_chunk(2, np.zeros((2, 1, 2)))
    with pytest.raises(StoreError, match="shape"):
        w2.write_chunk(1, np.zeros((3, 1, 2)))
    with pytest.raises(StoreError, match="incomplete .1 of 3 chunks"):
        Store(tmp_path / "s")


def test_bad_stores_have_clear_errors(tmp_path, full_store):
    with pytest.raises(StoreError, match="no store.json"):
        Store(tmp_path / "nothing")
    meta = json.loads((full_store.path / "store.json").read_text())
    meta["format"] = "crosscoder_jax.activations/0"
    (full_store.path / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format 'crosscoder_jax.activations/0'.*re-harvest"):
        Store(full_store.path)
    meta["format"], meta["d_model"] = store_lib.FORMAT, 5
    (full_store.path / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="shape"):
        Store(full_store.path)


def test_non_finite_rows_are_named(tmp_path):
    x = rows(256)
    x[130, 1, 2] = np.nan
    w = create_store(tmp_path / "s", checkpoints=["a", "b"], d_model=D, n_tokens=256, chunk_size=64)
    for i in range(4):
        w.write_chunk(i, x[i * 64:(i + 1) * 64])
    r = StoreReader(Store(tmp_path / "s"), 256, prefetch=2)
    with pytest.raises(NonFiniteActivations, match=r"chunk\(s\) \[2\]"):
        next(r)
    r.close()
