"""Every LM family against transformers' PyTorch forward on random tiny configs (float32):
logits, hidden states, run-to-layer / run-from-layer, left and right padding, bf16, gradients,
batch sharding, and save_pretrained -> transformers."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, subprocess_env
from crosscoder_jax import models
from model_fixtures import CONFIGS, VOCAB, make_model, rel_err, torch_logits

TOL = 1e-4
B, T = 3, 8
LENGTHS = (8, 5, 3)  # real tokens per row of the padded batches

forward = jax.jit(models.forward)
residual_at = jax.jit(models.residual_at, static_argnames="layer")
logits_from = jax.jit(models.logits_from, static_argnames="layer")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """name -> (transformers model, our LM loaded from its save_pretrained directory), built lazily."""
    cache = {}

    def get(name):
        if name not in cache:
            model = make_model(name)
            d = tmp_path_factory.mktemp(name)
            model.save_pretrained(str(d))
            cache[name] = (model, models.load(d))
        return cache[name]
    return get


def padded(rows, side, rng):
    """A [B, T] batch of `rows` padded on `side` with random (masked) tokens, and its mask."""
    ids = rng.randint(0, VOCAB, (len(rows), T))
    mask = np.zeros((len(rows), T), np.int32)
    for r, seq in enumerate(rows):
        sl = slice(T - len(seq), T) if side == "left" else slice(0, len(seq))
        ids[r, sl], mask[r, sl] = seq, 1
    return ids, mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_hidden_states_match_transformers(name, loaded):
    import torch
    model, lm = loaded(name)
    assert lm.family == model.config.model_type
    ids = np.random.RandomState(1).randint(0, VOCAB, (B, T))
    with torch.no_grad():
        ref = model(torch.as_tensor(ids), output_hidden_states=True)
    ours = np.asarray(forward(lm, jnp.asarray(ids)))
    assert ours.dtype == np.float32 and ours.shape == (B, T, VOCAB)
    assert rel_err(ours, ref.logits.numpy()) < TOL

    mask = jnp.ones((B, T), jnp.int32)
    for layer in range(lm.config.n_layers - 1):  # transformers' last hidden state is after the final norm
        resid = residual_at(lm, jnp.asarray(ids), mask, layer=layer)
        assert resid.shape == (B, T, lm.config.d_model)
        assert rel_err(resid, ref.hidden_states[layer + 1].numpy()) < TOL
    emb = residual_at(lm, jnp.asarray(ids), mask, layer=-1)
    assert rel_err(emb, ref.hidden_states[0].numpy()) < TOL

    layer = 0
    split = logits_from(lm, residual_at(lm, jnp.asarray(ids), mask, layer=layer), mask, layer=layer)
    np.testing.assert_allclose(np.asarray(split), ours, rtol=0, atol=1e-5 * np.abs(ours).max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_left_and_right_padding(name, loaded):
    model, lm = loaded(name)
    rng = np.random.RandomState(2)
    rows = [rng.randint(0, VOCAB, n) for n in LENGTHS]
    refs = [torch_logits(model, seq[None])[0] for seq in rows]
    for side in ("left", "right"):
        ids, mask = padded(rows, side, rng)
        ours = np.asarray(forward(lm, jnp.asarray(ids), jnp.asarray(mask)))
        assert np.isfinite(ours).all()
        for r, ref in enumerate(refs):
            real = ours[r][mask[r] == 1]
            assert rel_err(real, ref) < TOL, (side, r)
            assert rel_err(real[-1], ref[-1]) < TOL, (side, r, "last token")


@pytest.mark.parametrize("name", ["gpt_neox_parallel", "llama_gqa_linear", "bloom", "gpt2", "olmo_clip",
                                  "olmo2"])
def test_save_pretrained_loads_in_transformers(name, loaded, tmp_path):
    from transformers import AutoModelForCausalLM
    _, lm = loaded(name)
    models.save_pretrained(lm, tmp_path)
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ids = np.random.RandomState(3).randint(0, VOCAB, (B, T))
    assert rel_err(forward(lm, jnp.asarray(ids)), torch_logits(theirs, ids)) < TOL
    again = models.load(tmp_path)
    assert again.config == lm.config


def test_every_layer_split_and_fully_padded_rows(loaded):
    _, lm = loaded("gpt_neox_sequential")
    ids = jnp.asarray(np.random.RandomState(4).randint(0, VOCAB, (B, T)))
    mask = jnp.asarray(np.array([[1] * T, [0] * 3 + [1] * 5, [0] * T], np.int32))
    full = np.asarray(forward(lm, ids, mask))
    assert np.isfinite(full).all()  # the all-padding row gives finite logits, not NaN
    for layer in range(-1, lm.config.n_layers):
        resid = residual_at(lm, ids, mask, layer=layer)
        np.testing.assert_allclose(np.asarray(logits_from(lm, resid, mask, layer=layer)), full,
                                   rtol=0, atol=1e-5 * np.abs(full).max())
    with pytest.raises(ValueError, match="out of range"):
        models.residual_at(lm, ids, mask, layer=lm.config.n_layers)


def test_logits_from_is_differentiable(loaded):
    _, lm = loaded("llama_gqa_linear")
    ids = jnp.asarray(np.random.RandomState(5).randint(0, VOCAB, (2, T)))
    mask = jnp.ones((2, T), jnp.int32)
    resid = residual_at(lm, ids, mask, layer=0)

    def metric(r):
        lg = models.logits_from(lm, r, mask, layer=0)
        return (lg[:, -1, 3] - lg[:, -1, 7]).sum()

    g = jax.jit(jax.grad(metric))(resid)
    assert g.shape == resid.shape and np.isfinite(np.asarray(g)).all()
    assert np.abs(np.asarray(g[:, -1])).sum() > 0
    d = jax.random.normal(jax.random.PRNGKey(0), resid.shape) * 1e-2
    fd = (metric(resid + d) - metric(resid - d)) / 2
    np.testing.assert_allclose(float(fd), float((g * d).sum()), rtol=1e-2)


@pytest.mark.parametrize("name", ["gpt_neox_parallel", "llama3_tied_headdim"])
def test_bfloat16_params(name, tmp_path):
    model = make_model(name)
    model.save_pretrained(str(tmp_path))
    lm = models.load(tmp_path, dtype=jnp.bfloat16)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(lm.params))
    ids = np.random.RandomState(6).randint(0, VOCAB, (B, T))
    ours = np.asarray(forward(lm, jnp.asarray(ids)))
    assert ours.dtype == np.float32
    assert rel_err(ours, torch_logits(model, ids)) < 5e-2


def test_forward_sharded_over_batch_equals_unsharded():
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from crosscoder_jax import models
        cfg = models.config_for("gpt_neox", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, vocab_size=50)
        lm = models.init_params("gpt_neox", cfg, jax.random.PRNGKey(0))
        ids = jnp.asarray(np.random.RandomState(0).randint(0, 50, (4, 8)))
        mask = jnp.ones((4, 8), jnp.int32).at[1, :3].set(0)
        ref = models.forward(lm, ids, mask)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        batch = NamedSharding(mesh, P("data"))
        out = jax.jit(models.forward)(lm, jax.device_put(ids, batch), jax.device_put(mask, batch))
        resid = jax.jit(models.residual_at, static_argnames="layer")(lm, jax.device_put(ids, batch),
                                                                      jax.device_put(mask, batch), layer=0)
        assert len(jax.devices()) == 2 and len(out.sharding.device_set) == 2, out.sharding
        print(float(jnp.abs(out - ref).max()), float(jnp.abs(ref).max()), resid.shape)
    """)
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    err, scale, _ = res.stdout.split(maxsplit=2)
    assert float(err) <= 1e-5 * float(scale)
