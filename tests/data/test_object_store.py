"""Stores on object storage, for real against an S3-compatible server (moto)
started on 127.0.0.1: harvest, kill -9 mid-harvest and resume, read back byte-identical to the
local-disk store of the same harvest, train and resume training from it."""

import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import tensorstore as ts

from conftest import ROOT, small_config, subprocess_env
from lm_fixtures import tiny_gpt_neox
from crosscoder_jax.data.location import Location, StoreUnreachable
from crosscoder_jax.data.store import Store, StoreDamaged, create_store
from crosscoder_jax.training.train import train

from moto import server as moto_server  # test dependency (requirements-dev.txt)
BUCKET = "crosscoder-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server on a free local port with one bucket; the environment that points clients at it."""
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    import boto3
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield env
    mp.undo()
    server.stop()


def _objects(where: str) -> dict[str, bytes]:
    loc = Location(where)
    kv = ts.KvStore.open(loc.kvstore()).result()
    return {k.decode(): kv.read(k).result().value for k in kv.list().result()}


def _harvest_cmd(out, series):
    return [sys.executable, "-m", "launch.harvest", f"--config={ROOT / 'configs' / 'harvest.py'}", "--config.model=tiny",
            f"--config.checkpoints={','.join(str(p) for p in series)}", "--config.layer=1", f"--config.out={out}",
            "--config.n_contexts=48", "--config.context_len=16", "--config.chunk_contexts=4",
            "--config.batch_size=4", "--config.progress=False", "--config.dtype=bfloat16"]


