"""Latents of crosscoders trained with different seeds on the same store, matched one to one.

Two similarities, each a matrix [F_a, F_b]:
  "decoder"  the cosine of the latents' joined decoder directions, `W_dec[i].reshape(C * D)` in the
             normalised space the crosscoders were trained in (every snapshot at the same scale);
  "codes"    the Pearson correlation of their codes on the same store rows (what they fire on).
Latents are paired by the one-to-one assignment that maximises the summed similarity
(`scipy.optimize.linear_sum_assignment`); a pair counts as a match when its similarity reaches
`cut`. `similarity_stats` gives what a cut is judged against: chance (random directions in C * D
dimensions; codes of rows that do not correspond), and how close the nearest other latent of the
same crosscoder comes (two different features of one model).

Which to use was measured on the demo's crosscoders (F 256, k 32, 29 snapshots; benchmarks/README.md
"Seed agreement"): latents whose codes correlate >= 0.9 across two seeds, the same feature by what
they fire on, have joined decoder cosines of 0.35 (median; 0.17 at the 10th percentile), below the
nearest other latent of the same crosscoder (0.30 median, 0.68 at the 99th percentile): at that
size decoders do not identify a feature across seeds (256 latents with 32 active share 96
dimensions per snapshot, and their least-squares decoders split what co-firing latents write), so
the demo matches by codes; "decoder" is the choice where the dictionary is far sparser than the
hidden size, as in the paper's models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_CUT = 0.7
_DENSE_MAX = 8192  # candidate rows above which the assignment is greedy (exact assignment is O(n^3))


def directions(W_dec_FCD: np.ndarray) -> np.ndarray:
    """Unit joined decoder directions [F, C * D] (float64; an all-zero row stays zero)."""
    W = np.asarray(W_dec_FCD, np.float64).reshape(np.shape(W_dec_FCD)[0], -1)
    n = np.linalg.norm(W, axis=1, keepdims=True)
    return np.where(n > 0, W / np.where(n > 0, n, 1.0), 0.0)


def cosines(W_a_FCD: np.ndarray, W_b_FCD: np.ndarray) -> np.ndarray:
    """Cosine [F_a, F_b] of every pair of latents' joined decoder directions."""
    if np.shape(W_a_FCD)[1:] != np.shape(W_b_FCD)[1:]:
        raise ValueError(f"decoders of different shapes {np.shape(W_a_FCD)} and {np.shape(W_b_FCD)}: only "
                         "crosscoders trained on the same store (same snapshots and hidden size) can be matched")
    return directions(W_a_FCD) @ directions(W_b_FCD).T


