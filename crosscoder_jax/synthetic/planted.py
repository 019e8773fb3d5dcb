"""Synthetic activations with planted sparse features that have known lifecycles across checkpoints.

Ground truth for the crosscoder: feature i has a unit direction per checkpoint (a shared base plus
per-checkpoint drift) and is present in some checkpoints only: present in all, emerging (absent in
the first), late (last only), discontinued (absent in the last), early only (first only). Each
checkpoint has its own activation scale, so input normalisation matters. `score` says how many
true features a trained crosscoder recovered and how many on/off patterns its decoder norms get right.
`data.planted_store` writes the samples as an activation store.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

LIFECYCLES = ("all", "emerging", "late", "discontinued", "early")
# series mode: the kind of a feature's interval [first, last] of present snapshots
INTERVALS = ("all", "emerging", "discontinued", "transient")


def lifecycle_pattern(name: str, n_checkpoints: int) -> np.ndarray:
    """Presence [C] of a lifecycle (for C = 3: all 111, emerging 011, late 001, discontinued 110, early 100)."""
    c = np.arange(n_checkpoints)
    pattern = {"all": c >= 0, "emerging": c >= 1, "late": c == n_checkpoints - 1,
               "discontinued": c < n_checkpoints - 1, "early": c == 0}[name]
    if n_checkpoints == 1:
        pattern = np.ones(1, bool)
    return pattern


@dataclasses.dataclass
class PlantedFeatures:
    dirs_NCD: np.ndarray      # unit direction of feature n in checkpoint c
    present_NC: np.ndarray    # bool
    lifecycle: list[str]
    scale_C: np.ndarray       # each checkpoint's activation scale
    p_active: float
    noise: float

    def true_directions(self) -> np.ndarray:
        """Raw-space concatenated directions [N, C*D], unit norm: what a decoder row should match."""
        v = self.dirs_NCD * (self.present_NC * self.scale_C)[..., None]
        v = v.reshape(len(v), -1)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_features(n_features: int = 100, n_checkpoints: int = 3, d_model: int = 64, drift: float = 0.3,
                  scale_C=None, p_active: float = 0.04, noise: float = 0.02, seed: int = 0) -> PlantedFeatures:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_features, 1, d_model))
    dirs = base + drift * rng.normal(size=(n_features, n_checkpoints, d_model))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    names = [LIFECYCLES[i % len(LIFECYCLES)] for i in range(n_features)]
    present = np.stack([lifecycle_pattern(n, n_checkpoints) for n in names])
    if scale_C is None:
        scale_C = np.geomspace(1.0, 10.0, n_checkpoints)  # scales differ ~10x, as OLMo's do
    return PlantedFeatures(dirs, present, names, np.asarray(scale_C, np.float64), p_active, noise)


def make_series_features(n_features: int = 100, n_checkpoints: int = 16, d_model: int = 64, drift: float = 0.12,
                         scale_spread: float = 10.0, p_active: float = 0.04, noise: float = 0.02,
                         seed: int = 0) -> PlantedFeatures:
    """Features over a long series of snapshots: each lives on one interval [first, last] of
    snapshots (a quarter each present throughout, emerging, discontinued, transient; bounds drawn
    uniformly), its direction drifts as a random walk from snapshot to snapshot (`drift` per step,
    relative to the base), and the snapshots' scales are log-spaced over `scale_spread`."""
    rng = np.random.default_rng(seed)
    C = n_checkpoints
    base = rng.normal(size=(n_features, 1, d_model))
    walk = np.cumsum(drift * rng.normal(size=(n_features, C, d_model)), axis=1)
    dirs = base + walk
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    kinds = [INTERVALS[i % len(INTERVALS)] for i in range(n_features)]
    present = np.zeros((n_features, C), bool)
    for n, kind in enumerate(kinds):
        first, last = 0, C - 1
        if C >= 3 and kind in ("emerging", "transient"):
            first = int(rng.integers(1, C - 1))
        if C >= 3 and kind in ("discontinued", "transient"):
            last = int(rng.integers(first, C - 1))
        present[n, first:last + 1] = True
    return PlantedFeatures(dirs, present, kinds, np.geomspace(1.0, scale_spread, C), p_active, noise)


def sample(features: PlantedFeatures, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Activations [n_tokens, C, D] (float32): sparse non-negative feature codes times directions."""
    N, C, D = features.dirs_NCD.shape
    z = (rng.random((n_tokens, N)) < features.p_active) * (0.5 + rng.exponential(1.0, (n_tokens, N)))
    acts = np.einsum("tn,nc,ncd->tcd", z, features.present_NC.astype(np.float64), features.dirs_NCD)
    acts += features.noise * rng.normal(size=acts.shape)
    return (acts * features.scale_C[None, :, None]).astype(np.float32)


class Recovery(NamedTuple):
    recovered: float                # fraction of true features with a latent at cosine > threshold
    pattern_correct: float          # fraction of true features whose on/off pattern the matched latent gets right
    per_lifecycle: dict[str, tuple[float, float]]
    best_cos_N: np.ndarray
    pattern_of_recovered: float     # of the recovered features, the fraction whose pattern (interval) is exact


def score(W_dec_raw_FCD: np.ndarray, W_dec_norm_FCD: np.ndarray, features: PlantedFeatures,
          cos_threshold: float = 0.9, on_fraction: float = 0.3) -> Recovery:
    """Matches true features to decoder rows. A feature is recovered if some latent's raw-space
    decoder row (flattened over C, D) has cosine > `cos_threshold` with its true concatenated
    direction. Its pattern is right if the matched latent's normalised-space decoder norms are
    `> on_fraction * max` exactly in the checkpoints where the feature is present (the features
    are not pattern-scored when not recovered, and count as wrong)."""
    F = W_dec_raw_FCD.shape[0]
    dec = W_dec_raw_FCD.reshape(F, -1).astype(np.float64)
    dec = dec / np.maximum(np.linalg.norm(dec, axis=-1, keepdims=True), 1e-30)
    cos_NF = features.true_directions() @ dec.T
    best_F = cos_NF.argmax(axis=1)
    best_cos = cos_NF.max(axis=1)
    norms_NC = np.linalg.norm(W_dec_norm_FCD[best_F].astype(np.float64), axis=-1)
    on_NC = norms_NC > on_fraction * norms_NC.max(axis=1, keepdims=True)
    rec = best_cos > cos_threshold
    pat = rec & np.all(on_NC == features.present_NC, axis=1)
    names = np.asarray(features.lifecycle)
    per = {n: (float(rec[names == n].mean()), float(pat[names == n].mean()))
           for n in dict.fromkeys((*LIFECYCLES, *INTERVALS)) if (names == n).any()}
    return Recovery(float(rec.mean()), float(pat.mean()), per, best_cos,
                    float(pat.sum() / rec.sum()) if rec.any() else float("nan"))
