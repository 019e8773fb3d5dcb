"""Indirect effects of crosscoder latents on a task, per checkpoint (PAPER.md section 4).

For checkpoint c the crosscoder is spliced into model c at the layer: `a_c = dec_c(f) + eps_c`, with
`f = enc(a_1..a_C)` the code shared by all checkpoints (computed from every checkpoint's
activations on the same prompt) and `eps_c = a_c - dec_c(f)` the error term, so the clean output is
unchanged. With `m = logit[patch] - logit[clean]` at the last prompt position:
  AtP    IE[n, t, i] = dm/df[n, t, i] at the clean state * (f_patch - f_clean)[n, t, i]
  IG     the gradient averaged over alpha = 0, 1/steps, ..., (steps-1)/steps (left Riemann sum) along
         the straight path from clean to patch (f and eps both interpolated), times (f_patch - f_clean)
  exact  set one latent (at every spliced position) to its patch value, rerun: one pass per latent
The patch state is zero ablation (f_patch = 0) or the mean code over the task's positions; eps_patch
is eps_clean (default) or 0. Entries with |IE| <= threshold are zeroed, then reduced over positions
(mean, the paper; or sum, feature-circuits) and averaged over examples: one IE per latent per
checkpoint. Each checkpoint runs one jitted program over a batch of prompts; latents are never a
Python loop (exact patching maps over latents inside the program).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from crosscoder_jax import models
from crosscoder_jax.crosscoder.export import Crosscoder
from crosscoder_jax.data.tasks import Prompts, logit_diff
from crosscoder_jax.runtime.devices import shard_leading
from crosscoder_jax.runtime.runlog import progress

METHODS = ("atp", "ig")


class Decoder(NamedTuple):
    """Raw-space decoder slice of one checkpoint: W [F, D], b [D]."""

    W_FD: jax.Array
    b_D: jax.Array


def decode_one(f_NTF: jax.Array, dec: Decoder) -> jax.Array:
    return jnp.einsum("ntf,fd->ntd", f_NTF, dec.W_FD, preferred_element_type=jnp.float32) + dec.b_D


def spliced_metric(downstream: Callable[[jax.Array], jax.Array], prompts: Prompts, dec: Decoder,
                   a_NTD: jax.Array, splice_NT: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """m(f, eps) [N]: the residual is `dec(f) + eps` at spliced positions and the clean activation
    elsewhere (BOS, padding), run through `downstream`: residual -> logits [N, T, V], or logits at
    each prompt's last position [N, V] (cheaper: one unembedding per prompt)."""
    n = jnp.arange(a_NTD.shape[0])

    def metric(f_NTF, eps_NTD):
        resid = jnp.where(splice_NT[..., None], decode_one(f_NTF, dec) + eps_NTD, a_NTD)
        logits = downstream(resid)
        if logits.ndim == 3:
            return logit_diff(logits, prompts)
        return logits[n, jnp.asarray(prompts.patch_N)] - logits[n, jnp.asarray(prompts.clean_N)]

    return metric


def ie_entries(metric, f_clean, eps_clean, f_patch, eps_patch, method: str = "ig",
               steps: int = 10) -> tuple[jax.Array, jax.Array]:
    """Per-(example, position, latent) indirect effects [N, T, F] by AtP or IG, and the clean
    metric [N] (read off the alpha = 0 evaluation, so it costs no extra pass)."""
    delta = f_patch - f_clean

    def summed(f, e):
        m = metric(f, e)
        return jnp.sum(m), m  # examples are independent: the gradient of the sum is per example

    grad_m = jax.grad(summed, has_aux=True)
    if method == "atp":
        g, m_clean = grad_m(f_clean, eps_clean)
        return g * delta, m_clean
    if method != "ig":
        raise ValueError(f"unknown IE method {method!r}; choose one of {METHODS} (exact: exact_patch)")

    def body(acc, alpha):
        g, m = grad_m(f_clean + alpha * delta, eps_clean + alpha * (eps_patch - eps_clean))
        return acc + g, m

    total, ms = lax.scan(body, jnp.zeros_like(f_clean), jnp.arange(steps, dtype=jnp.float32) / steps)
    return total / steps * delta, ms[0]


def exact_patch(metric, f_clean, eps_clean, f_patch, latents_K: jax.Array) -> jax.Array:
    """m(latent i set to its patch value at every position) - m(clean), [N, K]; error terms kept."""
    m0 = metric(f_clean, eps_clean)

    def one(i):
        return metric(f_clean.at[..., i].set(f_patch[..., i]), eps_clean) - m0

    return lax.map(one, latents_K).T


def reduce_entries(ie_NTF: jax.Array, splice_NT: jax.Array, threshold: float, reduce: str) -> jax.Array:
    """Zero entries with |IE| <= threshold, reduce over positions (mean or sum) -> [N, F]."""
    ie = jnp.where(splice_NT[..., None] & (jnp.abs(ie_NTF) > threshold), ie_NTF, 0.0)
    total = jnp.sum(ie, axis=1)
    if reduce == "sum":
        return total
    if reduce != "mean":
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    return total / jnp.maximum(jnp.sum(splice_NT, axis=1), 1)[:, None]