def assign(cos_AB: np.ndarray, cut: float = DEFAULT_CUT) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one assignment maximising the summed cosine among pairs whose cosine reaches `cut`.

    Returns (partner [A] int, -1 where unmatched; cosine of the pair [A], NaN where unmatched). Only
    rows and columns with some cosine >= cut take part; past `_DENSE_MAX` of them the assignment is
    greedy (highest cosine first), which equals the exact one whenever each row's best partner is
    unique."""
    A, B = cos_AB.shape
    partner, value = np.full(A, -1, np.int64), np.full(A, np.nan)
    rows = np.flatnonzero((cos_AB >= cut).any(axis=1))
    cols = np.flatnonzero((cos_AB >= cut).any(axis=0))
    if not len(rows):
        return partner, value
    sub = cos_AB[np.ix_(rows, cols)]
    if max(len(rows), len(cols)) <= _DENSE_MAX:
        r, c = linear_sum_assignment(np.where(sub >= cut, sub, -1.0), maximize=True)
        pairs = [(i, j) for i, j in zip(r, c) if sub[i, j] >= cut]
    else:
        ii, jj = np.nonzero(sub >= cut)
        order = np.argsort(-sub[ii, jj], kind="stable")
        used_r, used_c, pairs = set(), set(), []
        for i, j in zip(ii[order], jj[order]):
            if i not in used_r and j not in used_c:
                used_r.add(i), used_c.add(j), pairs.append((i, j))
    for i, j in pairs:
        partner[rows[i]], value[rows[i]] = cols[j], sub[i, j]
    return partner, value


def code_correlations(f_a_NF: np.ndarray, f_b_NF: np.ndarray) -> np.ndarray:
    """Pearson correlation [F_a, F_b] of two crosscoders' codes on the same N rows (0 for a latent
    constant on them)."""
    if len(f_a_NF) != len(f_b_NF):
        raise ValueError(f"codes of {len(f_a_NF)} and {len(f_b_NF)} rows: encode the same store rows with both")

    def z(f):
        f = np.asarray(f, np.float64) - np.mean(f, axis=0)
        n = np.linalg.norm(f, axis=0)
        return f / np.where(n > 0, n, 1.0)

    return z(f_a_NF).T @ z(f_b_NF)


def match(W_a_FCD: np.ndarray, W_b_FCD: np.ndarray, cut: float = DEFAULT_CUT, live_a: np.ndarray | None = None,
          live_b: np.ndarray | None = None, sim: np.ndarray | None = None) -> dict[str, Any]:
    """Matches of crosscoder a's latents in crosscoder b: {"partner" [F_a] (-1 none), "cos" [F_a]
    (the pair's similarity, NaN none), "best" [F_a] (the largest similarity with any live latent of
    b, matched or not)}, by joined decoder cosine, or by `sim` [F_a, F_b] when given (e.g.
    `code_correlations`). Dead latents (`live_* = False`) are never matched."""
    cos = cosines(W_a_FCD, W_b_FCD) if sim is None else np.array(sim, np.float64)
    if live_a is not None:
        cos[~np.asarray(live_a, bool)] = -1.0
    if live_b is not None:
        cos[:, ~np.asarray(live_b, bool)] = -1.0
    partner, value = assign(cos, cut)
    return {"partner": partner, "cos": value, "best": cos.max(axis=1) if cos.shape[1] else np.full(len(cos), np.nan)}


def similarity_stats(within_FF: np.ndarray, chance: float, live: np.ndarray | None = None) -> dict[str, float]:
    """Quantiles of each live latent's largest similarity with another live latent of the same
    crosscoder (`within_FF`: the crosscoder against itself), beside `chance`."""
    w = np.array(within_FF, np.float64)
    if live is not None:
        keep = np.asarray(live, bool)
        w = w[np.ix_(keep, keep)]
    out: dict[str, float] = {"chance_999": float(chance), "n_live": int(len(w))}
    if len(w) > 1:
        np.fill_diagonal(w, -np.inf)
        nn = w.max(axis=1)
        out.update({f"nearest_within_q{q}": float(np.quantile(nn, q / 100)) for q in (50, 90, 99)})
        out["nearest_within_max"] = float(nn.max())
    return out


def code_chance(f_a_NF: np.ndarray, f_b_NF: np.ndarray, shift: int | None = None) -> float:
    """Chance for `code_correlations`: the 99.9th percentile of the assigned correlations when b's
    rows are rolled against a's (the same codes, no correspondence)."""
    shift = len(f_b_NF) // 3 if shift is None else shift
    sim = code_correlations(f_a_NF, np.roll(f_b_NF, shift, axis=0))
    r, c = linear_sum_assignment(sim, maximize=True)
    return float(np.quantile(sim[r, c], 0.999))


def cosine_stats(W_FCD: np.ndarray, live: np.ndarray | None = None, seed: int = 0) -> dict[str, float]:
    """What a cosine cut is judged against, for one crosscoder: the 99.9th percentile of |cos| of
    random Gaussian directions in C * D dimensions (chance), and quantiles of each live latent's
    largest cosine with another live latent of the same crosscoder (the nearest different feature)."""
    d = directions(W_FCD)
    if live is not None:
        d = d[np.asarray(live, bool)]
    n_dim = d.shape[1]
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((2048, n_dim))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    chance = float(np.quantile(np.abs(np.sum(g[:1024] * g[1024:], axis=1)), 0.999))
    out = {"dims": int(n_dim), "chance_999": chance, "n_live": int(len(d))}
    if len(d) > 1:
        c = d @ d.T
        np.fill_diagonal(c, -np.inf)
        nn = c.max(axis=1)
        out.update({f"nearest_within_q{q}": float(np.quantile(nn, q / 100)) for q in (50, 90, 99)})
        out["nearest_within_max"] = float(nn.max())
    return out
