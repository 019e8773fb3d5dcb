"""The training mesh and the one function that maps train state to shardings.

The mesh is `data x snapshot x latent`: the batch is split over "data", the checkpoints (snapshots)
C over "snapshot", the latents F over "latent". `W_enc [C, D, F]` lives split over snapshot and
latent, `W_dec [F, C, D]` over latent and snapshot, `b_dec [C, D]` over snapshot: each device holds its
snapshots' slices of its latents. With `zero` (ZeRO-3 style) the large matrices and their Adam
moments are split over "data" too, along F inside each latent block, so data parallelism does not
replicate the dictionary; `gather_params` re-assembles a device's compute slice (one all-gather over
data) at the top of the step, and the gradient leaves the step reduce-scattered back to the stored
split. F is the major axis of `W_dec` and of both weight gradients as the sparse step builds them
([F, C D]), so that gather and reduce-scatter move contiguous blocks with no relayout copy of a
whole matrix (the D split they replace cost 2.24x the memory bound on an 8x1x1 mesh).

The math never names a device: `partition_spec` decides every placement from the leaf names and the
mesh, and XLA's partitioner inserts the collectives. The encoder pre-activation is the sum over
snapshot shards (one all-reduce of the [B/data, F/latent] partial sums), decoding is local, and the
exact top-k of `crosscoder.activations.select` is made of reductions, so it stays exact.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crosscoder_jax.crosscoder import activations, sparse_step
from crosscoder_jax.runtime.devices import DATA

SNAPSHOT = "snapshot"
LATENT = "latent"
AXES = (DATA, SNAPSHOT, LATENT)
_ZERO = "zero"  # placeholder: split over "data" too under ZeRO (minor to the axis before it)

# Mesh axis of each dimension, by leaf name; leaves not named here are replicated. Optimizer moments
# carry their parameter's name, so they are placed like it.
_LEAF_AXES = {
    "W_enc": (SNAPSHOT, None, (LATENT, _ZERO)),   # [C, D, F]
    "W_dec": ((LATENT, _ZERO), SNAPSHOT, None),   # [F, C, D]
    "b_dec": (SNAPSHOT, _ZERO),           # [C, D]
    "b_enc": (LATENT,),                   # [F]
    "log_threshold": (LATENT,),           # [F]
    "since_fired": (LATENT,),             # [F]
}


def make_mesh(data: int = -1, snapshot: int = 1, latent: int = 1, devices: list | None = None) -> Mesh:
    """A (data, snapshot, latent) mesh over all devices (of every process); one axis may be -1 (fill).

    Devices are laid out in `jax.devices()` order, latent fastest: with one device per process, the
    processes of a 1 x 2 x 1 mesh own different snapshots, those of a 2 x 1 x 1 mesh different rows."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    sizes = [data, snapshot, latent]
    if sizes.count(-1) > 1:
        raise ValueError("at most one mesh axis may be -1")
    if -1 in sizes:
        rest = int(np.prod([s for s in sizes if s != -1]))
        if rest < 1 or n % rest:
            raise ValueError(f"mesh {data}x{snapshot}x{latent} (data x snapshot x latent): the other axes take "
                             f"{rest} devices, which does not divide the {n} present, so the -1 axis cannot "
                             f"fill them; choose axes whose product divides {n}")
        sizes[sizes.index(-1)] = n // rest
    if int(np.prod(sizes)) != n or min(sizes) < 1:
        raise ValueError(f"mesh {data}x{snapshot}x{latent} (data x snapshot x latent) does not use the {n} "
                         f"devices present; choose axes whose product is {n}")
    return Mesh(np.asarray(devices).reshape(sizes), AXES)


def _leaf_name(path: tuple) -> str | None:
    for entry in reversed(path):
        name = getattr(entry, "key", None) or getattr(entry, "name", None)
        if isinstance(name, str):
            return name
    return None


def _spec(axes: tuple, shape: tuple, mesh: Mesh, zero: bool) -> P:
    out = []
    for axis, size in zip(axes, shape):
        names = [DATA if a == _ZERO else a for a in (axis if isinstance(axis, tuple) else (axis,))
                 if a is not None and (zero or a != _ZERO)]
        names = [a for a in names if mesh.shape[a] > 1]
        # an axis joins only while the product of the sizes divides the dimension (data, the minor one, last)
        kept: list[str] = []
        for a in names:
            if size % (int(np.prod([mesh.shape[k] for k in kept])) * mesh.shape[a]) == 0:
                kept.append(a)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out)


