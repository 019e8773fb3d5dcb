"""Tiny pretraining runs: checkpoint series layout, HF loadability, and real resume."""

import json

import jax
import numpy as np
import pytest

from crosscoder_jax.synthetic import vocab
from crosscoder_jax import models
from crosscoder_jax.training import pretrain
from crosscoder_jax.runtime.runlog import MetricsLog


def _config(workdir, **overrides):
    from configs.pretrain import get_config

    c = get_config()
    c.workdir = str(workdir)
    c.steps, c.batch_size, c.seq_len = 6, 4, 12
    c.n_checkpoints, c.save_every, c.log_every = 4, 2, 1
    c.n_pairs, c.warmup_steps, c.lr = 8, 2, 1e-2
    c.model.hidden_size, c.model.num_hidden_layers, c.model.num_attention_heads = 16, 1, 2
    c.model.intermediate_size, c.model.max_position_embeddings = 32, 16
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def _safetensors(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_checkpoint_steps_are_log_spaced():
    s = pretrain.checkpoint_steps(1000, 12)
    assert s[0] == 0 and s[-1] == 1000 and s == sorted(set(s)) and len(s) <= 12
    gaps = np.diff(s[1:])
    assert (gaps[1:] >= gaps[:-1]).all()  # gaps grow


def test_novel_nouns_are_withheld_until_their_step():
    c = _config("/unused", steps=40, n_checkpoints=6, novel_from_step=20, novel_checkpoints="0,2,5")
    c.grammar.p_novel = 0.5
    novel_ids = [vocab.WORD_TO_ID[w] for w in vocab.NOVEL_WORDS]
    from crosscoder_jax.synthetic import grammar
    seen = [np.isin(grammar.batch(c.seed, s, 16, 24, pretrain.grammar_at(c, s)), novel_ids).any() for s in range(40)]
    assert not any(seen[:20]) and all(seen[20:])
    assert {20, 22, 25} <= set(pretrain.save_steps_of(c))
    c.grammar.p_novel = 0.0  # the construction off: no extra checkpoints, no novel nouns ever
    assert pretrain.save_steps_of(c) == pretrain.checkpoint_steps(40, 6)
    assert not any(np.isin(grammar.batch(c.seed, s, 16, 24, pretrain.grammar_at(c, s)), novel_ids).any()
                   for s in range(20, 40))
    # a log-spaced step next to an extra one gives way to it
    assert 1002 in pretrain.checkpoint_steps(2000, 24) and 1002 not in pretrain.checkpoint_steps(2000, 24, [1000])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run and one halted mid-way then resumed by the same call."""
    a = tmp_path_factory.mktemp("straight")
    pretrain.run(_config(a))
    b = tmp_path_factory.mktemp("resumed")
    pretrain.run(_config(b, halt_after=3))  # orbax saved at step 2, "killed" after step 3
    halted = MetricsLog(b / "metrics.jsonl").read()
    pretrain.run(_config(b))
    return a, b, halted


def test_resume_continues_from_orbax_step(runs):
    a, b, halted = runs
    assert [r["step"] for r in halted if "loss" in r] == [1, 2, 3]
    assert halted[-1]["event"] == "halt"
    log = MetricsLog(b / "metrics.jsonl").read()
    # the halted run's step 3 (after its last save at 2) is dropped and redone once, not from 1 again
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["event"] == "end" and log[-1]["resumed_from"] == 2
    # same data and state as the uninterrupted run -> same final weights
    wa, wb = _safetensors(a / "checkpoints/step6"), _safetensors(b / "checkpoints/step6")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    w0 = _safetensors(a / "checkpoints/step0")
    assert any(not np.allclose(w0[k], wa[k]) for k in wa)  # it did train


def test_series_and_task_curves(runs):
    a, _, _ = runs
    series = json.loads((a / "checkpoints/series.json").read_text())
    steps = [c["step"] for c in series["checkpoints"]]
    assert steps == pretrain.checkpoint_steps(6, 4) and steps[0] == 0 and steps[-1] == 6
    for c in series["checkpoints"]:
        d = a / "checkpoints" / c["path"]
        assert c["name"] == f"step{c['step']}"
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert (d / f).exists(), d / f
    curves = json.loads((a / "task_curves.json").read_text())
    assert [r["step"] for r in curves["checkpoints"]] == steps
    tasks = set(curves["tasks"])
    assert "across_pp_attractor" in tasks and len(tasks) >= 6
    for r in curves["checkpoints"]:
        assert set(r["tasks"]) == tasks
        for v in r["tasks"].values():
            assert 0.0 <= v["accuracy"] <= 1.0 and np.isfinite(v["logit_diff"])
    losses = [r["loss"] for r in MetricsLog(a / "metrics.jsonl").read() if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    for name in curves["tasks"]:
        assert (a / "tasks" / f"{name}.jsonl").exists()


def test_checkpoint_loads_in_models_and_transformers(runs):
    import torch
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    a, _, _ = runs
    d = a / "checkpoints/step6"
    lm = models.load(str(d))
    tok = AutoTokenizer.from_pretrained(str(d))
    ids = np.asarray([tok("the key to the cabinets is old . these men laugh").input_ids])
    assert ids[0, 0] == vocab.BOS_ID and (ids != vocab.UNK_ID).all()
    ours = np.asarray(models.forward(lm, jax.numpy.asarray(ids)))
    hf = GPTNeoXForCausalLM.from_pretrained(str(d)).eval()
    with torch.no_grad():
        theirs = hf(torch.as_tensor(ids)).logits.float().numpy()
    assert ours.shape == theirs.shape == (1, ids.shape[1], len(vocab.VOCAB))
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
    # the saved weights are the trained ones, not a fresh init
    fresh = models.init_params("gpt_neox", lm.config, jax.random.PRNGKey(0))
    assert not np.allclose(np.asarray(models.forward(fresh, jax.numpy.asarray(ids))), ours)
