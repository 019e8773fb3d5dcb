"""Set from the data before the first step: the input shift (each checkpoint's mean, subtracted from
the scaled rows) and the decoder bias (zero, or the mean or geometric median of the shifted rows),
from one sample of rows per checkpoint.

Why the shift: with the offset left in the inputs every pre-activation carries `mean . W_enc[i]`,
which b_enc must cancel as W_enc moves, and the offset's share of each encoder gradient (`mean` times
the code gradient's batch sum) swamps Adam's per-coordinate scale; residual streams carry large
offsets (so does the power-law benchmark set: 81% of its energy at alpha 1.5). Centred, a top-k SAE
there reached FVU 0.020 in 1,000 steps against 0.043 uncentred (sparsify, which subtracts its b_dec
before the encoder and starts b_dec at the mean of the first batch: 0.0375); benchmarks/README.md,
"Quality per step". The shift is absorbed into the biases at export (`crosscoder.absorb_shift`),
so exported crosscoders read the scaled rows as before.
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


def sample_rows(store: RowChunks, c: int, scale: float, seed: int = 0, max_rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to `max_rows` rows x_c * scale [N, D] (float64) of checkpoint c, read as whole chunks in a
    seeded random order (the same rows on every process)."""
    D = store.d_model
    rows_wanted = max(256, min(max_rows, SAMPLE_BYTES // (8 * D)))
    order = np.random.default_rng([seed, 7]).permutation(store.n_chunks)
    parts, bad, n = [], [], 0
    for i in order:
        (chunk,) = store.read_chunks([int(i)], slice(c, c + 1))
        parts.append(np.asarray(chunk, np.float64)[:, 0])
        if not np.all(np.isfinite(parts[-1])):
            bad.append(int(i))
        n += parts[-1].shape[0]
        if n >= rows_wanted:
            break
    if bad:
        raise ValueError(f"{store.path}: non-finite activations of checkpoint {store.meta['checkpoints'][c]!r} "
                         f"in chunk(s) {sorted(bad)}, read for the input shift or b_dec_init; re-harvest that "
                         "checkpoint, or set --config.center=False --config.b_dec_init=zero to skip the estimate")
    return np.concatenate(parts)[:rows_wanted] * float(scale)


def _centre(X_ND: np.ndarray, how: str) -> np.ndarray:
    return X_ND.mean(axis=0) if how == "mean" else geometric_median(X_ND)


def b_dec_for(store: RowChunks, how: str, scales_C: np.ndarray, columns: slice = slice(None), seed: int = 0,
              max_rows: int = SAMPLE_ROWS) -> np.ndarray:
    """The decoder bias at init [C, D] (float64, normalised space) for the checkpoints in `columns`
    (the others 0): zero, or the mean or geometric median of `sample_rows` x_c * s_c."""
    if how not in B_DEC_INITS:
        raise ValueError(f"b_dec_init {how!r} is not one of {', '.join(B_DEC_INITS)}")
    out = np.zeros((store.n_checkpoints, store.d_model))
    if how != "zero":
        for c in range(store.n_checkpoints)[columns]:
            out[c] = _centre(sample_rows(store, c, scales_C[c], seed, max_rows), how)
    return out


def shift_and_b_dec(store: RowChunks, config, scales_C: np.ndarray,
                    columns: slice = slice(None)) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(input shift [C, D] or None, b_dec at init [C, D] or None) for a run's config, from one
    `sample_rows` read per checkpoint: the shift is the mean of the scaled rows where `config.center`
    (else None: no shift); b_dec follows `config.b_dec_init` on the shifted rows (None for zero).
    Checkpoints outside `columns` (other processes') stay 0. `config.b_dec_init` is checked by
    `runconfig.resolve`."""
    C, D = store.n_checkpoints, store.d_model
    shift = np.zeros((C, D)) if config.center else None
    b_dec = np.zeros((C, D)) if config.b_dec_init != "zero" else None
    if shift is None and b_dec is None:
        return None, None
    for c in range(C)[columns]:
        X = sample_rows(store, c, scales_C[c], config.seed)
        if shift is not None:
            shift[c] = X.mean(axis=0)
            X = X - shift[c]
        if b_dec is not None:
            b_dec[c] = _centre(X, config.b_dec_init)
    return shift, b_dec
