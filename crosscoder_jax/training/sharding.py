"""The training mesh and the one function that maps train state to shardings.

The mesh has a "data" axis (the batch is split over it) and a "model" axis (the latents F are split
over it). The math never names a device: `state_shardings` decides every placement from the leaf
names, and XLA's partitioner inserts the collectives (the exact top-k of `crosscoder.activations.select` is
made of reductions, so it stays exact when latents are split).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crosscoder_jax.runtime.devices import DATA

MODEL = "model"

# Leaves whose name is here are split over latents; everything else is replicated.
_LATENT_SPECS = {
    "W_enc": P(None, None, MODEL),   # [C, D, F]
    "W_dec": P(MODEL, None, None),   # [F, C, D]
    "b_enc": P(MODEL),               # [F]
    "log_threshold": P(MODEL),       # [F]
    "since_fired": P(MODEL),         # [F]
}


def make_mesh(data: int = -1, model: int = 1, devices: list | None = None) -> Mesh:
    """A (data, model) mesh over all devices (of every process); -1 fills that axis."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and model == -1:
        raise ValueError("at most one mesh axis may be -1")
    if data == -1:
        data = n // model
    if model == -1:
        model = n // data
    if data * model != n:
        raise ValueError(f"mesh {data}x{model} (data x model) does not use the {n} devices present; "
                         f"choose axes whose product is {n}")
    return Mesh(np.asarray(devices).reshape(data, model), (DATA, MODEL))


def _leaf_name(path: tuple) -> str | None:
    for entry in reversed(path):
        name = getattr(entry, "key", None) or getattr(entry, "name", None)
        if isinstance(name, str):
            return name
    return None


def partition_spec(path: tuple, leaf: Any) -> P:
    """The PartitionSpec of one state leaf, from its name (the last dict key or attribute)."""
    spec = _LATENT_SPECS.get(_leaf_name(path))
    if spec is None or getattr(leaf, "ndim", 0) != len(spec):
        return P()
    return spec


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """NamedSharding for every leaf of a train state (params, optimizer moments, counters)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: NamedSharding(mesh, partition_spec(p, x)), state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Activations [B, C, D]: batch over the data axis."""
    return NamedSharding(mesh, P(DATA, None, None))


def check_divisible(mesh: Mesh, batch_size: int, dict_size: int) -> None:
    d, m = mesh.shape[DATA], mesh.shape[MODEL]
    if batch_size % d:
        raise ValueError(f"batch_size {batch_size} is not divisible by the data axis ({d} devices)")
    if dict_size % m:
        raise ValueError(f"dict_size {dict_size} is not divisible by the model axis ({m} devices)")


def global_batch(local_BCD: np.ndarray, mesh: Mesh) -> jax.Array:
    """The global batch from this process's rows (process p holds the p-th block of the batch)."""
    sharding = batch_sharding(mesh)
    shape = (local_BCD.shape[0] * jax.process_count(), *local_BCD.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local_BCD, shape)