def partition_spec(path: tuple, leaf: Any, mesh: Mesh, zero: bool = True) -> P:
    """The PartitionSpec of one state leaf, from its name (the last dict key or attribute) and the
    mesh. A dimension is split only over mesh axes whose sizes divide it (`check_divisible` makes
    sure the batch, C and F do); under `zero` the F dimension of the matrices also goes over data,
    inside each latent block (where data's size does not divide that block, the matrix stays whole
    over data)."""
    axes = _LEAF_AXES.get(_leaf_name(path))
    shape = tuple(getattr(leaf, "shape", ()))
    if axes is None or len(shape) != len(axes):
        return P()
    return _spec(axes, shape, mesh, zero)


def state_shardings(state: Any, mesh: Mesh, zero: bool = True) -> Any:
    """NamedSharding for every leaf of a train state (params, optimizer moments, counters)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, partition_spec(p, x, mesh, zero)), state)


def gather_params(mesh: Mesh, streamed: tuple[str, ...] = ()) -> Callable[[dict], dict]:
    """params -> params placed for compute: the ZeRO split over data undone (an all-gather), the
    snapshot and latent splits kept; the leaves named in `streamed` stay as stored (the sparse step
    streams the encoder around the data ring itself). Used inside the jitted step; the identity
    without a data axis."""

    def gather(params: dict) -> dict:
        if mesh.shape[DATA] == 1:
            return params
        return {k: v if k in streamed else jax.lax.with_sharding_constraint(
            v, NamedSharding(mesh, partition_spec((jax.tree_util.DictKey(k),), v, mesh, zero=False)))
            for k, v in params.items()}

    return gather


STREAMED = ("W_enc",)  # leaves that `sparse_value_and_grad` takes as stored, split over data


def _split_over_data(spec: P) -> int | None:
    """The axis of a PartitionSpec that names the data axis (alone or joined), None if none does."""
    return next((j for j, e in enumerate(spec) if e == DATA or (isinstance(e, tuple) and DATA in e)), None)


def sparse_value_and_grad(mesh: Mesh, zero: bool = True) -> Callable:
    """`crosscoder.sparse_step.value_and_grad` run per device under `shard_map`, with the same
    signature and results as `jax.value_and_grad(core.loss_fn, has_aux=True)` on global arrays
    (aux has no "f_BF"). Params come in placed for compute (`gather_params`), but for those in
    `STREAMED`, which come in as stored; each gradient leaves summed over the data axis,
    reduce-scattered to its stored split where ZeRO splits it over data."""

    def leaf_spec(name: str, leaf, zero_: bool) -> P:
        return partition_spec((jax.tree_util.DictKey(name),), leaf, mesh, zero_)

    def vg(params, act_state, x_BCD, spec, step, dead_F):
        stored = {k: leaf_spec(k, v, zero) for k, v in params.items()}
        given = {k: stored[k] if k in STREAMED else leaf_spec(k, v, False) for k, v in params.items()}
        # collectives only over axes that split something
        axes = sparse_step.Axes(*(a if mesh.shape[a] > 1 else None for a in (DATA, SNAPSHOT, LATENT)),
                                ring=DATA if _split_over_data(given["W_enc"]) is not None else None)
        if axes.ring is not None and _split_over_data(stored["W_dec"]) is None:
            raise AssertionError("ZeRO splits W_enc over data but not W_dec")  # both split F alike

        def reduce_data(name, g, leaf_axes):
            """Sum over data; reduce-scattered along the axis that ZeRO splits over data in the stored
            leaf (g's axis i is the leaf's axis leaf_axes[i])."""
            if mesh.shape[DATA] == 1:
                return g
            split = _split_over_data(stored[name])
            if split is not None:
                return jax.lax.psum_scatter(g, DATA, scatter_dimension=leaf_axes.index(split), tiled=True)
            return jax.lax.psum(g, DATA)

        def local(params, act_state, x_BCD, step, dead_F):
            return sparse_step.value_and_grad(params, act_state, x_BCD, spec, step, dead_F, axes,
                                              n_tokens=x_BCD.shape[0] * mesh.shape[DATA], reduce_data=reduce_data)

        latent = P(LATENT) if mesh.shape[LATENT] > 1 else P()
        act_update = activations.get(spec.activation).kept_update(jnp.float32(0))
        aux_specs = {"terms": {"recon": P(), "auxk": P()}, "fvu": P(SNAPSHOT), "fired_F": latent, "l0": P(),
                     "act_update": jax.tree.map(lambda _: P(), act_update), "dropped": P()}
        return jax.shard_map(
            local, mesh=mesh, check_vma=False,
            in_specs=(given, jax.tree.map(lambda _: P(), act_state),
                      P(DATA, SNAPSHOT, None), P(), latent),
            out_specs=((P(), aux_specs), stored))(params, act_state, x_BCD, step, dead_F)

    return vg


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole value (small outputs each process reads)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Activations [B, C, D]: batch over data, checkpoints over snapshot."""
    return NamedSharding(mesh, P(DATA, SNAPSHOT, None))


