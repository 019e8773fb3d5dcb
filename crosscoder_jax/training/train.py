"""Training: the train state, one jitted sharded step, the optimizer schedule, and the resumable loop.

`train(config)` reads an activation store, trains a crosscoder on a (data, snapshot, latent) mesh, logs to
`<workdir>/metrics.jsonl`, checkpoints everything needed to continue exactly (params, optimizer
state, step, reader position, batchtopk threshold, dead-latent counters, scales, shift) with orbax,
and writes `<workdir>/crosscoder.safetensors` at the end (the shift absorbed into the biases).
Rerunning the same command resumes.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from crosscoder_jax import crosscoder
from crosscoder_jax.crosscoder import Spec, activations, save_crosscoder, sparse_step
from crosscoder_jax.crosscoder.activations.base import k_at
from crosscoder_jax.crosscoder.spec import default_lr
from crosscoder_jax.data.live import LiveStore
from crosscoder_jax.data.reader import NonFiniteActivations, StoreReader
from crosscoder_jax.data.store import Store, StoreDamaged
from crosscoder_jax.runtime import host_memory, matmul_choice
from crosscoder_jax.runtime.runlog import MetricsLog, jsonable, progress
from crosscoder_jax.training import init_data, runconfig, sharding
from crosscoder_jax.training.workdir import (Incompatible, WorkdirLock, disk_full, restore_latest, shape_changes,
                                             space_message)


class TrainingError(RuntimeError):
    """Training stopped on bad numbers; the message names the step and the checkpoint kept."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array            # int32 []
    params: dict               # crosscoder params, normalised space
    opt_state: Any
    act_state: dict            # e.g. the batchtopk threshold
    since_fired: jax.Array     # int32 [F], tokens since each latent last fired (saturates at dead_tokens)
    scales: jax.Array          # float32 [C], input scale per checkpoint
    shift: jax.Array           # float32 [C, D], subtracted from the scaled inputs (`init_data.shift_and_b_dec`)
    data_position: jax.Array   # int32 [], batches consumed from the store stream


def lr_schedule(lr: float, steps: int, warmup_steps: int = 0, decay_frac: float = 0.2) -> Callable:
    """The paper's schedule: optional linear warm-up, constant, linear decay to 0 over the last
    `decay_frac` of the steps."""

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        factor = jnp.float32(1.0)
        if warmup_steps > 0:
            factor = factor * jnp.minimum(1.0, (t + 1.0) / warmup_steps)
        if decay_frac > 0:
            factor = factor * jnp.clip((steps - t) / (steps * decay_frac), 0.0, 1.0)
        return lr * factor

    return schedule


def make_optimizer(config) -> tuple[optax.GradientTransformation, Callable]:
    """Adam with grad-norm clipping and `lr_schedule` (lr 0: `default_lr`)."""
    schedule = lr_schedule(config.lr or default_lr(config.dict_size), config.steps, config.warmup_steps,
                           config.decay_frac)
    parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
    parts.append(optax.adam(schedule, b1=config.b1, b2=config.b2))
    return optax.chain(*parts), schedule


def init_state(key: jax.Array, spec: Spec, tx: optax.GradientTransformation, scales_C: jax.Array,
               b_dec_CD: np.ndarray | None = None, shift_CD: np.ndarray | None = None) -> TrainState:
    """The state at step 0: `crosscoder.init_params`, with b_dec [C, D] (normalised space, after the
    shift) and the input shift [C, D] (zeros where not given) from the data
    (`init_data.shift_and_b_dec`)."""
    params = crosscoder.init_params(spec, key)
    C, D = spec.n_checkpoints, spec.d_model
    shift = jnp.zeros((C, D), jnp.float32) if shift_CD is None else jnp.asarray(np.asarray(shift_CD, np.float32))
    if b_dec_CD is not None:
        params = {**params, "b_dec": jnp.asarray(np.asarray(b_dec_CD, np.float32))}
    return TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                      act_state=activations.get(spec.activation).init_state(spec),
                      since_fired=jnp.zeros((spec.dict_size,), jnp.int32),
                      scales=jnp.asarray(scales_C, jnp.float32), shift=shift, data_position=jnp.int32(0))