@pytest.mark.slow
def test_harvest_kill_resume_train_on_s3(s3, tmp_path):
    """Slow (45 s): the default suite keeps kill and resume of a local harvest (test_harvest) and the
    store's reads and writes on the S3 server (test_missing_object_is_named)."""
    series = [tiny_gpt_neox(tmp_path / f"step{i}", seed=i) for i in range(2)]
    env = subprocess_env(**s3)
    url = f"s3://{BUCKET}/runs/store"
    from configs.harvest import get_config
    from crosscoder_jax.data.harvest import harvest
    c = get_config()
    c.model, c.checkpoints, c.layer, c.out = "tiny", ",".join(str(p) for p in series), 1, str(tmp_path / "local")
    c.n_contexts, c.context_len, c.chunk_contexts, c.batch_size, c.progress, c.dtype = 48, 16, 4, 4, False, "bfloat16"
    harvest(c)  # the same harvest on local disk, in this process
    proc = subprocess.Popen(_harvest_cmd(url, series), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # the log of a store on object storage is kept locally, below the working directory
    log = tmp_path / "harvest_logs" / BUCKET / "runs" / "store" / "harvest_log.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read()[-2000:]  # still running: killed mid-harvest
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Store(url, require_complete=False).meta["progress"]["chunks_written"] < 12
    again = subprocess.run(_harvest_cmd(url, series), env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    remote, disk = _objects(url), _objects(str(tmp_path / "local"))
    disk.pop("harvest_log.jsonl")
    assert sorted(remote) == sorted(disk)
    for key in disk:
        if key != "store.json":
            assert remote[key] == disk[key], key
    assert json.loads(remote["store.json"]) == json.loads(disk["store.json"])

    # train on it, stop, resume: the same as one run from the local copy
    train(small_config(tmp_path / "local", tmp_path / "one", steps=8, batch_size=48, dict_size=64))
    train(small_config(url, tmp_path / "two", steps=8, batch_size=48, dict_size=64, stop_after=4, save_every=2))
    train(small_config(url, tmp_path / "two", steps=8, batch_size=48, dict_size=64, save_every=2))
    from safetensors.numpy import load_file
    a, b = load_file(str(tmp_path / "one" / "crosscoder.safetensors")), load_file(str(tmp_path / "two" / "crosscoder.safetensors"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_an_unreachable_endpoint_is_named_within_the_timeout(tmp_path, monkeypatch):
    """Nothing listens at the endpoint: the store's reader, training and harvest each give up within
    CROSSCODER_STORE_TIMEOUT (tensorstore's own retries would wait for minutes), naming the URL and
    the endpoint."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_REGION": "us-east-1", "CROSSCODER_STORE_TIMEOUT": "3"}.items():
        monkeypatch.setenv(k, v)
    url = f"s3://{BUCKET}/nowhere"
    from configs.harvest import get_config
    from crosscoder_jax.data.harvest import harvest

    c = get_config()
    c.model, c.checkpoints, c.out = "tiny", str(tiny_gpt_neox(tmp_path / "m", seed=0)), url
    for name, call in (("reader", lambda: Store(url)), ("train", lambda: train(small_config(url, tmp_path / "w"))),
                       ("harvest", lambda: harvest(c))):
        t = time.perf_counter()
        with pytest.raises(StoreUnreachable) as e:
            call()
        assert time.perf_counter() - t < 15, name
        assert url in str(e.value) and endpoint in str(e.value) and "CROSSCODER_STORE_TIMEOUT" in str(e.value), name
    assert not (tmp_path / "w").exists()
    monkeypatch.setenv("CROSSCODER_STORE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="CROSSCODER_STORE_TIMEOUT='soon' is not a number of seconds"):
        Store(url)


def test_refused_credentials_are_named(s3):
    """The S3 server refuses every request (moto's IAM checks on): a clear error, not retries."""
    url = f"s3://{BUCKET}/refused"
    create_store(url, checkpoints=["a"], d_model=4, n_tokens=8, chunk_size=4)
    requests.post(f"{s3['AWS_ENDPOINT_URL']}/moto-api/reset-auth", data=b"0").raise_for_status()
    try:
        t = time.perf_counter()
        with pytest.raises(StoreUnreachable, match=r"s3://crosscoder-test/refused: reading store.json failed at "
                                                   r"http://127\.0\.0\.1:\d+: PERMISSION_DENIED.*credentials"):
            Store(url)
        assert time.perf_counter() - t < 15
    finally:
        requests.post(f"{s3['AWS_ENDPOINT_URL']}/moto-api/reset-auth", data=b"inf").raise_for_status()
    assert Store(url, require_complete=False).n_tokens == 8


def test_missing_object_is_named(s3):
    url = f"s3://{BUCKET}/damaged"
    w = create_store(url, checkpoints=["a"], d_model=4, n_tokens=8, chunk_size=4)
    for i in range(2):
        w.write_chunk(i, np.ones((4, 1, 4), np.float32))
    assert Store(url).read_chunks([1])[0].shape == (4, 1, 4)
    ts.KvStore.open(Location(url).kvstore("activations")).result().delete_range(ts.KvStore.KeyRange("c/1/", "c/10")).result()
    with pytest.raises(StoreDamaged, match=r"s3://crosscoder-test/damaged: chunk\(s\) 1 "):
        Store(url)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["rows", "snapshots"])
def test_two_processes_read_their_parts_of_an_s3_store(s3, tmp_path, split, monkeypatch):
    """Two processes on localhost train from the store on the S3 server, each reading its reader
    shard (rows) or its checkpoints' columns (snapshots), and equal one process on the local copy."""
    from process_fixtures import assert_same_export, run_pair, train_args as args
    from configs.harvest import get_config
    from crosscoder_jax.data.harvest import harvest

    monkeypatch.chdir(tmp_path)  # the harvest log of a store on object storage is kept below the cwd
    series = [tiny_gpt_neox(tmp_path / f"step{i}", seed=i) for i in range(2)]
    url = f"s3://{BUCKET}/runs/{split}"
    for out in (str(tmp_path / "local"), url):
        c = get_config()
        c.model, c.checkpoints, c.layer, c.out = "tiny", ",".join(str(p) for p in series), 1, out
        c.n_contexts, c.context_len, c.chunk_contexts, c.batch_size, c.progress = 48, 16, 4, 4, False
        harvest(c)
    extra = (["--config.reader.shards=1", "--config.mesh.data=1", "--config.mesh.snapshot=2"]
             if split == "snapshots" else [])
    single = subprocess.run(args(tmp_path / "local", tmp_path / "one") + extra[:1], env=subprocess_env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    start = run_pair(args(url, tmp_path / "two") + extra, tmp_path, "two")
    assert start["block"] == ({"rows": [0, 64], "checkpoints": [0, 1]} if split == "snapshots"
                              else {"rows": [0, 32], "checkpoints": [0, 2]})
    assert_same_export(tmp_path / "one", tmp_path / "two")
