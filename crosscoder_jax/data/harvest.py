"""Harvest: run every checkpoint up to one layer on the same token contexts, into the activation store.

`harvest(config)` turns a token source (plain text or jsonl files, a pre-tokenised integer array,
or the synthetic language) into fixed-length contexts, runs each checkpoint to the output of block
`layer` (blocks after it are never computed), optionally drops the first (BOS) position, and writes
`[N, C, D]` chunk by chunk with tokens and positions. Memory is bounded by one chunk plus the
checkpoints' parameters; the batch is sharded over the devices' data axis. Killed at any moment,
the same command continues after the last finished chunk, and the finished store is byte-identical
to one made without interruption. Checks before any work: hidden sizes and tokenizers agree; during:
non-finite activations are reported with checkpoint and position; a checkpoint whose language-model
loss is worse than uniform guessing or whose activation norms are far from the others' is flagged.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crosscoder_jax import models
from crosscoder_jax.data import token_sources
from crosscoder_jax.data.location import Location
from crosscoder_jax.data.store import Store, StoreWriter, create_store, read_meta
from crosscoder_jax.runtime.devices import data_mesh, shard_leading
from crosscoder_jax.runtime.runlog import MetricsLog, progress

IDENTITY_FIELDS = ("model", "layer", "checkpoints", "checkpoint_sources", "token_source", "tokens_sha256",
                   "context_len", "drop_bos", "dtype", "n_tokens", "chunk_size")


class HarvestError(ValueError):
    pass


def parse_checkpoints(spec: Sequence[str] | str, model: str) -> list[tuple[str, str, str | None]]:
    """Checkpoint list -> (name, source, revision). Each entry is a revision of `model` (e.g.
    "step512"), a local directory, or "name=dir"/"name=source@revision"."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise HarvestError("no checkpoints given: set --config.checkpoints=rev1,rev2,... (revisions or directories)")
    out = []
    for item in items:
        name, _, rest = item.rpartition("=") if "=" in item else ("", "", item)
        if "@" in rest:
            source, revision = rest.split("@", 1)
        elif Path(rest).is_dir():
            source, revision = rest, None
        else:
            source, revision = model, rest
        out.append((name or (revision or Path(source).name), source, revision))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise HarvestError(f"checkpoint names repeat: {names}; name them with name=source@revision")
    return out