def check_divisible(mesh: Mesh, batch_size: int, dict_size: int, n_checkpoints: int) -> None:
    for what, n, axis in (("batch_size", batch_size, DATA), ("dict_size", dict_size, LATENT),
                          ("the number of checkpoints", n_checkpoints, SNAPSHOT)):
        if n % mesh.shape[axis]:
            raise ValueError(f"{what} ({n}) is not divisible by the {axis} axis of the mesh "
                             f"({mesh.shape[axis]} devices); change it or --config.mesh.{axis}")


def local_block(mesh: Mesh, global_shape: tuple[int, int, int]) -> tuple[slice, slice]:
    """The rows and checkpoint columns of the global batch [B, C, D] that this process's devices
    hold: it reads exactly these from the store. Raises if they do not form one rectangle."""
    index = batch_sharding(mesh).addressable_devices_indices_map(global_shape)
    rows = sorted({(i[0].start or 0, i[0].stop or global_shape[0]) for i in index.values()})
    cols = sorted({(i[1].start or 0, i[1].stop or global_shape[1]) for i in index.values()})
    r0, r1, c0, c1 = rows[0][0], rows[-1][1], cols[0][0], cols[-1][1]
    covered = sum(b - a for a, b in rows) == r1 - r0 and sum(b - a for a, b in cols) == c1 - c0
    if not covered:
        raise ValueError(f"process {jax.process_index()} holds a non-contiguous part of the batch "
                         f"(rows {rows}, checkpoints {cols}); order the mesh devices by process")
    return slice(r0, r1), slice(c0, c1)


def global_batch(local_BCD: np.ndarray, mesh: Mesh, global_shape: tuple[int, int, int] | None = None,
                 block: tuple[slice, slice] | None = None) -> jax.Array:
    """The global batch [B, C, D] from this process's block of it (`local_block`; on one process
    the block is the whole batch and `global_shape` may be left out)."""
    sharding = batch_sharding(mesh)
    if global_shape is None:
        if jax.process_count() > 1:
            raise ValueError("several processes: pass the global batch shape")
        global_shape = local_BCD.shape
    rows, cols = block if block is not None else local_block(mesh, global_shape)
    if local_BCD.shape != (rows.stop - rows.start, cols.stop - cols.start, global_shape[2]):
        raise ValueError(f"this process's batch has shape {local_BCD.shape}; its block of the global batch "
                         f"{tuple(global_shape)} is rows {rows.start}:{rows.stop}, checkpoints {cols.start}:{cols.stop}")
    arrays = []
    for device, idx in sharding.addressable_devices_indices_map(tuple(global_shape)).items():
        r = slice((idx[0].start or 0) - rows.start, (idx[0].stop or global_shape[0]) - rows.start)
        c = slice((idx[1].start or 0) - cols.start, (idx[1].stop or global_shape[1]) - cols.start)
        arrays.append(jax.device_put(local_BCD[r, c], device))
    return jax.make_array_from_single_device_arrays(tuple(global_shape), sharding, arrays)
