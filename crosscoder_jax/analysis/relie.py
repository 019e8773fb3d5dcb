"""Relative Indirect Effects, the RelDec baseline, selection, classes, lifecycles, and validation.

RelIE of latent i: `RelIE_c = |IE_c| / sum_c' |IE_c'|` (1/C if all are zero); RelDec:
`||W_dec[i, c]|| / sum_c' ||W_dec[i, c']||` on normalised weights. RelIE is a share, not a
magnitude, so every output carries |IE| beside it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rel_ie(ie_CK: np.ndarray) -> np.ndarray:
    """RelIE [C, K] from IE [C, K]."""
    a = np.abs(np.asarray(ie_CK, np.float64))
    total = a.sum(axis=0, keepdims=True)
    return np.where(total > 0, a / np.where(total > 0, total, 1), 1.0 / a.shape[0])


def rel_dec(W_dec_FCD: np.ndarray, latents: Sequence[int]) -> np.ndarray:
    """RelDec [C, K] of `latents` from normalised-space decoder weights [F, C, D]."""
    norms = np.linalg.norm(np.asarray(W_dec_FCD, np.float64)[np.asarray(latents)], axis=-1).T  # [C, K]
    return rel_ie(norms)


def select_top(ie_CF: np.ndarray, top: int = 10) -> np.ndarray:
    """The union over checkpoints of the `top` latents by |IE|, sorted by their largest |IE|."""
    a = np.abs(ie_CF)
    chosen = set()
    for c in range(a.shape[0]):
        order = np.argsort(-a[c], kind="stable")[:top]
        chosen.update(int(i) for i in order if a[c, i] > 0)
    return np.array(sorted(chosen, key=lambda i: -a[:, i].max()), np.int64)


def classify(rel_CK: np.ndarray, names: Sequence[str], low: float = 0.3, high: float = 0.7) -> list[str]:
    """The paper's classes. Two checkpoints A, B (on RelIE of B): < low "A specific (discontinued)",
    > high "B specific (emerged)", else "shared (maintained)". Three: "X specific" if one share is
    > high and the largest; "all shared" if all >= low; "X+Y shared" if exactly those are >= low;
    else "other". More than three: the same rules ("X specific", "all shared", "X+Y+... shared")."""
    C, K = rel_CK.shape
    out = []
    for k in range(K):
        r = rel_CK[:, k]
        if C == 1:
            out.append("single checkpoint")
        elif C == 2:
            out.append(f"{names[0]} specific (discontinued)" if r[1] < low else
                       f"{names[1]} specific (emerged)" if r[1] > high else "shared (maintained)")
        elif r.max() > high:
            out.append(f"{names[int(r.argmax())]} specific")
        elif np.all(r >= low):
            out.append("all shared")
        elif np.sum(r >= low) >= 2:
            out.append("+".join(n for n, x in zip(names, r) if x >= low) + " shared")
        else:
            out.append("other")
    return out


def lifecycles(ie_CK: np.ndarray, names: Sequence[str], active_frac: float = 0.3) -> list[dict]:
    """Per latent, over a series of any length: a checkpoint is active if |IE_c| >= active_frac *
    max_c |IE_c|. The latent emerges at its first active checkpoint, is maintained if it stays
    active to the last checkpoint, and is discontinued at the first inactive checkpoint after its
    last active one. Each record carries the |IE| it rests on."""
    a = np.abs(np.asarray(ie_CK, np.float64))
    out = []
    for k in range(a.shape[1]):
        col = a[:, k]
        if col.max() <= 0:
            out.append({"emerges": None, "maintained": False, "discontinued": None, "label": "never active",
                        "abs_ie": col.tolist()})
            continue
        active = col >= active_frac * col.max()
        first, last = int(np.argmax(active)), int(len(active) - 1 - np.argmax(active[::-1]))
        maintained = last == len(active) - 1
        rec = {"emerges": names[first], "maintained": bool(maintained and active[first:].all()),
               "discontinued": None if maintained else names[last + 1], "abs_ie": col.tolist()}
        if first == 0 and rec["maintained"]:
            label = "present throughout"
        elif rec["maintained"]:
            label = f"emerges at {names[first]}, maintained"
        elif maintained:
            label = f"emerges at {names[first]}, intermittent"
        else:
            label = ("present from the start, " if first == 0 else f"emerges at {names[first]}, ") + \
                f"discontinued at {names[last + 1]}"
        rec["label"] = label
        out.append(rec)
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (1-based)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged); NaN when either side is constant."""
    ra, rb = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def ablation_correlations(delta_CK: np.ndarray, rel_ie_CK: np.ndarray, rel_dec_CK: np.ndarray) -> dict:
    """The paper's validation table. The ablation share of checkpoint c is |delta_c| / sum |delta|
    (for two checkpoints it ranks latents exactly as |delta_B| / |delta_A|). Spearman correlation
    of that share with RelIE and with RelDec, per checkpoint and averaged (for two checkpoints the
    two shares are complementary, so one correlation is reported)."""
    share = rel_ie(delta_CK)
    C = share.shape[0]
    cs = [1] if C == 2 else list(range(C))
    rie = [spearman(share[c], rel_ie_CK[c]) for c in cs]
    rdec = [spearman(share[c], rel_dec_CK[c]) for c in cs]
    return {"rho_relie": float(np.nanmean(rie)), "rho_reldec": float(np.nanmean(rdec)),
            "per_checkpoint_relie": rie, "per_checkpoint_reldec": rdec}
