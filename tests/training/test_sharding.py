"""Sharded equals unsharded: meshes 8x1, 4x2, 1x8 on 8 fake CPU devices against one device."""

import json
import subprocess
import sys

from conftest import ROOT, subprocess_env


def test_meshes_give_the_same_parameters_after_20_steps():
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "sharded_check.py"), "batchtopk", "topk", "l1",
                          "jumprelu"], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert len(result) == 12
    for name, r in result.items():
        assert r["params"] < 1e-5 and r["state"] < 1e-5 and r["dead_equal"], (name, r)