@functools.partial(jax.jit, static_argnames=("layer", "method", "steps", "reduce", "zero_eps_patch"))
def checkpoint_program(lm: models.LM, dec: Decoder, prompts: Prompts, a_NTD, f_clean_NTF, f_patch_NTF, splice_NT,
                       threshold, *, layer: int, method: str, steps: int, reduce: str, zero_eps_patch: bool):
    """One checkpoint, one batch: (per-example reduced IE [N, F], per-example position sum of the
    unthresholded IE [N, F], the clean metric [N])."""
    downstream = functools.partial(_last_logits_from, lm, prompts, layer)
    metric = spliced_metric(downstream, prompts, dec, a_NTD, splice_NT)
    eps = a_NTD - decode_one(f_clean_NTF, dec)
    eps_patch = jnp.zeros_like(eps) if zero_eps_patch else eps
    ie, m_clean = ie_entries(metric, f_clean_NTF, eps, f_patch_NTF, eps_patch, method, steps)
    raw = jnp.sum(jnp.where(splice_NT[..., None], ie, 0.0), axis=1)
    return reduce_entries(ie, splice_NT, threshold, reduce), raw, m_clean


@functools.partial(jax.jit, static_argnames=("layer",))
def exact_program(lm: models.LM, dec: Decoder, prompts: Prompts, a_NTD, f_clean_NTF, f_patch_NTF, splice_NT,
                  latents_K, *, layer: int):
    """Exact single-latent patching of `latents_K` in one checkpoint: [N, K]."""
    downstream = functools.partial(_last_logits_from, lm, prompts, layer)
    metric = spliced_metric(downstream, prompts, dec, a_NTD, splice_NT)
    eps = a_NTD - decode_one(f_clean_NTF, dec)
    return exact_patch(metric, f_clean_NTF, eps, f_patch_NTF, latents_K)


def _last_logits_from(lm, prompts, layer, resid):
    return models.logits_at_from(lm, resid, jnp.asarray(prompts.mask_NT), layer, jnp.asarray(prompts.last_N))


@functools.partial(jax.jit, static_argnames=("layer",))
def _residual(lm, ids, mask, layer):
    return models.residual_at(lm, ids, mask, layer=layer)


class Batch(NamedTuple):
    prompts: Prompts
    a_CNTD: list[jax.Array]   # clean residual of each checkpoint
    f_NTF: jax.Array          # shared code (zero at positions not spliced)
    splice_NT: jax.Array


def encode_batch(lms: Sequence[models.LM], cc: Crosscoder, prompts: Prompts, layer: int, drop_bos: bool) -> Batch:
    """Every checkpoint's residual on the prompts and the shared code at the spliced positions."""
    prompts = Prompts(*(shard_leading(np.asarray(x)) for x in prompts))  # batch-parallel programs
    ids, mask = prompts.ids_NT, prompts.mask_NT
    a = [_residual(lm, ids, mask, layer) for lm in lms]
    N, T, D = a[0].shape
    splice = (mask > 0) & (jnp.arange(T)[None, :] >= int(drop_bos))
    f = cc.encode(jnp.stack(a, axis=2).reshape(N * T, len(lms), D)).reshape(N, T, -1)
    return Batch(prompts, a, jnp.where(splice[..., None], f, 0.0), splice)


def decoders(cc: Crosscoder) -> list[Decoder]:
    folded = cc.folded()
    return [Decoder(folded["W_dec"][:, c, :], folded["b_dec"][c]) for c in range(cc.spec.n_checkpoints)]


def mean_code(lms, cc, prompts: Prompts, layer: int, drop_bos: bool, batch_size: int) -> jax.Array:
    """Mean code [F] over the task's spliced positions (the mean-ablation patch state)."""
    total, count = 0.0, 0
    for sub, n_real in prompts.batches(batch_size):
        batch = encode_batch(lms, cc, sub, layer, drop_bos)
        total = total + jnp.sum(batch.f_NTF[:n_real], axis=(0, 1))
        count += int(jnp.sum(batch.splice_NT[:n_real]))
    return total / max(count, 1)


def _patch_codes(batch: Batch, f_mean: jax.Array | None) -> jax.Array:
    """The patch state [N, T, F]: zero ablation, or the mean code at every spliced position."""
    if f_mean is None:
        return jnp.zeros_like(batch.f_NTF)
    return jnp.where(batch.splice_NT[..., None], f_mean, 0.0)


class PromptEntries(NamedTuple):
    """Per-prompt IE (thresholded, reduced over positions) as its nonzero entries: value at
    (snapshot, prompt, latent)."""

    snapshot: np.ndarray
    prompt: np.ndarray
    latent: np.ndarray
    value: np.ndarray
    n_snapshots: int
    n_prompts: int


