"""Activation stores of synthetic data: planted features with known lifecycles (`synthetic.planted`),
ground truth to train on, and power-law feature sums (`synthetic.powerlaw`), data no default was
tuned on."""

from __future__ import annotations

import os

import numpy as np

from crosscoder_jax.data.store import StoreWriter, create_store
from crosscoder_jax.synthetic import powerlaw
from crosscoder_jax.synthetic.planted import PlantedFeatures, sample


def write_store(path: str | os.PathLike, features: PlantedFeatures, n_tokens: int, chunk_size: int = 4096,
                seed: int = 0, dtype: str = "float32") -> StoreWriter:
    """A store of planted activations (chunk i drawn with its own seed, so a rewrite is identical)."""
    N, C, D = features.dirs_NCD.shape
    writer = create_store(path, checkpoints=[f"ckpt{c}" for c in range(C)], d_model=D, n_tokens=n_tokens,
                          dtype=dtype, chunk_size=chunk_size, model="planted", layer=0)
    for i in range(writer.n_chunks):
        start, stop = writer.chunk_rows(i)
        writer.write_chunk(i, sample(features, stop - start, np.random.default_rng([seed, i])))
    return writer


def write_powerlaw_store(path: str | os.PathLike, spec: powerlaw.PowerLaw, n_tokens: int, chunk_size: int = 4096,
                         dtype: str = "float32") -> StoreWriter:
    """A one-snapshot store of `powerlaw.sample` rows (chunk i drawn from (spec.seed, i) with one scale
    for the whole store, so a rewrite is identical)."""
    writer = create_store(path, checkpoints=["powerlaw"], d_model=spec.d_model, n_tokens=n_tokens, dtype=dtype,
                          chunk_size=chunk_size, model="powerlaw", layer=0)
    dirs, scale = spec.directions(), powerlaw.scale_of(spec)
    for i in range(writer.n_chunks):
        start, stop = writer.chunk_rows(i)
        rows = powerlaw.sample(spec, stop - start, np.random.default_rng([spec.seed, 1, i]), dirs, scale)
        writer.write_chunk(i, rows[:, None, :])
    return writer
