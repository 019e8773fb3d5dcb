"""Lifecycles over N snapshots: onset, peak and offset of a latent, causal (|IE|) and representational
(decoder norm), and the lag between the two.

The rule, applied to one latent's non-negative series a[0..C-1] (|IE| per snapshot, or the norm of
its decoder row per snapshot, in normalised space):
  peak   = the first snapshot with the largest value;
  onset  = the first snapshot c whose value reaches tau * a[peak] and stays there for `persist`
           snapshots (c .. c+persist-1, cut at the end of the series); a lone spike that never
           persists has its onset at the peak;
  offset = the first snapshot after the peak from which the value stays below tau * a[peak] for
           `persist` snapshots (cut at the end); None while it stays up to the end.
An all-zero series has none of the three. tau = 0.3 and persist = 2 by default; `onset_counts`
shows how the counts move with tau. Lag = causal onset - representational onset, in snapshots and
in training steps: positive when a feature is represented before the model uses it.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

TAUS = (0.1, 0.3, 0.5)


def _holds(mask: np.ndarray, c: int, persist: int) -> bool:
    return bool(mask[c:c + persist].all())


def onset_peak_offset(a_C: np.ndarray, tau: float = 0.3, persist: int = 2) -> tuple[int | None, int | None, int | None]:
    """(onset, peak, offset) snapshot indices of one series [C] by the module's rule."""
    a = np.abs(np.asarray(a_C, np.float64))
    if a.size == 0 or a.max() <= 0:
        return None, None, None
    peak = int(np.argmax(a))
    up = a >= tau * a[peak]
    onset = next((c for c in range(peak + 1) if _holds(up, c, persist)), peak)
    offset = next((c for c in range(peak + 1, len(a)) if _holds(~up, c, persist)), None)
    return onset, peak, offset


def onsets(a_XC: np.ndarray, tau: float = 0.3, persist: int = 2) -> np.ndarray:
    """The onset of each of X series at once (rows of [X, C], by the module's rule, exactly as
    `onset_peak_offset`), -1 for an all-zero series: int [X]."""
    a = np.abs(np.asarray(a_XC, np.float64))
    X, C = a.shape
    if C == 0:
        return np.full(X, -1, np.int64)
    peak = np.argmax(a, axis=1)
    top = a[np.arange(X), peak]
    up = a >= tau * top[:, None]
    holds = up.copy()
    for p in range(1, persist):  # up for `persist` snapshots from c on, cut at the end of the series
        holds[:, :C - p] &= up[:, p:]
    cand = holds & (np.arange(C)[None, :] <= peak[:, None])
    out = np.where(cand.any(axis=1), np.argmax(cand, axis=1), peak)
    return np.where(top > 0, out, -1).astype(np.int64)


def steps_of(names: Sequence[str]) -> list[int] | None:
    """Training steps from snapshot names (the last integer in each, e.g. "step1000"); None if any
    name has none."""
    out = []
    for n in names:
        m = re.findall(r"\d+", str(n))
        if not m:
            return None
        out.append(int(m[-1]))
    return out


def latent_timelines(ie_CK: np.ndarray, decnorm_CK: np.ndarray, names: Sequence[str], tau: float = 0.3,
                     persist: int = 2) -> list[dict[str, Any]]:
    """Per latent (column k of IE [C, K] and decoder norms [C, K]): causal and representational
    onset / peak / offset (snapshot names) and the lag between the onsets."""
    steps = steps_of(names)
    out = []
    for k in range(ie_CK.shape[1]):
        causal = onset_peak_offset(ie_CK[:, k], tau, persist)
        rep = onset_peak_offset(decnorm_CK[:, k], tau, persist)
        rec: dict[str, Any] = {}
        for kind, (on, pk, off) in (("causal", causal), ("repr", rep)):
            rec.update({f"{kind}_onset": None if on is None else names[on],
                        f"{kind}_peak": None if pk is None else names[pk],
                        f"{kind}_offset": None if off is None else names[off]})
        both = causal[0] is not None and rep[0] is not None
        rec["lag_snapshots"] = causal[0] - rep[0] if both else None
        rec["lag_steps"] = steps[causal[0]] - steps[rep[0]] if both and steps else None
        out.append(rec)
    return out


def onset_counts(ie_CK: np.ndarray, names: Sequence[str], taus: Sequence[float] = TAUS,
                 persist: int = 2) -> dict[str, dict[str, Any]]:
    """For each tau: how many latents have their causal onset, and their offset, at each snapshot
    (and how many never go off), so a reader sees how much the lifecycle counts depend on tau."""
    out = {}
    for tau in taus:
        res = [onset_peak_offset(ie_CK[:, k], tau, persist) for k in range(ie_CK.shape[1])]
        out[f"{tau:g}"] = {"onset": {n: sum(r[0] == c for r in res) for c, n in enumerate(names)},
                           "offset": {n: sum(r[2] == c for r in res) for c, n in enumerate(names)},
                           "never_off": sum(r[0] is not None and r[2] is None for r in res)}
    return out


def lag_summary(timelines: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How often a latent is represented before (lag > 0), with (0) or after (< 0) its causal onset."""
    lags = np.array([t["lag_snapshots"] for t in timelines if t["lag_snapshots"] is not None], float)
    if not len(lags):
        return {"n": 0}
    return {"n": int(len(lags)), "represented_first": int((lags > 0).sum()), "same_snapshot": int((lags == 0).sum()),
            "used_first": int((lags < 0).sum()), "mean_lag_snapshots": float(lags.mean()),
            "median_lag_snapshots": float(np.median(lags))}
