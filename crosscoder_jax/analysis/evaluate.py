"""Crosscoder quality per checkpoint, on held-out contexts, inside the models.

For each checkpoint: FVU of the reconstruction, the shared code's L0 and dead fraction (inference
mode: batchtopk and jumprelu use their thresholds), and the language-model cost of splicing the
reconstruction in at the layer: delta-CE = CE(reconstruction spliced) - CE(clean), and
CE-loss-recovered = 1 - delta-CE / (CE(zero ablation) - CE(clean)). When the harvest dropped the
first (BOS) position, that position keeps its clean activation in every spliced run, since the
crosscoder never saw it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crosscoder_jax import models
from crosscoder_jax.crosscoder.export import Crosscoder
from crosscoder_jax.runtime.runlog import progress


def next_token_ce(logits_BTV: jax.Array, ids_BT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (nats) of positions 0..T-2 predicting 1..T-1."""
    logp = jax.nn.log_softmax(logits_BTV[:, :-1].astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, ids_BT[:, 1:, None], axis=-1))


@functools.partial(jax.jit, static_argnames=("layer",))
def spliced_ce(lm: models.LM, ids_BT: jax.Array, resid_BTD: jax.Array, layer: int) -> jax.Array:
    """CE of `lm` with the residual after block `layer` replaced by `resid_BTD`."""
    mask = jnp.ones(ids_BT.shape, jnp.int32)
    return next_token_ce(models.logits_from(lm, resid_BTD, mask, layer=layer), ids_BT)


@functools.partial(jax.jit, static_argnames=("layer",))
def _residual(lm, ids_BT, layer):
    return models.residual_at(lm, ids_BT, jnp.ones(ids_BT.shape, jnp.int32), layer=layer)


def evaluate(lms: Sequence[models.LM], names: Sequence[str], cc: Crosscoder, contexts: np.ndarray, layer: int,
             drop_bos: bool = True, batch_size: int = 16, show_progress: bool = True) -> dict[str, Any]:
    """Metrics per checkpoint over `contexts` [n, T] (see the module docstring)."""
    C, F = len(lms), cc.spec.dict_size
    drop = int(drop_bos)
    sums = {k: np.zeros(C) for k in ("err", "ce_clean", "ce_spliced", "ce_zero")}
    x_sq, n_rows, n_ctx = np.zeros((C,)), 0, 0
    x_mean_acc = None
    l0_sum, fired = 0.0, np.zeros(F, bool)
    encode = jax.jit(lambda a: cc.encode(a))
    decode = jax.jit(lambda a: cc.reconstruct(a))
    bar = progress(len(contexts), desc="evaluate", unit="ctx", disable=not show_progress)
    for b in range(0, len(contexts), batch_size):
        ids = jnp.asarray(contexts[b:b + batch_size])
        resid = jnp.stack([_residual(lm, ids, layer) for lm in lms], axis=2)  # [B, T, C, D]
        B, T, _, D = resid.shape
        a_NCD = resid[:, drop:].reshape(-1, C, D)
        f_NF = encode(a_NCD)
        xhat_NCD = decode(a_NCD)
        l0_sum += float(jnp.sum(f_NF > 0))
        fired |= np.asarray(jnp.any(f_NF > 0, axis=0))
        a64 = np.asarray(a_NCD, np.float64)
        sums["err"] += np.sum((a64 - np.asarray(xhat_NCD, np.float64)) ** 2, axis=(0, 2))
        x_sum_b = a64.sum(axis=0)  # [C, D]
        x_mean_acc = x_sum_b if x_mean_acc is None else x_mean_acc + x_sum_b
        x_sq += np.sum(a64 ** 2, axis=(0, 2))
        n_rows += a64.shape[0]
        xhat_BTCD = xhat_NCD.reshape(B, T - drop, C, D)
        for c, lm in enumerate(lms):
            spliced = resid[:, :, c].at[:, drop:].set(xhat_BTCD[:, :, c])
            zero = resid[:, :, c].at[:, drop:].set(0.0)
            sums["ce_clean"][c] += B * float(spliced_ce(lm, ids, resid[:, :, c], layer=layer))
            sums["ce_spliced"][c] += B * float(spliced_ce(lm, ids, spliced, layer=layer))
            sums["ce_zero"][c] += B * float(spliced_ce(lm, ids, zero, layer=layer))
        n_ctx += B
        bar.update(len(ids))
    bar.close()
    # sum ||x - mean||^2 = sum ||x||^2 - n ||mean||^2, per checkpoint
    var = x_sq - np.sum(x_mean_acc ** 2, axis=-1) / n_rows
    out: dict[str, Any] = {"tokens": n_rows, "l0": l0_sum / n_rows, "dead_frac": float(1 - fired.mean()),
                           "checkpoints": {}}
    for c, name in enumerate(names):
        clean, spl, zero = (sums[k][c] / n_ctx for k in ("ce_clean", "ce_spliced", "ce_zero"))
        d_ce = spl - clean
        out["checkpoints"][name] = {
            "fvu": float(sums["err"][c] / var[c]), "ce_clean": clean, "ce_spliced": spl, "ce_zero_ablation": zero,
            "delta_ce": d_ce, "ce_loss_recovered": float(1 - d_ce / (zero - clean)) if zero != clean else float("nan")}
    return out


def heldout_contexts(meta: dict[str, Any], tokenizer, n_contexts: int, context_len: int = 0) -> np.ndarray:
    """Contexts from a harvested store's token source that come after the harvested ones (a fresh
    draw for the synthetic language): held out from the crosscoder's training data."""
    import ml_collections

    from crosscoder_jax.data import token_sources

    src = ml_collections.ConfigDict(meta["token_source"])
    src.path = ",".join(src.get("paths", []))
    harvested = meta["n_tokens"] // (meta["context_len"] - int(meta["drop_bos"]))
    return token_sources.contexts(src, tokenizer, n_contexts, context_len or meta["context_len"], skip=harvested)


def table(result: dict[str, Any]) -> str:
    """The paper's crosscoder-quality table as Markdown."""
    lines = [f"L0 {result['l0']:.1f}, dead {result['dead_frac']:.3f} over {result['tokens']} tokens", "",
             "| checkpoint | FVU | CE clean | CE spliced | delta-CE | CE zero-abl. | CE recovered |",
             "|---|---|---|---|---|---|---|"]
    for name, m in result["checkpoints"].items():
        lines.append(f"| {name} | {m['fvu']:.4f} | {m['ce_clean']:.4f} | {m['ce_spliced']:.4f} | {m['delta_ce']:.4f} | "
                     f"{m['ce_zero_ablation']:.4f} | {m['ce_loss_recovered']:.4f} |")
    return "\n".join(lines)


def write(result: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=1))