def _tokenizer_fingerprint(tok) -> str:
    vocab = sorted(tok.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


def check_checkpoints(ckpts) -> tuple[list[Any], Any]:
    """The checkpoints' configs and one tokenizer, without reading any weights; refuses checkpoints
    that disagree on hidden size, layer count or tokenizer before any activation is computed."""
    cfgs = [models.load_config(source, revision=revision) for _, source, revision in ckpts]
    toks = [models.load_tokenizer(source, revision=revision) for _, source, revision in ckpts]
    dims = {n: (cfg.d_model, cfg.n_layers) for (n, _, _), cfg in zip(ckpts, cfgs)}
    if len(set(dims.values())) > 1:
        raise HarvestError(f"checkpoints disagree on (hidden size, layers): {dims}; a crosscoder needs one shape")
    prints = {n: _tokenizer_fingerprint(t) for (n, _, _), t in zip(ckpts, toks)}
    if len(set(prints.values())) > 1:
        groups: dict[str, list[str]] = {}
        for n, p in prints.items():
            groups.setdefault(p[:12], []).append(n)
        raise HarvestError(f"checkpoints have different tokenizers (vocabulary hash: names) {groups}; "
                           "they must share one so the same tokens reach every checkpoint")
    return cfgs, toks[0]


def load_checkpoints(ckpts, dtype) -> tuple[list[models.LM], Any]:
    """Every checkpoint's weights and one tokenizer, after `check_checkpoints`."""
    _, tok = check_checkpoints(ckpts)
    return [models.load(source, revision=revision, dtype=dtype) for _, source, revision in ckpts], tok


def identity(config, ckpts, contexts: np.ndarray, n_tokens: int, chunk_rows: int) -> dict[str, Any]:
    """What makes a store the store it is (model, layer, checkpoints and their sources, tokens, sizes):
    store.json's fields, compared when a harvest resumes; a live source states the same."""
    return {"model": config.model, "layer": int(config.layer), "checkpoints": [n for n, _, _ in ckpts],
            "checkpoint_sources": [[s, r] for _, s, r in ckpts],
            "token_source": token_sources.describe(config.tokens),
            "tokens_sha256": hashlib.sha256(np.ascontiguousarray(contexts).tobytes()).hexdigest(),
            "context_len": int(config.context_len), "drop_bos": bool(config.drop_bos), "dtype": config.dtype,
            "n_tokens": int(n_tokens), "chunk_size": int(chunk_rows)}


def open_or_create(config, ckpts, contexts, d_model) -> StoreWriter:
    """The store's writer: a new store, or the existing one if it was made by the same harvest."""
    T = contexts.shape[1] - int(config.drop_bos)
    n_tokens, chunk_rows = contexts.shape[0] * T, config.chunk_contexts * T
    ident = identity(config, ckpts, contexts, n_tokens, min(chunk_rows, n_tokens))
    out = Location(config.out)
    if out.exists("store.json"):
        meta = read_meta(out)
        differ = {k: (meta.get(k), v) for k, v in ident.items() if meta.get(k) != v}
        if differ:
            lines = "; ".join(f"{k}: {a!r} in the store, {b!r} now" for k, (a, b) in differ.items())
            raise HarvestError(f"{out} holds a different harvest ({lines}); choose another --config.out or "
                               "delete it")
        return StoreWriter(out)
    fields = {k: v for k, v in ident.items() if k not in ("checkpoints", "n_tokens", "dtype", "chunk_size",
                                                         "model", "layer")}
    return create_store(out, checkpoints=ident["checkpoints"], d_model=d_model, n_tokens=n_tokens,
                        dtype=config.dtype, chunk_size=ident["chunk_size"], model=config.model,
                        layer=int(config.layer), with_tokens=True, **fields)


def make_residual_fn(mesh, layer: int):
    """Jitted residual at `layer` for a [B, T] batch sharded over the data axis."""
    fn = jax.jit(models.residual_at, static_argnames="layer")

    def run(lm, ids_BT):
        return fn(lm, shard_leading(ids_BT, mesh), jnp.ones(ids_BT.shape, jnp.int32), layer=layer)

    return run


def chunk_activations(lms, residual, ctx_NT: np.ndarray, drop: int, batch_size: int,
                      on_device: bool = False) -> np.ndarray | jax.Array:
    """Every checkpoint's residual on the contexts ctx [N, T], `batch_size` contexts a forward pass,
    the first `drop` positions dropped: float32 [N, T - drop, C, D] (C = len(lms)), in host memory,
    or left on the devices that ran the forward passes (`on_device`)."""
    if on_device:
        per_ckpt = [jnp.concatenate([residual(lm, jnp.asarray(ctx_NT[b:b + batch_size]))[:, drop:]
                                     for b in range(0, len(ctx_NT), batch_size)]) for lm in lms]
        return jnp.stack(per_ckpt, axis=2).astype(jnp.float32)
    acts = None
    for c, lm in enumerate(lms):
        for b in range(0, len(ctx_NT), batch_size):
            r = np.asarray(residual(lm, jnp.asarray(ctx_NT[b:b + batch_size])), np.float32)
            if acts is None:
                acts = np.empty((len(ctx_NT), r.shape[1] - drop, len(lms), r.shape[2]), np.float32)
            acts[b:b + len(r), :, c] = r[:, drop:]
    return acts


# A freshly initialised model sits a few hundredths of a nat above ln V (the tiny model's step0: 5.28
# against 5.26), which is no fault; BLOOM-1b1's broken global_step400000 (perplexity ~338k against
# V = 250,880) is 0.30 nats above it.
UNIFORM_MARGIN = 0.1


def checkpoint_health(lms, names, contexts: np.ndarray, mean_norms: np.ndarray, vocab_size: int) -> dict:
    """Next-token cross-entropy of each checkpoint on a few contexts, and flags: loss worse than
    uniform guessing by more than `UNIFORM_MARGIN` nats (ln V + 0.1), or a mean activation norm
    over 100x away from the other checkpoints'."""
    fwd = jax.jit(models.forward)
    ids = jnp.asarray(contexts)
    out = {}
    for i, (lm, name) in enumerate(zip(lms, names)):
        logits = fwd(lm, ids, jnp.ones(ids.shape, jnp.int32))
        logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
        ce = float(-jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)))
        flags = []
        if not math.isfinite(ce) or ce > math.log(vocab_size) + UNIFORM_MARGIN:
            flags.append(f"next-token loss {ce:.3g} nats is worse than uniform guessing ({math.log(vocab_size):.3g}): "
                         "a broken checkpoint?")
        others = np.delete(mean_norms, i)
        if len(others) and np.isfinite(mean_norms[i]):
            ratio = mean_norms[i] / np.median(others)
            if ratio > 100 or ratio < 0.01:
                flags.append(f"mean activation norm {mean_norms[i]:.3g} is {ratio:.3g}x the other checkpoints' median")
        out[name] = {"ce": ce, "mean_norm": float(mean_norms[i]), "flags": flags}
    return out


