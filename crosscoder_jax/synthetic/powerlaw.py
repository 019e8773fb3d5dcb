"""Synthetic activations no default was tuned on: sums of many random unit directions whose
frequencies follow a power law and whose magnitudes are exponential, plus isotropic noise.

Row = sum over its active features i of m_i * u_i + noise, with u_i random unit directions in D
dimensions, feature i occurring Poisson(p_i) times in a row with p_i proportional to (i + 1)^-alpha
and summing to `mean_active` (repeats add up), each occurrence with a magnitude m ~ Exp(1), and
Gaussian noise of norm `noise` times the signal's root-mean-square norm sqrt(2 sum_i p_i) (E m^2 =
2; random directions add in quadrature on average); rows are then scaled to mean norm
sqrt(D) (what every library's normalisation aims at). Everything is a function of the seed and the
row index, so a store rewritten with the same arguments is identical. Vary `alpha`, `n_features`,
`mean_active` and `noise` rather than tuning to one set.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    d_model: int = 512
    n_features: int = 4096
    alpha: float = 1.1
    mean_active: float = 24.0
    noise: float = 0.05
    seed: int = 0

    def directions(self) -> np.ndarray:
        """Unit directions [n_features, D]."""
        u = np.random.default_rng([self.seed, 0]).standard_normal((self.n_features, self.d_model))
        return u / np.linalg.norm(u, axis=1, keepdims=True)

    def frequencies(self) -> np.ndarray:
        """Mean occurrences p [n_features] of each feature in a row (sum `mean_active`)."""
        w = (np.arange(self.n_features) + 1.0) ** -self.alpha
        return w * self.mean_active / w.sum()


def sample(spec: PowerLaw, n_rows: int, rng: np.random.Generator, dirs: np.ndarray | None = None,
           scale: float | None = None) -> np.ndarray:
    """Rows [n_rows, D] float32. `scale` brings rows to mean norm sqrt(D); None estimates it from
    these rows (`scale_of` gives the one a whole store should share)."""
    dirs = spec.directions() if dirs is None else dirs
    p = spec.frequencies()
    n_active = rng.poisson(p.sum(), n_rows)  # Poisson(p_i) per feature: a Poisson total spread by p / sum(p)
    rows = np.repeat(np.arange(n_rows), n_active)
    feats = rng.choice(spec.n_features, size=len(rows), p=p / p.sum())
    codes = np.zeros((n_rows, spec.n_features), np.float32)
    np.add.at(codes, (rows, feats), rng.exponential(1.0, len(rows)).astype(np.float32))
    x = (codes @ dirs.astype(np.float32)).astype(np.float64)
    signal = math.sqrt(2.0 * float(p.sum()))
    x += rng.standard_normal(x.shape) * (spec.noise * signal / math.sqrt(spec.d_model))
    if scale is None:
        scale = math.sqrt(spec.d_model) / max(float(np.linalg.norm(x, axis=1).mean()), 1e-12)
    return (x * scale).astype(np.float32)


def scale_of(spec: PowerLaw, n_rows: int = 8192) -> float:
    """The factor that brings rows of `spec` to mean norm sqrt(D), from `n_rows` probe rows."""
    x = sample(spec, n_rows, np.random.default_rng([spec.seed, 2 ** 31]), scale=1.0)
    return math.sqrt(spec.d_model) / float(np.linalg.norm(x, axis=1).mean())