def _same(tree):
    return tree


def normalised(x_BCD: jax.Array, scales_C: jax.Array, shift_CD: jax.Array) -> jax.Array:
    """The crosscoder's input from raw activations x [B, C, D]: `x * s_c - shift_c`, float32."""
    return x_BCD.astype(jnp.float32) * scales_C[None, :, None] - shift_CD[None]


def train_step(state: TrainState, x_BCD: jax.Array, *, spec: Spec, tx: optax.GradientTransformation,
               schedule: Callable, to_compute: Callable = _same, to_stored: Callable = _same,
               value_and_grad: Callable | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a raw batch x [B, C, D]; returns the new state and metrics.

    `to_compute` places the stored params for the loss and `to_stored` places the gradients like the
    stored params (the sharding's all-gather and reduce-scatter under ZeRO; identities otherwise).
    `value_and_grad` computes ((loss, aux), grads) like `jax.value_and_grad(crosscoder.loss_fn)`, the
    default (`build` passes the sparse top-k step where it applies)."""
    act = activations.get(spec.activation)
    x_BCD = normalised(x_BCD, state.scales, state.shift)
    dead_F = state.since_fired >= spec.dead_tokens
    grad_fn = value_and_grad or jax.value_and_grad(crosscoder.loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(to_compute(state.params), state.act_state, x_BCD, spec, state.step, dead_F)
    grads = to_stored(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    since = jnp.where(aux["fired_F"], 0, jnp.minimum(state.since_fired + x_BCD.shape[0], spec.dead_tokens))
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           act_state=act.update_state(state.act_state, aux["act_update"], spec, state.step),
                           since_fired=since, scales=state.scales, shift=state.shift,
                           data_position=state.data_position + 1)
    grad_norm = optax.tree.norm(grads)
    metrics = {"loss": loss, **{f"loss_{k}": v for k, v in aux["terms"].items()},
               "fvu": aux["fvu"],
               "l0": aux["l0"], "dead_frac": jnp.mean(dead_F),
               "lr": schedule(state.step), "grad_norm": grad_norm, "k": k_at(spec, state.step),
               "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm), **state.act_state}
    return new_state, metrics


def build(config, n_checkpoints: int, d_model: int, scales_C, mesh):
    """Spec, optimizer, abstract state, shardings and the jitted init and step for a config."""
    spec = runconfig.spec_from_config(config, n_checkpoints, d_model)
    sharding.check_divisible(mesh, config.batch_size, spec.dict_size, n_checkpoints)
    tx, schedule = make_optimizer(config)
    init = functools.partial(init_state, spec=spec, tx=tx, scales_C=jnp.asarray(scales_C, jnp.float32))
    key = jax.random.key(config.seed)
    abstract = jax.eval_shape(init, key)
    shardings = sharding.state_shardings(abstract, mesh, zero=config.mesh.zero)

    def init_fn(key: jax.Array, b_dec_CD: np.ndarray | None = None, shift_CD: np.ndarray | None = None) -> TrainState:
        # b_dec and shift enter as constants of the program (host arrays, the same on every process)
        return jax.jit(functools.partial(init, b_dec_CD=b_dec_CD, shift_CD=shift_CD), out_shardings=shardings)(key)
    to_stored = functools.partial(jax.lax.with_sharding_constraint, shardings=shardings.params)
    vg = sharding.sparse_value_and_grad(mesh, zero=config.mesh.zero) if sparse_step.applies(spec) else None
    step_fn = jax.jit(functools.partial(train_step, spec=spec, tx=tx, schedule=schedule,
                                        to_compute=sharding.gather_params(mesh, sharding.STREAMED if vg else ()),
                                        to_stored=to_stored,
                                        value_and_grad=vg),
                      in_shardings=(shardings, sharding.batch_sharding(mesh)),
                      # metrics replicated: per-snapshot ones would otherwise stay split over processes
                      out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,))
    return spec, key, abstract, shardings, init_fn, step_fn


def _reader(store: Store, config, block: tuple[slice, slice], position: int) -> StoreReader:
    """The reader of this process's block of every batch: its rows come from the reader shards
    that cover them (the stream is a function of the shard count alone, so any process layout sees
    the same global batches) and only its checkpoints' columns are read."""
    rows, cols = block
    num_shards = config.reader.shards
    sub = config.batch_size // num_shards
    if config.batch_size % num_shards or rows.start % sub or rows.stop % sub:
        raise ValueError(f"reader.shards={num_shards} does not cut the batch ({config.batch_size}) at this "
                         f"process's rows {rows.start}:{rows.stop}; use a multiple of the process row blocks")
    return StoreReader(store, config.batch_size, seed=config.seed, num_shards=num_shards,
                       shards=range(rows.start // sub, rows.stop // sub), window_chunks=config.reader.window_chunks,
                       prefetch=config.reader.prefetch, position=position, columns=cols)


def _host(tree):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _all_columns(values_C: np.ndarray, columns: slice) -> np.ndarray:
    """Every process's per-checkpoint estimates [C, ...] joined: each filled only its own checkpoints
    (`columns`; the others 0), and processes sharing a checkpoint computed the same value, so the
    mean over its owners is that value. Exchanged as bits, since float64 would pass through float32
    arrays."""
    if jax.process_count() == 1:
        return values_C
    values_C = np.ascontiguousarray(values_C, np.float64)
    owned_C = np.zeros(values_C.shape[0], np.int32)
    owned_C[columns] = 1
    bits = _host(values_C.view(np.uint32)[None])
    owners = np.asarray(_host(owned_C[None]))
    values = np.asarray(bits).view(np.float64).reshape((-1,) + values_C.shape)
    shape = (owners.shape[0], -1) + (1,) * (values_C.ndim - 1)
    return (values * owners.reshape(shape)).sum(axis=0) / np.maximum(owners.sum(axis=0), 1).reshape(shape[1:])


def estimate_threshold(state: TrainState, spec: Spec, batches) -> float:
    """The batchtopk inference threshold for a run that ended before `threshold_start_step`: the mean
    over `batches` (global [B, C, D] arrays) of the smallest score the batch top-k keeps, the
    quantity the training EMA follows."""
    act = activations.get(spec.activation)

    @jax.jit
    def min_kept(params, scales, shift, x_BCD):
        pre_BF = crosscoder.encoder_pre(params, normalised(x_BCD, scales, shift), spec)
        _, upd = act.train(pre_BF, params, {}, spec, crosscoder.score_norms(params), jnp.int32(2**30))
        return upd["min_kept"]

    return float(np.mean([float(min_kept(state.params, state.scales, state.shift, x)) for x in batches]))


def _state_bytes(abstract) -> int:
    return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(abstract)))


def train(config) -> dict[str, Any]:
    """Trains (or resumes) the run in `config.workdir`; returns the final metrics. Everything is
    checked before the workdir is touched; one process writes a workdir at a time."""
    workdir = Path(config.workdir)
    store = LiveStore(config.live) if config.activations == "live" else Store(config.activations)
    config = runconfig.resolve(config)
    if config.batch_size > store.n_tokens:
        raise ValueError(f"batch_size {config.batch_size} is larger than the store ({store.n_tokens} rows in "
                         f"{config.activations}): every batch would repeat rows. Lower --config.batch_size or "
                         "harvest more tokens.")
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.snapshot, config.mesh.latent)
    sharding.check_divisible(mesh, config.batch_size, config.dict_size, store.n_checkpoints)
    batch_shape = (config.batch_size, store.n_checkpoints, store.d_model)
    block = sharding.local_block(mesh, batch_shape)
    if not config.reader.shards:  # recorded, since the data stream depends on it
        config.reader.shards = config.batch_size // (block[0].stop - block[0].start)
    write_config = runconfig.check(workdir, config)
    scales = _all_columns(runconfig.scales_for(store, config, block[1]), block[1])
    spec, key, abstract, shardings, init_fn, step_fn = build(
        config, store.n_checkpoints, store.d_model, scales, mesh)
    with WorkdirLock(workdir, take=jax.process_index() == 0):
        return _run(config, workdir, store, mesh, batch_shape, block, write_config, spec, key, abstract,
                    shardings, init_fn, step_fn, scales)


