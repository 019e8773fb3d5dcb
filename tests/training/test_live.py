"""Live activations: a run that computes the checkpoints' activations during
training equals a run on the store harvested with the same fields, and resumes from its position;
the shuffling window on the device and on the host give the same parameters, bit for bit; a process
reads only the weights of the checkpoints whose columns it is asked for."""

import jax
import numpy as np
from safetensors.numpy import load_file

from conftest import small_config
from configs.harvest import get_config as harvest_config
from lm_fixtures import tiny_gpt_neox
from crosscoder_jax.data.harvest import harvest
from crosscoder_jax.data.live import LiveStore
from crosscoder_jax.data.store import Store


def _fields(series, out=""):
    c = harvest_config()
    c.model, c.checkpoints, c.layer, c.out = "tiny", ",".join(str(p) for p in series), 1, out
    c.n_contexts, c.context_len, c.chunk_contexts, c.batch_size, c.progress, c.dtype = 48, 16, 4, 4, False, "bfloat16"
    return c


def test_live_run_equals_store_run_and_resumes(tmp_path):
    series = [tiny_gpt_neox(tmp_path / f"step{i}", seed=i) for i in range(2)]
    store = harvest(_fields(series, str(tmp_path / "store")))
    live = LiveStore(_fields(series))
    on_disk = Store(store)
    assert live.n_chunks == on_disk.n_chunks and live.meta["checkpoints"] == on_disk.meta["checkpoints"]
    assert live.loaded == []  # configs and tokenizers checked, no weights read yet
    (chunk,) = live.read_chunks([3], slice(1, 2))
    assert live.loaded == [1] and isinstance(chunk, jax.Array)  # only that column's model; on the device
    np.testing.assert_array_equal(np.asarray(chunk), on_disk.read_chunks([3], slice(1, 2))[0])
    scales = on_disk.estimate_scales()
    np.testing.assert_allclose(live.estimate_scales(columns=slice(1, 2)), scales[1:], rtol=1e-12)

    def cfg(activations, workdir, **kw):
        c = small_config(activations, tmp_path / workdir, steps=10, batch_size=48, dict_size=64, **kw)
        f = _fields(series)
        for key in f:
            if key in c.live:
                c.live[key] = f[key]
        return c

    from crosscoder_jax.training.train import train
    train(cfg(str(store), "from_store"))
    train(cfg("live", "live", stop_after=5, save_every=5))
    train(cfg("live", "live", save_every=5))
    train(cfg("live", "live_host", **{"live.buffer": "host"}))
    a = load_file(str(tmp_path / "from_store" / "crosscoder.safetensors"))
    b = load_file(str(tmp_path / "live" / "crosscoder.safetensors"))
    h = load_file(str(tmp_path / "live_host" / "crosscoder.safetensors"))
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_array_equal(h[k], b[k], err_msg=k)

    # evaluation finds a live run's checkpoints, layer and held-out tokens as it finds a store's
    from crosscoder_jax.analysis import evaluate
    from crosscoder_jax.pipeline import load_run
    lms, tok, meta, cc = load_run(tmp_path / "live")
    _, _, store_meta, _ = load_run(tmp_path / "from_store")
    assert len(lms) == 2 and meta["format"] == "live"
    for key in ("checkpoints", "checkpoint_sources", "layer", "drop_bos", "tokens_sha256", "n_tokens", "context_len"):
        assert meta[key] == store_meta[key], key
    held_out = evaluate.heldout_contexts(meta, tok, 4)
    np.testing.assert_array_equal(held_out, evaluate.heldout_contexts(store_meta, tok, 4))
    result = evaluate.evaluate(lms, meta["checkpoints"], cc, held_out, meta["layer"], meta["drop_bos"], 4, False)
    assert set(result["checkpoints"]) == set(meta["checkpoints"])
    from crosscoder_jax.report.build import resolve_paths
    assert resolve_paths(crosscoder=tmp_path / "live")["store"] is None  # the report knows there is none
    assert str(resolve_paths(crosscoder=tmp_path / "from_store")["store"]) == str(store)
