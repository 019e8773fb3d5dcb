"""Devices for the batch-parallel programs of every stage, and multi-host start-up.

Harvest, evaluation and attribution run the same program on every prompt or context, so they split
the leading (batch) axis over all devices of a one-axis "data" mesh and let XLA partition the rest.
The training mesh, with its latent (and snapshot) axes and the map from train state to shardings,
lives in `training.sharding`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"

_DATA_MESH: list[Mesh] = []


def data_mesh() -> Mesh:
    """A one-axis ("data") mesh over all devices of every process (built once)."""
    if not _DATA_MESH:
        _DATA_MESH.append(Mesh(np.asarray(jax.devices()), (DATA,)))
    return _DATA_MESH[0]


def local_data_mesh() -> Mesh:
    """A one-axis ("data") mesh over this process's devices only: programs on it run without the
    other processes (each process computes its own live activations)."""
    if jax.process_count() == 1:
        return data_mesh()
    return Mesh(np.asarray(jax.local_devices()), (DATA,))


def shard_leading(x, mesh: Mesh | None = None):
    """Places an array with a leading batch axis split over the mesh's data axis (replicated when
    the batch does not divide); the jitted programs that take it then run batch-parallel."""
    mesh = mesh if mesh is not None else data_mesh()
    n = mesh.shape[DATA]
    spec = P(DATA, *([None] * (np.ndim(x) - 1))) if n > 1 and np.shape(x)[0] % n == 0 else P()
    return jax.device_put(x, NamedSharding(mesh, spec))


def initialize_distributed(coordinator: str, num_processes: int, process_id: int,
                           cpu_collectives: str = "gloo") -> None:
    """Joins a multi-host job (call before anything touches a device). On CPU the collectives go
    through gloo, so several local processes form one job (what the tests do)."""
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator, num_processes, process_id)