def _run(config, workdir, store, mesh, batch_shape, block, write_config, spec, key, abstract, shardings,
         init_fn, step_fn, scales) -> dict[str, Any]:
    mngr = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(), item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.max_to_keep, create=True,
                                             cleanup_tmp_directories=True))
    log = MetricsLog(workdir / "metrics.jsonl")
    say = functools.partial(_say, log)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    def restore(step):
        meta = mngr.item_metadata(step)  # raises on a checkpoint without readable metadata
        tree = getattr(meta, "tree", meta)
        # checkpoints written before the input shift existed: those runs had none
        unshifted = isinstance(tree, dict) and "shift" not in tree
        want = target.replace(shift=None) if unshifted else target
        changes = shape_changes(tree, want) if meta is not None else []
        if changes:
            saved = workdir / "config.json"
            fields = runconfig.diff(json.loads(saved.read_text()), config.to_dict()) if saved.exists() else {}
            raise Incompatible(f"cannot resume {workdir} with this config: its checkpoint step {step} holds "
                               f"{'; '.join(changes)} (changed fields: {', '.join(fields) or 'unknown'}), which "
                               "resume_anyway cannot change. Use another --config.workdir.")
        state = mngr.restore(step, args=ocp.args.StandardRestore(want))
        if unshifted:
            state = state.replace(shift=jax.device_put(np.zeros(target.shift.shape, np.float32), shardings.shift))
        return state

    try:
        latest, state = restore_latest(mngr, restore, workdir, say)
    except BaseException:
        mngr.close()
        raise
    if state is None:
        shift_CD, b_dec_CD = (None if a is None else _all_columns(a, block[1])
                              for a in init_data.shift_and_b_dec(store, config, scales, block[1]))
        state = init_fn(key, b_dec_CD, shift_CD)
    if write_config:  # only now: a config that fails its checks or its restore leaves the workdir as it was
        runconfig.save(workdir, config)
    start = int(state.step)
    if jax.process_index() == 0:
        log.drop_after(start if start else -1)  # a fresh start: lines of an earlier try (no checkpoint) go
        log.write({"event": "start" if start == 0 else "resume", "step": start, "processes": jax.process_count(),
                   "devices": jax.device_count(), "mesh": dict(mesh.shape), "matmul_dtype": spec.matmul_dtype,
                   "matmul_dtype_why": matmul_choice.choose(config.matmul_dtype)[1],
                   "step_path": "sparse top-k" if sparse_step.applies(spec) else "dense autodiff",
                   "block": {"rows": [block[0].start, block[0].stop], "checkpoints": [block[1].start, block[1].stop]},
                   **({"live": {"buffer": "device" if store.on_device else "host", "weights_read": store.loaded}}
                      if isinstance(store, LiveStore) else {})})
    reader = _reader(store, config, block, int(state.data_position))
    bar = progress(config.steps, initial=start, desc="train", unit="step",
                   disable=jax.process_index() != 0 or not config.progress)
    last = {"time": time.time(), "step": start, "data_wait": 0.0}  # data_wait: seconds blocked on the reader
    metrics_host: dict[str, Any] = {}
    prev = None
    needed = _state_bytes(abstract)

    def saved() -> str:
        """The checkpoint that really exists once pending saves are done."""
        try:
            mngr.wait_until_finished()
        except Exception:  # the failed save is reported by the caller; what exists is what matters here
            pass
        mngr.reload()
        good = mngr.latest_step()
        return f"step {good} in {workdir / 'checkpoints'}" if good is not None else "none yet"

    def check(step_metrics, step):
        finite = bool(jax.device_get(step_metrics["finite"]))
        if not finite:
            raise TrainingError(
                f"non-finite loss or gradient at step {step} (loss={float(step_metrics['loss'])}); the last good "
                f"checkpoint is {saved()}. Lower lr or check the data, then "
                "rerun (add --config.resume_anyway=True to resume with a changed config).")

    threshold_note = None
    keeper = host_memory.Keeper()
    try:
        end = min(config.steps, config.stop_after) if config.stop_after else config.steps
        for step in range(start, end):
            try:
                t_wait = time.perf_counter()
                batch = next(reader)
                last["data_wait"] += time.perf_counter() - t_wait
            except (NonFiniteActivations, StoreDamaged) as e:
                raise TrainingError(f"at step {step}: {e}. The last good checkpoint is {saved()}.") from e
            state, metrics = step_fn(state, sharding.global_batch(batch.acts_BCD, mesh, batch_shape, block))
            if prev is not None:
                check(*prev)  # one step behind, so the host never stalls the device
            if step == start:  # the first step's memory decides whether its temporaries are kept
                jax.block_until_ready(metrics)
                kept = keeper.settle()
                if jax.process_index() == 0:
                    log.write({"event": "host_memory", "step": step + 1, "temporaries": kept})
            else:
                keeper.after_step()
            prev = (metrics, step)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                check(metrics, step)
                now = time.time()
                metrics_host = jax.device_get(metrics)
                metrics_host["tokens_per_s"] = (done - last["step"]) * config.batch_size / max(now - last["time"], 1e-9)
                # the share of the window's wall time the loop waited for batches: near 0 when the reader keeps up
                metrics_host["data_wait_frac"] = last["data_wait"] / max(now - last["time"], 1e-9)
                metrics_host["host_rss_gb"] = host_memory.resident_bytes() / 1e9
                metrics_host.pop("finite")
                last = {"time": now, "step": done, "data_wait": 0.0}
                if jax.process_index() == 0:
                    log.write({"step": done, **metrics_host})
                bar.set_postfix(loss=f"{float(metrics_host['loss']):.4g}", l0=f"{float(metrics_host['l0']):.1f}",
                                tok_s=f"{metrics_host['tokens_per_s']:.3g}")
            if done % config.save_every == 0 or done == end:
                check(metrics, step)
                mngr.save(done, args=ocp.args.StandardSave(state))
            bar.update(1)
        mngr.wait_until_finished()
        if jax.process_index() == 0 and keeper.releases:
            log.write({"event": "host_memory", "step": int(state.step), "stray_holes_returned": keeper.releases})
        keeper.close()
        if int(state.step) >= config.steps and float(_host(state.act_state).get("threshold", 0.0)) < 0:
            n = 8
            theta = estimate_threshold(state, spec, [sharding.global_batch(next(reader).acts_BCD, mesh, batch_shape,
                                                                           block) for _ in range(n)])
            state = state.replace(act_state={**state.act_state, "threshold": jnp.float32(theta)})
            threshold_note = (f"the run ended at step {int(state.step)}, before threshold_start_step "
                              f"{spec.threshold_start_step}: the batchtopk inference threshold was estimated "
                              f"at export from {n} further batches ({theta:.6g})")
            say(threshold_note)
    except BaseException as e:
        if disk_full(e):
            raise TrainingError(space_message(workdir / "checkpoints", needed) +
                                f" The last good checkpoint is {saved()}.") from e
        saved()  # never leave a save in flight (it would be lost, or hang the exit)
        raise
    finally:
        keeper.close()
        reader.close()
        bar.close()
        try:
            mngr.close()
        except Exception:
            pass
    finished = int(state.step) >= config.steps
    # the exported crosscoder reads the scaled inputs themselves: the shift goes into the biases
    params = jax.device_get(crosscoder.absorb_shift(_host(state.params), _host(state.shift)))
    act_state = _host(state.act_state)
    if finished and jax.process_index() == 0:
        meta = {"model": store.meta.get("model"), "layer": store.meta.get("layer"), "steps": int(state.step),
                "activations": str(config.activations)}
        if threshold_note:
            meta["threshold_source"] = threshold_note
        save_crosscoder(workdir / "crosscoder.safetensors", params, act_state, spec, np.asarray(_host(state.scales)),
                        store.meta["checkpoints"], extra_meta=meta)
        (workdir / "summary.json").write_text(json.dumps({"step": int(state.step), **jsonable(metrics_host)},
                                                         indent=1))
    return metrics_host


def _say(log: MetricsLog, message: str) -> None:
    """A warning on stderr and in metrics.jsonl (process 0)."""
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)
        log.write({"event": "warning", "message": message})
