"""Store reader throughput against the training step's consumption, prefetch on and off.

  python benchmarks/bench_reader.py [--C 3 --D 512 --F 16384 --batch 4096 --rows 65536 --activation l1] [--s3]

Writes a temporary store of random activations, then measures in one run: the reader alone
(rows/s, prefetch off and on), the jitted train step alone on a resident batch (rows/s it
consumes), and the step fed by the reader (prefetch off and on). The reader must stay ahead of the
step: the table's last column is reader rows/s over the step's consumption. `--s3` puts the store
on an S3-compatible server (moto, the test dependency) started on 127.0.0.1, read through
tensorstore's s3 driver over HTTP: the object-storage path without a cloud.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.common import shape_args  # noqa: E402
from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.data.store import Store, create_store  # noqa: E402
from crosscoder_jax.data.reader import StoreReader  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402


def reader_rate(store, batch, prefetch, n_batches):
    r = StoreReader(store, batch, seed=0, prefetch=prefetch, window_chunks=4)
    next(r)
    t = time.perf_counter()
    for _ in range(n_batches):
        next(r)
    dt = time.perf_counter() - t
    r.close()
    return n_batches * batch / dt


def _s3_server():
    """A moto S3 server on a free local port with the bucket, and the environment pointing at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(
        Bucket="bench-reader")
    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    shape_args(ap, steps=4)
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--activation", default="l1")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--s3", action="store_true", help="store on a local moto S3 server")
    a = ap.parse_args()
    server = _s3_server() if a.s3 else None
    with tempfile.TemporaryDirectory() as tmp:
        where = "s3://bench-reader/s" if a.s3 else tmp + "/s"
        w = create_store(where, checkpoints=[f"c{i}" for i in range(a.C)], d_model=a.D, n_tokens=a.rows,
                         dtype=a.dtype, chunk_size=4096)
        rng = np.random.default_rng(0)
        for i in range(w.n_chunks):
            s, e = w.chunk_rows(i)
            w.write_chunk(i, rng.normal(size=(e - s, a.C, a.D)).astype(np.float32))
        store = Store(where)
        n = max(4, a.rows // a.batch)
        r_off = reader_rate(store, a.batch, 0, n)
        r_on = reader_rate(store, a.batch, 4, n)

        c = get_config()
        c.dict_size, c.batch_size, c.activation, c.steps = a.F, a.batch, a.activation, 1000
        mesh = sharding.make_mesh(-1, 1)
        _, key, _, _, init_fn, step_fn = build(c, a.C, a.D, np.ones(a.C), mesh)
        state = init_fn(key)
        x = sharding.global_batch(np.asarray(store.read_chunks([0])[0][: a.batch]), mesh)
        state, m = step_fn(state, x)
        jax.block_until_ready(m)
        t = time.perf_counter()
        for _ in range(a.steps):
            state, m = step_fn(state, x)
        jax.block_until_ready(m)
        step_rate = a.steps * a.batch / (time.perf_counter() - t)

        fed = {}
        for prefetch in (0, 4):
            r = StoreReader(store, a.batch, seed=1, prefetch=prefetch, window_chunks=4)
            state, m = step_fn(state, sharding.global_batch(next(r).acts_BCD, mesh))
            jax.block_until_ready(m)
            t = time.perf_counter()
            for _ in range(a.steps):
                state, m = step_fn(state, sharding.global_batch(next(r).acts_BCD, mesh))
            jax.block_until_ready(m)
            fed[prefetch] = a.steps * a.batch / (time.perf_counter() - t)
            r.close()
    if server is not None:
        server.stop()
    print(f"# {jax.devices()[0].device_kind}, C={a.C} D={a.D} F={a.F} batch={a.batch} store {a.dtype} "
          f"{'on a local S3 server (moto)' if a.s3 else 'on local disk'}, activation={a.activation}")
    print("| measurement | rows/s | / step consumption |")
    print("|---|---|---|")
    print(f"| train step alone (resident batch) | {step_rate:.0f} | 1.00 |")
    print(f"| reader alone, prefetch off | {r_off:.0f} | {r_off / step_rate:.1f} |")
    print(f"| reader alone, prefetch on | {r_on:.0f} | {r_on / step_rate:.1f} |")
    print(f"| step fed by reader, prefetch off | {fed[0]:.0f} | {fed[0] / step_rate:.2f} |")
    print(f"| step fed by reader, prefetch on | {fed[4]:.0f} | {fed[4] / step_rate:.2f} |")


if __name__ == "__main__":
    main()
