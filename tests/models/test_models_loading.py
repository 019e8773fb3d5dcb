"""Loading checkpoints: offline hub cache with revisions, sharded safetensors, pytorch_model.bin,
tokenizers, our save_pretrained in transformers, and the error messages for bad input."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crosscoder_jax import models
from model_fixtures import VOCAB, make_model, rel_err, torch_logits, word_tokenizer

IDS = np.random.RandomState(0).randint(0, VOCAB, (2, 8))
forward = jax.jit(models.forward)


def ours(lm):
    return np.asarray(forward(lm, jnp.asarray(IDS)))


def fake_hub_cache(root, repo_id, revisions):
    """A Hugging Face hub cache layout: models--ORG--NAME/{refs/REV, snapshots/HASH/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for i, (rev, model) in enumerate(revisions.items()):
        commit = f"{i + 1:040x}"
        model.save_pretrained(str(repo / "snapshots" / commit))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / rev).write_text(commit)
    return repo


@pytest.fixture
def hub(tmp_path, monkeypatch):
    early, late = make_model("gpt_neox_parallel", seed=1), make_model("gpt_neox_parallel", seed=2)
    fake_hub_cache(tmp_path / "hub", "toy-org/pythia-toy", {"step512": early, "step16000-tokens33B": late})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return early, late


def test_hub_cache_revisions_load_offline_and_differ(hub):
    early, late = hub
    a = models.load("toy-org/pythia-toy", revision="step512")
    b = models.load("toy-org/pythia-toy", revision="step16000-tokens33B")
    assert rel_err(ours(a), torch_logits(early, IDS)) < 1e-4
    assert rel_err(ours(b), torch_logits(late, IDS)) < 1e-4
    assert not np.allclose(ours(a), ours(b))
    commit = models.resolve("toy-org/pythia-toy", "step512").name
    assert models.load("toy-org/pythia-toy", revision=commit).config == a.config  # a commit hash works too
    repo_dir = models.resolve("toy-org/pythia-toy", "step512").parents[1]  # the cache folder as a path
    assert rel_err(ours(models.load(repo_dir, revision="step512")), torch_logits(early, IDS)) < 1e-4


def test_missing_revision_and_repo_errors_say_how_to_fetch(hub):
    with pytest.raises(models.CheckpointError) as e:
        models.load("toy-org/pythia-toy", revision="step999")
    msg = str(e.value)
    assert "step999" in msg and "huggingface-cli download toy-org/pythia-toy --revision step999" in msg
    assert "step512" in msg  # lists what is cached
    with pytest.raises(models.CheckpointError, match="not in the local Hugging Face cache"):
        models.load("toy-org/absent", revision="main")


def test_sharded_safetensors(tmp_path):
    model = make_model("llama_gqa_linear")
    model.save_pretrained(str(tmp_path), max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert rel_err(ours(models.load(tmp_path)), torch_logits(model, IDS)) < 1e-4


def test_pytorch_model_bin(tmp_path):
    import torch
    model = make_model("bloom")
    model.config.save_pretrained(str(tmp_path))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    assert rel_err(ours(models.load(tmp_path)), torch_logits(model, IDS)) < 1e-4


def test_state_dict_without_base_prefix(tmp_path):
    """Hub GPT-2 and BLOOM files store the base model's names ("h.0..." without "transformer.")."""
    from safetensors.torch import save_file
    model = make_model("gpt2")
    model.config.save_pretrained(str(tmp_path))
    sd = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()
          if k != "lm_head.weight"}
    save_file(sd, str(tmp_path / "model.safetensors"))
    assert rel_err(ours(models.load(tmp_path)), torch_logits(model, IDS)) < 1e-4


def test_our_gpt_neox_checkpoint_loads_in_transformers_with_tokenizer(tmp_path):
    from transformers import GPTNeoXForCausalLM
    cfg = models.config_for("gpt_neox", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, vocab_size=VOCAB, rotary_pct=0.25, use_parallel_residual=False,
                            bos_token_id=2, eos_token_id=3)
    lm = models.init_params("gpt_neox", cfg, jax.random.PRNGKey(0))
    lm = lm.replace(params=jax.tree.map(lambda a: a * 5.0, lm.params))  # not the tiny-logit init
    tok = word_tokenizer(["the", "keys", "is", "are"])
    models.save_pretrained(lm, tmp_path, tokenizer=tok)
    theirs = GPTNeoXForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert rel_err(ours(lm), torch_logits(theirs, IDS)) < 1e-4
    assert models.load(tmp_path).config == cfg
    assert models.load_tokenizer(tmp_path)("the keys are").input_ids == [2, 3, 5]


def test_bfloat16_save_roundtrip(tmp_path):
    cfg = models.config_for("gpt_neox", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, vocab_size=VOCAB)
    lm = models.init_params("gpt_neox", cfg, jax.random.PRNGKey(1), dtype=jnp.bfloat16)
    models.save_pretrained(lm, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    back = models.load(tmp_path, dtype=jnp.bfloat16)
    for x, y in zip(jax.tree.leaves(lm.params), jax.tree.leaves(back.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_inputs_name_the_problem(tmp_path):
    model = make_model("gpt_neox_sequential")
    good = tmp_path / "good"
    model.save_pretrained(str(good))

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(good / "config.json", no_weights / "config.json")
    with pytest.raises(models.CheckpointError, match="no weights in .*model.safetensors.*pytorch_model.bin"):
        models.load(no_weights)

    unsupported = tmp_path / "unsupported"
    shutil.copytree(good, unsupported)
    cfg = json.loads((unsupported / "config.json").read_text())
    (unsupported / "config.json").write_text(json.dumps({**cfg, "model_type": "mamba"}))
    with pytest.raises(models.CheckpointError) as e:
        models.load(unsupported)
    assert "'mamba'" in str(e.value) and all(f in str(e.value) for f in models.FAMILIES)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(good, mismatched)
    (mismatched / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 80}))
    with pytest.raises(models.CheckpointError) as e:
        models.load(mismatched)
    msg = str(e.value)
    assert "gpt_neox.layers.0.mlp.dense_h_to_4h.weight" in msg and "(64, 32)" in msg and "(80, 32)" in msg

    deeper = tmp_path / "deeper"
    shutil.copytree(good, deeper)
    (deeper / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(models.CheckpointError, match="gpt_neox.layers.2.input_layernorm.weight.*missing"):
        models.load(deeper)

    with pytest.raises(models.CheckpointError, match="no config.json"):
        models.load(tmp_path)
    with pytest.raises(models.CheckpointError, match="checkpoint directory .*does-not-exist does not exist; check the path"):
        models.load(tmp_path / "does-not-exist")
    with pytest.raises(models.CheckpointError, match="neither a local directory nor a hub id"):
        models.load("no-slash-name")
