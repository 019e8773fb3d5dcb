"""Shared fixtures: a small planted-feature store and a small training config."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _planted(tmp_path_factory, n_checkpoints: int, seed: int):
    from crosscoder_jax.data import planted_store
    from crosscoder_jax.synthetic import planted

    feats = planted.make_features(n_features=40, n_checkpoints=n_checkpoints, d_model=16, seed=seed)
    path = tmp_path_factory.mktemp(f"planted{n_checkpoints}") / "store"
    planted_store.write_store(path, feats, n_tokens=4096, chunk_size=256)
    return path, feats


@pytest.fixture(scope="session")
def planted_setup(tmp_path_factory):
    return _planted(tmp_path_factory, n_checkpoints=3, seed=0)


@pytest.fixture(scope="session")
def planted_setup_c4(tmp_path_factory):
    """A planted store with 4 checkpoints (splits over a snapshot axis of 2 or 4)."""
    return _planted(tmp_path_factory, n_checkpoints=4, seed=1)


def small_config(store, workdir, **overrides):
    """A tiny training config over `store` (fast to compile and run)."""
    sys.path.insert(0, str(ROOT))
    from configs.crosscoder import get_config

    c = get_config()
    c.activations, c.workdir = str(store), str(workdir)
    c.dict_size, c.k, c.batch_size, c.steps, c.lr = 64, 4, 64, 20, 1e-3
    c.log_every, c.save_every, c.dead_tokens, c.threshold_start_step = 5, 10, 256, 5
    c.progress = False
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env
