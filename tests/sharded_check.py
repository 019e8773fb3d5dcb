"""Run by test_sharding.py in a subprocess with 8 fake CPU devices: the jitted train step on meshes
1x1, 8x1, 4x2 and 1x8 (data x model) from the same init and batches; prints the relative
difference of the parameters after 20 steps against one device, as JSON."""

import json
import sys

import jax
import numpy as np

from configs.crosscoder import get_config
from crosscoder_jax.training import sharding
from crosscoder_jax.crosscoder.activations.select import single_device
from crosscoder_jax.training.train import build


def run(activation, mesh_shape, steps=20):
    c = get_config()
    c.dict_size, c.k, c.batch_size, c.steps, c.lr = 64, 4, 64, steps, 1e-2
    c.activation, c.dead_tokens, c.threshold_start_step = activation, 128, 5
    c.matmul_dtype = "float32"  # the bound (1e-5) is for float32; bf16 rounds reduction-order noise up
    data, model = mesh_shape
    mesh = sharding.make_mesh(data, model, devices=jax.devices()[:data * model])
    _, key, _, shardings, init_fn, step_fn = build(c, 3, 16, np.array([1.0, 2.0, 0.5]), mesh)
    state = init_fn(key)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = (rng.normal(size=(64, 3, 16)) * rng.random((64, 1, 1))).astype(np.float32)
        state, metrics = step_fn(state, sharding.global_batch(x, mesh))
    assert state.params["W_enc"].sharding.spec == shardings.params["W_enc"].spec
    return jax.device_get(state.params), jax.device_get(state.act_state), jax.device_get(state.since_fired)


def main():
    assert len(jax.devices()) == 8, jax.devices()
    assert not single_device()  # so the sharded runs take the partitionable top-k and dense decoding
    out = {}
    for activation in sys.argv[1:]:
        ref_p, ref_s, ref_d = run(activation, (1, 1))
        for shape in ((8, 1), (4, 2), (1, 8)):
            p, s, d = run(activation, shape)
            rel = max(float(np.linalg.norm(p[k] - ref_p[k]) / max(np.linalg.norm(ref_p[k]), 1e-30)) for k in p)
            rel_state = max([abs(float(s[k]) - float(ref_s[k])) / max(abs(float(ref_s[k])), 1e-30) for k in s] or [0.0])
            out[f"{activation} {shape[0]}x{shape[1]}"] = {"params": rel, "state": rel_state,
                                                          "dead_equal": bool(np.array_equal(d, ref_d))}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
