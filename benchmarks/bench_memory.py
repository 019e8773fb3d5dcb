"""Memory plan by compilation: the train step compiled ahead of time for fake meshes (no arrays are
allocated), its bytes per device from XLA's memory analysis next to the arithmetic lower bound.

  python benchmarks/bench_memory.py [--only NAME] [--matmul_dtype float32]

Re-executes itself with 64 fake CPU devices. Each configuration is lowered with abstract inputs
(`jax.ShapeDtypeStruct` carrying the shardings that `training.sharding` decides), compiled, and
`memory_analysis()` of the per-device program gives arguments + outputs + temporaries - aliased
(the state is donated, so its outputs alias its inputs): the peak a device must hold.

Lower bound per device, in bytes (float32 everywhere):
  4 * S          stored parameter shard S (floats), its gradient and the two Adam moments
  + G            the compute copy of the parameters that the ZeRO all-gather re-assembles (0 when
                 nothing is split over data); the sparse top-k step gathers only the decoder (it
                 streams the encoder's shards around the data ring and builds the weight gradients
                 shard by shard), so G is the decoder's copy plus the one encoder shard in flight
  + A            activations that must coexist: the batch and its reconstruction, [B/data, C/snapshot, D]
                 each, and the pre-activations and codes, [B/data, F/latent] each: 4 * (2 B_l C_l D + 2 B_l F_l)
The compiled size is measured on XLA's CPU backend (the only one here); the partitioning and the
buffers are those of an accelerator, the CPU's own relayouts and fusion choices add to its temporaries.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks import fake_devices  # noqa: E402

N_FAKE = 64
fake_devices.ensure(N_FAKE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.crosscoder import sparse_step  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402

GB = 1e9
DEVICE_GB = 16
# name: (C, D, F, batch, [(data, snapshot, latent), ...])
CONFIGS = {
    "Pythia-1B triplet": (3, 2048, 16384, 4096, [(1, 1, 1)]),
    "Pythia-160M x 32": (32, 768, 24576, 2048, [(1, 8, 1), (2, 2, 2), (8, 1, 1)]),
    "Pythia-1B x 32": (32, 2048, 65536, 4096, [(1, 8, 8), (2, 8, 4), (1, 32, 2)]),
    "million-latent triplet": (3, 2048, 2 ** 20, 4096, [(1, 1, 64), (4, 1, 16), (1, 3, 16)]),
}


def _floats_per_device(tree, shardings) -> int:
    return sum(int(np.prod(s.shard_shape(x.shape))) for x, s in
               zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


def plan(C: int, D: int, F: int, batch: int, mesh_shape: tuple[int, int, int], matmul_dtype: str) -> dict:
    """Compiled and lower-bound bytes per device of one train step."""
    data, snap, latent = mesh_shape
    devices = jax.devices()[: data * snap * latent]
    c = get_config()
    c.dict_size, c.batch_size, c.matmul_dtype = F, batch, matmul_dtype
    c.mesh.data, c.mesh.snapshot, c.mesh.latent = mesh_shape
    mesh = sharding.make_mesh(data, snap, latent, devices=devices)
    spec, _, abstract, shardings, _, step_fn = build(c, C, D, np.ones(C), mesh)
    state_in = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    x_in = jax.ShapeDtypeStruct((batch, C, D), jnp.float32, sharding=sharding.batch_sharding(mesh))
    mem = step_fn.lower(state_in, x_in).compile().memory_analysis()
    compiled = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                - mem.alias_size_in_bytes)
    S = _floats_per_device(abstract.params, shardings.params)
    gathered = 0
    if c.mesh.zero and data > 1:
        streamed = sharding.STREAMED if sparse_step.applies(spec) else ()
        compute = sharding.state_shardings(abstract.params, mesh, zero=False)
        gathered = 4 * sum(_floats_per_device(abstract.params[k], compute[k]) if k not in streamed else
                           _floats_per_device(abstract.params[k], shardings.params[k]) for k in abstract.params)
    B_l, C_l, F_l = batch // data, C // snap, F // latent
    acts = 4 * (2 * B_l * C_l * D + 2 * B_l * F_l)
    bound = 16 * S + gathered + acts
    return {"compiled": compiled, "bound": bound, "params": 16 * S, "gathered": gathered, "acts": acts,
            "temp": mem.temp_size_in_bytes, "args": mem.argument_size_in_bytes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="run only configurations whose name contains this")
    ap.add_argument("--matmul_dtype", default="float32", help="float32 | bfloat16 (operands of the matmuls)")
    a = ap.parse_args()
    print(f"backend {jax.default_backend()}, {len(jax.devices())} fake devices, jax {jax.__version__}, "
          f"matmul operands {a.matmul_dtype}; GB = 1e9 bytes per device")
    print("| configuration | mesh (data x snapshot x latent) | params+grad+Adam | gathered | activations "
          "| lower bound | compiled | compiled / bound | fits 16 GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (C, D, F, batch, meshes) in CONFIGS.items():
        if a.only and a.only not in name:
            continue
        for shape in meshes:
            r = plan(C, D, F, batch, shape, a.matmul_dtype)
            fits = "yes" if r["compiled"] <= DEVICE_GB * GB else ("no (bound too)" if r["bound"] > DEVICE_GB * GB else "no")
            print(f"| {name} (C {C}, D {D}, F {F}, batch {batch}) | {'x'.join(map(str, shape))} "
                  f"| {r['params'] / GB:.2f} | {r['gathered'] / GB:.2f} | {r['acts'] / GB:.2f} | {r['bound'] / GB:.2f} "
                  f"| {r['compiled'] / GB:.2f} | {r['compiled'] / r['bound']:.2f} | {fits} |", flush=True)


if __name__ == "__main__":
    main()
