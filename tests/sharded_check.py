"""Run by test_sharding.py in a subprocess with 8 fake CPU devices: the jitted train step on
(data x snapshot x latent) meshes 2x2x2, 1x4x2, 1x8x1, 8x1x1 (ZeRO on, and 8x1x1 also with it off)
from the same init and batches; prints the relative difference of the parameters after 20 steps
against one device, as JSON. topk and batchtopk train through the sparse step (per device under
shard_map) and are compared with the dense autodiff step on one device."""

import json
import sys

import jax
import numpy as np

from configs.crosscoder import get_config
from crosscoder_jax.training import sharding
from crosscoder_jax.crosscoder import sparse_step
from crosscoder_jax.training.train import build

C, D, B = 8, 16, 64
F_SPARSE, F_DENSE = 512, 64  # k = 4 of 512 takes the sparse top-k step; l1 and jumprelu stay small
MESHES = ((2, 2, 2, True), (1, 4, 2, True), (1, 8, 1, True), (8, 1, 1, True), (8, 1, 1, False))


def run(activation, mesh_shape, steps=20, sparse=True):
    c = get_config()
    c.sparse_decode = sparse
    F = F_SPARSE if activation in ("topk", "batchtopk") else F_DENSE
    c.dict_size, c.k, c.batch_size, c.steps, c.lr = F, 4, B, steps, 1e-2
    c.activation, c.dead_tokens, c.threshold_start_step = activation, 128, 5
    c.matmul_dtype = "float32"  # the bound (1e-5) is for float32; bf16 rounds reduction-order noise up
    data, snap, latent, zero = mesh_shape
    c.mesh.zero = zero
    mesh = sharding.make_mesh(data, snap, latent, devices=jax.devices()[:data * snap * latent])
    scales = np.linspace(0.5, 2.0, C)
    spec, key, _, shardings, init_fn, step_fn = build(c, C, D, scales, mesh)
    assert sparse_step.applies(spec) == (sparse and activation in ("topk", "batchtopk"))
    state = init_fn(key)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = (rng.normal(size=(B, C, D)) * rng.random((B, 1, 1))).astype(np.float32)
        state, metrics = step_fn(state, sharding.global_batch(x, mesh))
    for name in ("W_enc", "W_dec", "b_dec"):
        assert state.params[name].sharding.spec == shardings.params[name].spec
    placed = {k: str(state.params[k].sharding.spec) for k in ("W_enc", "W_dec", "b_dec")}
    per_device = max(s.data.size for s in state.params["W_enc"].addressable_shards)
    return (jax.device_get(state.params), jax.device_get(state.act_state), jax.device_get(state.since_fired),
            placed, per_device)


def main():
    assert len(jax.devices()) == 8, jax.devices()
    out = {}
    for arg in sys.argv[1:]:  # "batchtopk" (every mesh) or "l1@2x2x2" (only the meshes named)
        activation, _, only = arg.partition("@")
        ref_p, ref_s, ref_d, _, full = run(activation, (1, 1, 1, True), sparse=False)
        for shape in MESHES:
            name = "x".join(map(str, shape[:3])) + ("" if shape[3] else " no-zero")
            if only and name not in only.split(","):
                continue
            p, s, d, placed, per_device = run(activation, shape)
            rel = max(float(np.linalg.norm(p[k] - ref_p[k]) / max(np.linalg.norm(ref_p[k]), 1e-30)) for k in p)
            rel_state = max([abs(float(s[k]) - float(ref_s[k])) / max(abs(float(ref_s[k])), 1e-30) for k in s] or [0.0])
            out[f"{activation} {name}"] = {"params": rel, "state": rel_state, "dead_equal": bool(np.array_equal(d, ref_d)),
                                           "specs": placed, "W_enc_share": per_device / full}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
