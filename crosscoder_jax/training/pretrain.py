"""Tiny GPT-NeoX pretraining on the synthetic agreement language: the embedded checkpoint series.

`run(config)` (config: `configs/pretrain.py`) trains from scratch or resumes, and writes

    <workdir>/
      checkpoints/step<N>/        Hugging Face dirs (config.json, model.safetensors, tokenizer files)
                                  at log-spaced steps, loadable by `models.load` and transformers
      checkpoints/series.json     {"checkpoints": [{"name", "step", "tokens", "path"}...]} in order
      tokenizer/                  the word-level tokenizer alone
      tasks/<task>.jsonl          minimal pairs (feature-circuits format + annotations), tasks.json
      task_curves.json            per checkpoint: accuracy and mean logit diff (clean - patch) per task
      metrics.jsonl               training loss, lr, tokens/s; one record per checkpoint evaluation
      orbax/                      resume state (params, optimizer, step); the same command continues

The data of step s is `grammar.batch(seed, s, ...)`, a pure function, so a resumed run sees the
same batches as an uninterrupted one. With `grammar.p_novel > 0` the novel nouns
(`vocab.NOVEL_NOUNS`) are withheld until `novel_from_step`: the batches of the steps before it are
the language without them (their tokens never occur), those from it on draw them for a share
`p_novel` of the animate nouns; extra checkpoints follow that step (`novel_checkpoints`), and the
task `novel_noun_agreement` is written and evaluated. The checkpoint named step<X> is the last that
never saw a novel noun.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from crosscoder_jax import models
from crosscoder_jax.data import tasks
from crosscoder_jax.runtime.runlog import MetricsLog, progress
from crosscoder_jax.synthetic import grammar, pairs, vocab


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def checkpoint_steps(total: int, n: int, extra: Sequence[int] = ()) -> list[int]:
    """`step0` plus about `n - 1` log-spaced steps up to and including `total`, plus the `extra`
    steps that lie in [0, total]; a log-spaced step within 5% of an extra one gives way to it (two
    snapshots a few steps apart would hold nearly the same model)."""
    more = {int(s) for s in extra if 0 <= int(s) <= total}
    if n <= 1 or total <= 0:
        return sorted({0, total} | more)
    steps = {int(s) for s in np.unique(np.round(np.geomspace(1, total, n - 1)).astype(int))}
    steps = {s for s in steps if s == total or not any(abs(s - e) <= 0.05 * e for e in more)}
    return sorted({0, total} | steps | more)


def _offsets(spec: str) -> list[int]:
    return [int(x) for x in str(spec).split(",") if x.strip()]


def novel_from(config) -> int | None:
    """The step from which the batches draw novel nouns; None when the language never has them."""
    return int(config.novel_from_step) if float(config.grammar.get("p_novel", 0.0)) > 0 else None


def grammar_at(config, step: int) -> grammar.GrammarConfig:
    """The language of the batch of `step`: without novel nouns before `novel_from_step`."""
    fields = dict(config.grammar)
    x = novel_from(config)
    if x is None or step < x:
        fields["p_novel"] = 0.0
    return grammar.GrammarConfig(**fields)


def save_steps_of(config) -> list[int]:
    """Steps whose checkpoints are saved: log-spaced, plus `novel_checkpoints` offsets after the
    novel nouns' introduction (the offset 0 is the last checkpoint without them)."""
    x = novel_from(config)
    extra = [x + o for o in _offsets(config.novel_checkpoints)] if x is not None else []
    return checkpoint_steps(config.steps, config.n_checkpoints, extra)


def make_optimizer(config) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr, warmup_steps=max(config.warmup_steps, 1),
        decay_steps=max(config.steps, config.warmup_steps + 1),
        end_value=config.lr * config.min_lr_ratio)
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(schedule, b1=0.9, b2=config.b2, weight_decay=config.weight_decay)), schedule