def per_prompt(entries: PromptEntries, latents_K: Sequence[int]) -> np.ndarray:
    """Dense per-prompt IE [C, N, K] of `latents_K` (float64); its mean over N is their "ie"."""
    lat = np.asarray(latents_K, np.int64)
    out = np.zeros((entries.n_snapshots, entries.n_prompts, len(lat)))
    keep = np.isin(entries.latent, lat)
    order = np.argsort(lat, kind="stable")
    ks = order[np.searchsorted(lat[order], entries.latent[keep])]
    out[entries.snapshot[keep], entries.prompt[keep], ks] = entries.value[keep]
    return out


def attribute(lms: Sequence[models.LM], cc: Crosscoder, prompts: Prompts, layer: int, method: str = "ig",
              steps: int = 10, patch: str = "zero", eps_patch: str = "clean", threshold: float = 0.1,
              reduce: str = "mean", drop_bos: bool = True, batch_size: int = 32,
              show_progress: bool = False) -> dict[str, np.ndarray]:
    """IE of every latent in every checkpoint on a task: {"ie": [C, F] (thresholded, reduced over
    positions, mean over examples), "ie_raw": [C, F] (position sums, no threshold), "metric": [C]
    (mean clean m), "entries": `PromptEntries`, the nonzero per-prompt values whose mean over the
    prompts is "ie" (what a bootstrap over prompts resamples; `per_prompt` makes them dense)}."""
    if patch not in ("zero", "mean") or eps_patch not in ("clean", "zero"):
        raise ValueError("patch must be 'zero' or 'mean'; eps_patch 'clean' or 'zero'")
    C, F = len(lms), cc.spec.dict_size
    decs = decoders(cc)
    f_mean = mean_code(lms, cc, prompts, layer, drop_bos, batch_size) if patch == "mean" else None
    ie, raw, metric = np.zeros((C, F)), np.zeros((C, F)), np.zeros(C)
    kept: list[tuple[np.ndarray, ...]] = []
    bar = progress(prompts.n * C, desc=f"IE ({method})", unit="prompt", disable=not show_progress)
    first = 0
    for sub, n_real in prompts.batches(batch_size):
        batch = encode_batch(lms, cc, sub, layer, drop_bos)
        f_patch = _patch_codes(batch, f_mean)
        for c, lm in enumerate(lms):
            r, w, m = checkpoint_program(lm, decs[c], batch.prompts, batch.a_CNTD[c], batch.f_NTF, f_patch,
                                         batch.splice_NT, threshold, layer=layer, method=method, steps=steps,
                                         reduce=reduce, zero_eps_patch=eps_patch == "zero")
            r = np.asarray(r[:n_real])
            ie[c] += r.sum(0, dtype=np.float64)
            raw[c] += np.asarray(jnp.sum(w[:n_real], 0), np.float64)
            metric[c] += float(jnp.sum(m[:n_real]))
            nz = np.nonzero(r)  # thresholded: most entries are zero
            kept.append((np.full(len(nz[0]), c, np.int32), (nz[0] + first).astype(np.int32), nz[1].astype(np.int32),
                         r[nz].astype(np.float32)))
            bar.update(n_real)
        first += n_real
    bar.close()
    n = prompts.n
    cols = [np.concatenate(x) if kept else np.zeros(0, t) for x, t in
            zip(zip(*kept) if kept else [()] * 4, (np.int32, np.int32, np.int32, np.float32))]
    return {"ie": ie / n, "ie_raw": raw / n, "metric": metric / n, "entries": PromptEntries(*cols, C, n)}



def exact_effects(lms: Sequence[models.LM], cc: Crosscoder, prompts: Prompts, layer: int, latents,
                  patch: str = "zero", drop_bos: bool = True, batch_size: int = 32) -> np.ndarray:
    """Mean over examples of m(latent patched alone) - m(clean), [C, K]. With the zero patch this
    is the single-latent ablation of the paper's validation (error terms kept). `latents`: [K], the
    same in every checkpoint, or [C, K], each checkpoint its own (one pass per checkpoint either way)."""
    C = len(lms)
    decs = decoders(cc)
    lat_CK = np.asarray(latents, np.int32)
    lat_CK = np.broadcast_to(lat_CK, (C, lat_CK.shape[-1])) if lat_CK.ndim == 1 else lat_CK
    f_mean = mean_code(lms, cc, prompts, layer, drop_bos, batch_size) if patch == "mean" else None
    out = np.zeros(lat_CK.shape)
    for sub, n_real in prompts.batches(batch_size):
        batch = encode_batch(lms, cc, sub, layer, drop_bos)
        f_patch = _patch_codes(batch, f_mean)
        for c, lm in enumerate(lms):
            d = exact_program(lm, decs[c], batch.prompts, batch.a_CNTD[c], batch.f_NTF, f_patch, batch.splice_NT,
                              jnp.asarray(lat_CK[c]), layer=layer)
            out[c] += np.asarray(jnp.sum(d[:n_real], 0), np.float64)
    return out / prompts.n