def harvest(config) -> Path | str:
    """Runs (or resumes) the harvest described by `config`; returns the store directory (or URL:
    `config.out` may be a kvstore URL such as gs://bucket/path or s3://bucket/path)."""
    ckpts = parse_checkpoints(config.checkpoints, config.model)
    if Location(config.out).is_url:  # an unreachable store fails now, not after the models are loaded
        Location(config.out).exists("store.json")
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.model_dtype]
    lms, tok = load_checkpoints(ckpts, dtype)
    D, L = lms[0].config.d_model, lms[0].config.n_layers
    if not 0 <= config.layer < L:
        raise HarvestError(f"layer {config.layer} is outside the model's blocks 0..{L - 1}")
    contexts = token_sources.contexts(config.tokens, tok, config.n_contexts, config.context_len)
    writer = open_or_create(config, ckpts, contexts, D)
    names = [n for n, _, _ in ckpts]
    drop = int(config.drop_bos)
    T = contexts.shape[1] - drop
    mesh = data_mesh()
    residual = make_residual_fn(mesh, int(config.layer))
    log = MetricsLog(_log_path(Location(config.out)))
    bar = progress(writer.meta["n_tokens"], initial=writer.chunks_written * writer.chunk_size, desc="harvest",
                   unit="tok", disable=not config.progress)
    for i in range(writer.chunks_written, writer.n_chunks):
        start, stop = writer.chunk_rows(i)
        ctx = contexts[start // T: stop // T]
        acts = chunk_activations(lms, residual, ctx, drop, config.batch_size)
        for c in range(len(lms)):
            bad = ~np.isfinite(acts[:, :, c]).all(axis=-1)
            if bad.any():
                row, pos = np.argwhere(bad)[0]
                raise HarvestError(f"checkpoint {names[c]} gives non-finite activations at layer {config.layer}: "
                                   f"{int(bad.sum())} positions in chunk {i}, first at context {start // T + row}, "
                                   f"position {pos + drop}. Check the checkpoint (e.g. load it in float32).")
        positions = np.broadcast_to(np.arange(drop, drop + T), (len(ctx), T))
        writer.write_chunk(i, acts.reshape(-1, len(lms), D), ctx[:, drop:].reshape(-1), positions.reshape(-1))
        bar.update(stop - start)
        log.write({"chunk": i, "tokens": stop})
    bar.close()
    if writer.meta.get("scales") is None or "health" not in writer.meta:
        store = Store(config.out)
        scales = store.estimate_scales(max_rows=config.scale_rows, seed=0)
        health = checkpoint_health(lms, names, contexts[: config.health_contexts], np.sqrt(D) / scales,
                                   lms[0].config.vocab_size)
        writer.update_meta(scales=[float(s) for s in scales], health=health)
        for name, h in health.items():
            for flag in h["flags"]:
                print(f"WARNING checkpoint {name}: {flag}")
    return Location(config.out).path


def _log_path(out: Location) -> Path:
    """harvest_log.jsonl in the store's directory; for a store on object storage, in
    ./harvest_logs/<bucket>/<prefix>/ (a log is appended line by line, which objects are not)."""
    if not out.is_url:
        return Path(out.url) / "harvest_log.jsonl"
    return Path("harvest_logs") / out.url.split("://", 1)[1] / "harvest_log.jsonl"


def series_from_store(store_path: str | Path, model_dtype: str = "float32") -> tuple[list[models.LM], Any, dict]:
    """The checkpoints a harvested store was made from, loaded again: (models, tokenizer, store meta)."""
    meta = read_meta(store_path)
    if "checkpoint_sources" not in meta:
        raise HarvestError(f"{store_path} does not say which checkpoints made it (no checkpoint_sources): "
                           "evaluation and attribution need a store written by launch.harvest")
    ckpts = [(n, s, r) for n, (s, r) in zip(meta["checkpoints"], meta["checkpoint_sources"])]
    lms, tok = load_checkpoints(ckpts, {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[model_dtype])
    return lms, tok, meta