def lm_loss(lm: models.LM, params, ids_BT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (all windows are full: no padding)."""
    logits_BTV = models.forward(lm.replace(params=params), ids_BT[:, :-1])
    logp = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, ids_BT[:, 1:, None], axis=-1).mean()


def make_train_step(lm_static: models.LM, optimizer: optax.GradientTransformation):
    def step(state: TrainState, ids_BT: jax.Array):
        loss, grads = jax.value_and_grad(lambda p: lm_loss(lm_static, p, ids_BT))(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, opt_state), metrics
    return jax.jit(step, donate_argnums=0)


# ---------------------------------------------------------------------------------------------
# Minimal-pair evaluation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PairBatch:
    """All pairs of all tasks as one right-padded batch of prompts, with each pair's task index."""
    names: list[str]
    task_N: np.ndarray
    prompts: tasks.Prompts


def pair_batch(task_pairs: dict[str, list[dict]]) -> PairBatch:
    """Prompts of every task's pairs (built by `tasks.build_prompts`), concatenated."""
    tok = vocab.hf_tokenizer()
    names = list(task_pairs)
    built = [tasks.build_prompts(task_pairs[n], tok, pad_id=vocab.PAD_ID, name=n)[0] for n in names]
    T = max(p.ids_NT.shape[1] for p in built)
    pad = lambda a, v: np.pad(a, ((0, 0), (0, T - a.shape[1])), constant_values=v)  # noqa: E731
    prompts = tasks.Prompts(np.concatenate([pad(p.ids_NT, vocab.PAD_ID) for p in built]),
                            np.concatenate([pad(p.mask_NT, 0) for p in built]),
                            *(np.concatenate([getattr(p, f) for p in built]) for f in ("last_N", "clean_N", "patch_N")))
    task_N = np.concatenate([np.full(p.n, t) for t, p in enumerate(built)])
    return PairBatch(names, task_N, prompts)


def make_pair_eval(lm_static: models.LM, pb: PairBatch):
    prompts = tasks.Prompts(*map(jnp.asarray, pb.prompts))

    @jax.jit
    def diff(params):
        logits = models.forward(lm_static.replace(params=params), prompts.ids_NT, prompts.mask_NT)
        return -tasks.logit_diff(logits, prompts)  # logit[clean] - logit[patch]

    def evaluate(params) -> dict[str, dict[str, float]]:
        d = np.asarray(diff(params))
        out = {}
        for t, name in enumerate(pb.names):
            sel = d[pb.task_N == t]
            out[name] = {"accuracy": float((sel > 0).mean()), "logit_diff": float(sel.mean())}
        return out
    return evaluate


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def model_config(config):
    fields = dict(config.model)
    fields.setdefault("vocab_size", len(vocab.VOCAB))
    fields.setdefault("bos_token_id", vocab.BOS_ID)
    fields.setdefault("eos_token_id", vocab.EOS_ID)
    return models.config_for("gpt_neox", **fields)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _curves_table(records: list[dict], names: list[str]) -> dict:
    return {name: {"steps": [r["step"] for r in records],
                   "accuracy": [r["tasks"][name]["accuracy"] for r in records],
                   "logit_diff": [r["tasks"][name]["logit_diff"] for r in records]}
            for name in names}


def run(config) -> Path:
    """Pretrains (or resumes) per `config`; returns the checkpoints directory."""
    workdir = Path(config.workdir)
    ckpt_dir = workdir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    vocab.save_tokenizer(workdir / "tokenizer")
    names = pairs.BASE_TASKS + ([pairs.NOVEL_TASK] if novel_from(config) is not None else [])
    task_files = pairs.write_tasks(workdir / "tasks", n=config.n_pairs, seed=config.task_seed, tasks=names)
    task_pairs = {name: pairs.read_pairs(p) for name, p in task_files.items()}
    gcfg = grammar_at(config, config.steps)  # the final language: validation loss
    log = MetricsLog(workdir / "metrics.jsonl")

    mcfg = model_config(config)
    lm = models.init_params("gpt_neox", mcfg, jax.random.PRNGKey(config.seed))
    optimizer, schedule = make_optimizer(config)
    state = TrainState(jnp.zeros((), jnp.int32), lm.params, optimizer.init(lm.params))

    manager = ocp.CheckpointManager(
        (workdir / "orbax").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    if manager.latest_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    start = int(state.step)
    log.drop_after(start)

    train_step = make_train_step(lm, optimizer)
    evaluate = make_pair_eval(lm, pair_batch(task_pairs))
    val_ids = jnp.asarray(grammar.batch(config.seed + 10_000, 0, 64, config.seq_len, gcfg))
    val_loss = jax.jit(lambda p: lm_loss(lm, p, val_ids))
    tokens_per_step = config.batch_size * config.seq_len
    save_steps = save_steps_of(config)

    curves_path = workdir / "task_curves.json"
    records = json.loads(curves_path.read_text())["checkpoints"] if curves_path.exists() else []
    records = [r for r in records if r["step"] <= start]  # redone after a resume otherwise

    def save_checkpoint(step: int, params) -> None:
        name = f"step{step}"
        models.save_pretrained(lm.replace(params=params), ckpt_dir / name)
        vocab.save_tokenizer(ckpt_dir / name)
        tasks = evaluate(params)
        rec = {"name": name, "step": step, "tokens": step * tokens_per_step,
               "val_loss": float(val_loss(params)), "tasks": tasks}
        records[:] = [r for r in records if r["step"] != step] + [rec]
        records.sort(key=lambda r: r["step"])
        names = list(task_pairs)
        x = novel_from(config)
        _write_json(curves_path, {
            "chance": 0.5, "tasks": names, "attractor_task": pairs.ATTRACTOR_TASK,
            **({"novel": {"task": pairs.NOVEL_TASK, "from_step": x, "p_novel": float(config.grammar.p_novel),
                          "words": sorted(vocab.NOVEL_WORDS)}} if x is not None else {}),
            "metric": "accuracy = mean(logit[clean] > logit[patch]); logit_diff = mean(logit["
                      "clean] - logit[patch]) at the last prefix position",
            "checkpoints": records, "curves": _curves_table(records, names)})
        done = sorted(int(p.name[4:]) for p in ckpt_dir.glob("step*")
                      if p.name[4:].isdigit() and int(p.name[4:]) in save_steps
                      and (p / "config.json").exists())
        _write_json(ckpt_dir / "series.json", {
            "family": "gpt_neox", "source": "crosscoder_jax.pretrain", "tokens_per_step":
            tokens_per_step, "checkpoints": [{"name": f"step{s}", "step": s, "tokens":
                                              s * tokens_per_step, "path": f"step{s}"}
                                             for s in done]})
        log.write({"event": "checkpoint", "step": step, "val_loss": rec["val_loss"],
                   **{f"acc/{k}": v["accuracy"] for k, v in tasks.items()}})

    if start in save_steps and not any(r["step"] == start for r in records):
        save_checkpoint(start, state.params)
    languages = (grammar_at(config, 0), gcfg)  # without the novel nouns, and from novel_from_step on
    x_novel = novel_from(config)
    bar = progress(config.steps, initial=start, desc="pretrain", unit="step")
    t0, step, halted = time.time(), start, False
    last_log_t, last_log_step = t0, start
    while step < config.steps:
        lang = languages[x_novel is not None and step >= x_novel]
        ids = grammar.batch(config.seed, step, config.batch_size, config.seq_len, lang)
        state, metrics = train_step(state, ids)
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            m = jax.device_get(metrics)
            now = time.time()
            tps = (step - last_log_step) * tokens_per_step / max(now - last_log_t, 1e-9)
            last_log_t, last_log_step = now, step
            log.write({"step": step, "loss": m["loss"], "grad_norm": m["grad_norm"],
                       "lr": float(schedule(step - 1)), "tokens_per_s": tps,
                       "tokens": step * tokens_per_step})
            bar.set_postfix(loss=f"{float(m['loss']):.3f}")
        if step in save_steps:
            save_checkpoint(step, state.params)
        if step % config.save_every == 0 or step == config.steps:
            manager.save(step, args=ocp.args.StandardSave(state))
        if config.halt_after and step - start >= config.halt_after and step < config.steps:
            halted = True
            break
    manager.wait_until_finished()
    manager.close()
    bar.close()
    log.write({"event": "end" if not halted else "halt", "step": step,
               "wall_s": time.time() - t0, "resumed_from": start})
    return ckpt_dir
