"""Parameters set from the data before the first step: the decoder bias at the mean or the geometric
median of a sample of (normalised) rows, per checkpoint.

Why: with b_dec = 0 the first steps spend the decoder's capacity on the data's offset (every real
residual stream has one; so does the power-law benchmark set). Starting b_dec at the geometric median
(as dictionary_learning does; sparsify starts at the first batch's median too) removes that work:
measured in benchmarks/README.md, "Quality per step".
"""

from __future__ import annotations

import numpy as np

from crosscoder_jax.data.store import RowChunks

B_DEC_INITS = ("zero", "mean", "median")
SAMPLE_ROWS = 16384      # rows per checkpoint the estimate reads (whole chunks, picked at random)
SAMPLE_BYTES = 2 ** 25   # ... at most this many float64 bytes per checkpoint (wide models read fewer rows)


def geometric_median(X_ND: np.ndarray, iters: int = 200, tol: float = 1e-9) -> np.ndarray:
    """argmin_m sum_n ||x_n - m|| over rows X [N, D], float64 [D] (Weiszfeld's iteration from the mean;
    a row that coincides with the iterate gets a bounded weight instead of an infinite one)."""
    X = np.asarray(X_ND, np.float64)
    m = X.mean(axis=0)
    floor = 1e-12 * max(1.0, float(np.abs(X).max()))
    for _ in range(iters):
        w = 1.0 / np.maximum(np.linalg.norm(X - m, axis=1), floor)
        new = w @ X / w.sum()
        step = float(np.linalg.norm(new - m))
        m = new
        if step <= tol * max(1.0, float(np.linalg.norm(m))):
            break
    return m


def b_dec_for(store: RowChunks, how: str, scales_C: np.ndarray, columns: slice = slice(None), seed: int = 0,
              max_rows: int = SAMPLE_ROWS) -> np.ndarray:
    """The decoder bias at init [C, D] (float64, normalised space) for the checkpoints in `columns`
    (the others 0): zero, or the mean or geometric median of up to `max_rows` rows x_c * s_c, read as
    whole chunks in a seeded random order (the same rows on every process)."""
    if how not in B_DEC_INITS:
        raise ValueError(f"b_dec_init {how!r} is not one of {', '.join(B_DEC_INITS)}")
    C, D = store.n_checkpoints, store.d_model
    out = np.zeros((C, D))
    if how == "zero":
        return out
    rows_wanted = max(256, min(max_rows, SAMPLE_BYTES // (8 * D)))
    order = np.random.default_rng([seed, 7]).permutation(store.n_chunks)
    for c in range(C)[columns]:
        parts, n = [], 0
        for i in order:
            (chunk,) = store.read_chunks([int(i)], slice(c, c + 1))
            parts.append(np.asarray(chunk, np.float64)[:, 0])
            n += parts[-1].shape[0]
            if n >= rows_wanted:
                break
        X = np.concatenate(parts)[:rows_wanted] * float(scales_C[c])
        if not np.all(np.isfinite(X)):
            raise ValueError(f"{store.path}: non-finite activations of checkpoint {store.meta['checkpoints'][c]!r} "
                             "in the rows read for b_dec_init; re-harvest that checkpoint, or set "
                             "--config.b_dec_init=zero to skip the estimate")
        out[c] = X.mean(axis=0) if how == "mean" else geometric_median(X)
    return out
