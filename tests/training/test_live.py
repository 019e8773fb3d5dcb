"""Live activations (issue 15, item 2): a run that computes the checkpoints' activations during
training equals a run on the store harvested with the same fields, and resumes from its position."""

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
    np.testing.assert_array_equal(live.read_chunks([3], slice(1, 2))[0], on_disk.read_chunks([3], slice(1, 2))[0])

    def cfg(activations, workdir, **kw):
        c = small_config(activations, tmp_path / workdir, steps=10, batch_size=48, dict_size=64, **kw)
        f = _fields(series)
        for key in c.live:
            c.live[key] = f[key]
        return c

    train_store = cfg(str(store), "from_store")
    from crosscoder_jax.training.train import train
    train(train_store)
    train(cfg("live", "live", stop_after=5, save_every=5))
    train(cfg("live", "live", save_every=5))
    a = load_file(str(tmp_path / "from_store" / "crosscoder.safetensors"))
    b = load_file(str(tmp_path / "live" / "crosscoder.safetensors"))
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
