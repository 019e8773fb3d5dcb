"""Sharded equals unsharded: (data x snapshot x latent) meshes 2x2x2, 1x4x2, 1x8x1, 8x1x1 on 8 fake CPU
devices against one device, every activation function; and each device holds 1/8 of the encoder."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import ROOT, subprocess_env
from crosscoder_jax.training import sharding


def _sharded_equals_unsharded(*activations, expected: int):
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "sharded_check.py"), *activations],
                         env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert len(result) == expected
    for name, r in result.items():
        assert r["params"] < 1e-5 and r["state"] < 1e-5 and r["dead_equal"], (name, r)
        # ZeRO: every mesh splits the encoder into 8 (data along F); without ZeRO data replicates it
        assert r["W_enc_share"] == (1.0 if "no-zero" in name else 1 / 8), (name, r)
    return result


def test_meshes_give_the_same_parameters_after_20_steps():
    """The sparse top-k step (batch and per-row selection) on every mesh, and the dense autodiff step
    (l1) on the mesh that splits all three axes (every mesh for it and jumprelu: the slow test)."""
    result = _sharded_equals_unsharded("batchtopk", "topk", "l1@2x2x2", expected=11)
    # ZeRO splits F inside each latent block, the major axis of W_dec and of both weight gradients
    assert result["batchtopk 2x2x2"]["specs"] == {"W_enc": str(P("snapshot", None, ("latent", "data"))),
                                                  "W_dec": str(P(("latent", "data"), "snapshot", None)),
                                                  "b_dec": str(P("snapshot", "data"))}


@pytest.mark.slow
def test_meshes_give_the_same_parameters_after_20_steps_dense_paths():
    """l1 and jumprelu (the dense autodiff path, jumprelu with its latent-split threshold) on every mesh."""
    _sharded_equals_unsharded("l1", "jumprelu", expected=10)


def test_partition_specs_follow_the_mesh_and_divisibility():
    mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    leaf = jax.ShapeDtypeStruct((3, 16, 64), np.float32)
    path = (jax.tree_util.DictKey("W_enc"),)
    assert sharding.partition_spec(path, leaf, mesh) == P(None, None, None)
    assert sharding.partition_spec((jax.tree_util.DictKey("other"),), leaf, mesh) == P()
    with pytest.raises(ValueError, match="snapshot axis"):
        sharding.check_divisible(FakeMesh(1, 2, 1), 64, 64, 3)
    with pytest.raises(ValueError, match="latent axis"):
        sharding.check_divisible(FakeMesh(1, 1, 3), 64, 64, 3)
    with pytest.raises(ValueError, match="devices present"):
        sharding.make_mesh(2, 1, 1, devices=jax.devices()[:1])


class FakeMesh:
    def __init__(self, data, snapshot, latent):
        self.shape = {"data": data, "snapshot": snapshot, "latent": latent}
