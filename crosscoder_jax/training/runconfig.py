"""The training config: turning it into a `Spec`, and guarding a workdir against a changed config.

A workdir remembers the config that started it (`config.json`). Resuming with different values
for any field that changes the result is refused with the differing fields named; fields that
only steer the run (logging, checkpoint cadence, prefetch, progress bar) may change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from crosscoder_jax.crosscoder import Spec
from crosscoder_jax.data.store import Store
from crosscoder_jax.runtime import matmul_choice
from crosscoder_jax.training import init_data

# May differ between the run in a workdir and the command that resumes it.
# `workdir` too: a workdir moved (say, to a bigger disk) resumes from its new place.
RUN_CONTROL = {"workdir", "log_every", "save_every", "max_to_keep", "progress", "resume_anyway", "stop_after",
               "reader.prefetch", "distributed.coordinator", "distributed.num_processes", "distributed.process_id",
               "mesh.data", "mesh.snapshot", "mesh.latent", "mesh.zero", "sparse_decode", "live.buffer"}


# Fields added after runs were started: a saved config.json without one ran with this value.
ADDED = {"b_dec_init": "zero", "center": False}


class ConfigMismatch(ValueError):
    pass


def spec_from_config(config, n_checkpoints: int, d_model: int) -> Spec:
    """The crosscoder `Spec` a training config asks for (0 means "default" for optional ints;
    matmul_dtype "auto" resolved for this backend by `runtime.matmul_choice`)."""
    return Spec(
        n_checkpoints=n_checkpoints, d_model=d_model, dict_size=config.dict_size, activation=config.activation,
        k=config.k, k_start=config.k_start or None, k_anneal_steps=config.k_anneal_steps,
        sparsity_coeff=config.l1_coeff,
        sparsity_warmup_steps=int(round(config.sparsity_warmup_frac * config.steps)),
        aux_coeff=config.aux_coeff, k_aux=config.k_aux or None, dead_tokens=config.dead_tokens,
        threshold_beta=config.threshold_beta, threshold_start_step=config.threshold_start_step,
        bandwidth=config.bandwidth, init_threshold=config.init_threshold,
        dec_init_norm=config.dec_init_norm or None, matmul_dtype=matmul_choice.choose(config.matmul_dtype)[0],
        sparse_decode=config.sparse_decode and config.activation in ("topk", "batchtopk"))


def resolve(config) -> ml_collections.ConfigDict:
    """A copy, checked for the fields every run needs."""
    config = ml_collections.ConfigDict(config.to_dict())
    if not config.activations or not config.workdir:
        raise ValueError("set --config.activations (a store directory) and --config.workdir")
    if config.b_dec_init not in init_data.B_DEC_INITS:
        raise ValueError(f"--config.b_dec_init={config.b_dec_init!r}: pick one of {', '.join(init_data.B_DEC_INITS)}")
    return config


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """Fields (dotted names) whose values differ, except run-control fields (and the live-source
    fields of runs that read a store, which configs written before they existed lack)."""
    a, b = {**ADDED, **_flat(saved)}, _flat(current)
    live = "live" in (a.get("activations"), b.get("activations"))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in RUN_CONTROL and a.get(k) != b.get(k) and (live or not k.startswith("live."))}


def has_checkpoint(workdir: Path) -> bool:
    """Whether a (finished) checkpoint step exists in `workdir/checkpoints`."""
    ckpts = Path(workdir) / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() and p.is_dir() for p in ckpts.iterdir())


def check(workdir: Path, config) -> bool:
    """Refuses a workdir that holds a run with another config (unless `resume_anyway`); True when
    `config.json` is to be (re)written, which `save` does once the run has started cleanly.

    A config.json counts only once its run has saved a checkpoint: a run that failed before its
    first one (diverged, say) left nothing to resume, so the corrected command simply starts over."""
    path = workdir / "config.json"
    if not path.exists() or not has_checkpoint(workdir):
        return True
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigMismatch(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): the run's config is "
                             "damaged. Restore it, or use another --config.workdir") from None
    current = json.loads(json.dumps(config.to_dict()))
    differ = diff(saved, current)
    if differ and not config.resume_anyway:
        lines = "; ".join(f"{k}: {a!r} in the workdir, {b!r} now" for k, (a, b) in differ.items())
        raise ConfigMismatch(f"{workdir} holds a run with a different config ({lines}). Use another "
                             "--config.workdir, or --config.resume_anyway=True to continue it anyway.")
    return bool(differ) or saved.get("workdir") != current.get("workdir")


def save(workdir: Path, config) -> None:
    """Writes the config into the workdir (atomically; process 0)."""
    if jax.process_index() != 0:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "config.json.tmp"
    tmp.write_text(json.dumps(json.loads(json.dumps(config.to_dict())), indent=1))
    os.replace(tmp, workdir / "config.json")


def scales_for(store: Store, config, columns: slice = slice(None)) -> np.ndarray:
    """Per-checkpoint input scales [C] (float64): ones if normalisation is off, the store's recorded
    scales, or an estimate from the store of the checkpoints in `columns` (this process's; the other
    entries are 0, for `train` to fill from the processes that own them)."""
    if not config.normalize:
        return np.ones(store.n_checkpoints)
    if store.meta.get("scales"):
        return np.asarray(store.meta["scales"], np.float64)
    # live: estimated as a harvest with the same fields records them (its scale_rows, seed 0)
    how = (dict(max_rows=config.live.scale_rows, seed=0) if store.meta.get("format") == "live"
           else dict(seed=config.seed))
    scales = np.zeros(store.n_checkpoints)
    scales[columns] = store.estimate_scales(columns=columns, **how)
    return scales
