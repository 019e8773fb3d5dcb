"""How sure an onset is: over task prompts (bootstrap) and over crosscoder seeds (matched latents).

Onsets are snapshot indices by `timeline`'s rule (-1: no onset). Two checks, each giving every
selected latent a share in [0, 1] and a stable / unstable verdict:
- prompts: resample the task's N prompts with replacement `n_boot` times, recompute the mean IE per
  snapshot and the onset; the interval is the central `level` of those onsets, the agreement the
  share of resamples whose onset lies within `within` snapshots of the point onset; prompt-stable
  when that share is at least `PROMPT_STABLE` (0.9);
- seeds: the latent's matches in crosscoders trained with other seeds (`matching`), and their onsets
  on the same task; the agreement is the share of all S seeds (the latent's own included) whose
  matched latent has its onset within `within` snapshots of this one; seed-stable when at least
  `SEED_STABLE` (2/3: a majority of 3 seeds) agree.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crosscoder_jax.analysis import timeline

PROMPT_STABLE = 0.9
SEED_STABLE = 2 / 3


def bootstrap_onsets(ie_CNK: np.ndarray, onset_K: np.ndarray, n_boot: int = 200, seed: int = 0, tau: float = 0.3,
                     persist: int = 2, level: float = 0.95, within: int = 1) -> dict[str, np.ndarray]:
    """Onsets of K latents under resampling the N prompts.

    `ie_CNK`: per-prompt IE (reduced over positions and thresholded, as the task's mean IE averages
    them) of K latents at C snapshots; `onset_K`: the point onsets (from the mean over all prompts).
    Returns {"lo" [K], "hi" [K]: the central `level` interval of the resampled onsets (-1 where no
    resample has one), "agreement" [K]: share of resamples whose onset lies within `within`
    snapshots of the point onset, "no_onset" [K]: share of resamples without one, "stable" [K] bool}.
    """
    ie = np.asarray(ie_CNK, np.float64)
    C, N, K = ie.shape
    rng = np.random.default_rng(seed)
    counts_BN = rng.multinomial(N, np.full(N, 1.0 / N), size=n_boot).astype(np.float64)
    mean_BCK = np.einsum("bn,cnk->bck", counts_BN, ie) / max(N, 1)
    on_BK = timeline.onsets(mean_BCK.transpose(0, 2, 1).reshape(n_boot * K, C), tau, persist).reshape(n_boot, K)
    onset_K = np.asarray(onset_K, np.int64)
    has = on_BK >= 0
    agree = (has & (np.abs(on_BK - onset_K[None, :]) <= within) & (onset_K[None, :] >= 0)).mean(axis=0)
    lo, hi = np.full(K, -1, np.int64), np.full(K, -1, np.int64)
    q = (1.0 - level) / 2
    for k in range(K):
        v = on_BK[has[:, k], k]
        if len(v):
            lo[k] = int(np.quantile(v, q, method="lower"))
            hi[k] = int(np.quantile(v, 1 - q, method="higher"))
    return {"lo": lo, "hi": hi, "agreement": agree, "no_onset": 1.0 - has.mean(axis=0),
            "stable": agree >= PROMPT_STABLE}


def seed_onsets(ie_by_seed: Sequence[np.ndarray], partners: Sequence[np.ndarray], latents_K: Sequence[int],
                tau: float = 0.3, persist: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onsets on one task of K latents of seed 0 and of their matches in the other seeds.

    `ie_by_seed[s]`: IE [C, F_s] of every latent of seed s on the task (seed 0 first); `partners[s]`:
    [F_0] the matched latent of seed s (-1 none; `partners[0]` may be None, the identity).
    Returns (matched [S, K] bool, partner [S, K] int (-1 none), onset [S, K] int (-1 none))."""
    lat = np.asarray(latents_K, np.int64)
    S, K = len(ie_by_seed), len(lat)
    matched, partner, onset = np.zeros((S, K), bool), np.full((S, K), -1, np.int64), np.full((S, K), -1, np.int64)
    for s, ie in enumerate(ie_by_seed):
        p = lat if s == 0 or partners[s] is None else np.asarray(partners[s], np.int64)[lat]
        ok = p >= 0
        matched[s], partner[s] = ok, np.where(ok, p, -1)
        if ok.any():
            onset[s, ok] = timeline.onsets(np.asarray(ie, np.float64)[:, p[ok]].T, tau, persist)
    return matched, partner, onset


def seed_agreement(matched_SK: np.ndarray, onset_SK: np.ndarray, within: int = 1) -> dict[str, np.ndarray]:
    """Per latent (column): "match_fraction" (share of the S seeds with a match, its own included),
    "agreement" (share of the S seeds whose match has its onset within `within` snapshots of seed
    0's), "stable" (agreement >= SEED_STABLE; never for a latent without an onset)."""
    S = matched_SK.shape[0]
    ref = onset_SK[0]
    agree = matched_SK & (onset_SK >= 0) & (ref[None, :] >= 0) & (np.abs(onset_SK - ref[None, :]) <= within)
    frac = agree.sum(axis=0) / S
    return {"match_fraction": matched_SK.sum(axis=0) / S, "agreement": frac,
            "stable": (frac >= SEED_STABLE - 1e-9) & (ref >= 0)}


def shares(seed_stable: Sequence[bool] | None, prompt_stable: Sequence[bool] | None) -> dict[str, Any]:
    """The summary's shares of selected latents whose onset is seed-stable, prompt-stable, both."""
    out: dict[str, Any] = {}
    s = None if seed_stable is None else np.asarray(seed_stable, bool)
    p = None if prompt_stable is None else np.asarray(prompt_stable, bool)
    n = len(s) if s is not None else len(p) if p is not None else 0
    out["n"] = n
    if s is not None:
        out["seed_stable"] = float(s.mean()) if n else float("nan")
    if p is not None:
        out["prompt_stable"] = float(p.mean()) if n else float("nan")
    if s is not None and p is not None:
        out["both"] = float((s & p).mean()) if n else float("nan")
    return out
