"""The cost planner's arithmetic against hand-computed figures, and its launch script."""

import subprocess
import sys

import pytest

from conftest import ROOT, subprocess_env
from crosscoder_jax.training import plan


def _plan(**kw):
    base = dict(n_layers=12, d_model=768, d_ff=3072, context=2048, layer=6, checkpoints=32,
                store_tokens=800_000_000, train_tokens=800_000_000, dict_size=24576, k=50, sparse=True)
    return plan.Plan(**{**base, **kw})


def test_figures_by_hand():
    p = _plan()
    d = 768
    assert plan.forward_flops_per_token(p) == 2 * 7 * (4 * d * d + 2 * d * 3072 + 2048 * d)
    assert plan.step_flops_per_token(p) == 2 * 32 * d * 24576 + 8 * 50 * 32 * d
    assert plan.step_flops_per_token(_plan(sparse=False)) == 12 * 32 * d * 24576
    r = plan.estimate(p, peak_tflops=100.0, utilisation=0.5, batch_size=2048)
    assert r["store_bytes"] == 800_000_000 * (32 * d * 2 + 8)  # ~39 TB, the Evolution of Concepts store
    assert r["store_bytes"] == pytest.approx(39.3e12, rel=0.01)
    assert r["harvest_hours"] == pytest.approx(r["harvest_flops"] / 50e12 / 3600)
    # one run, one epoch: the same compute either way, live needs no store
    assert r["store_route_hours"] == pytest.approx(r["live_route_hours"]) and r["cheaper"].startswith("live")
    # a store trained on by 4 runs pays its forward passes once
    r4 = plan.estimate(_plan(runs=4), 100.0, 0.5)
    assert r4["cheaper"] == "store" and r4["live_route_hours"] > 2 * r4["store_route_hours"]


def test_launch_plan_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "launch.plan", "--config=configs/plan.py:pythia_160m_x32",
                          "--config.accelerator=tpu-v5e"], cwd=ROOT, env=subprocess_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| store size (bfloat16) | 39.3 TB |" in out.stdout and "tpu-v5e at 197 TFLOP/s" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "launch.plan", "--config.accelerator=abacus"], cwd=ROOT,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown accelerator 'abacus'" in bad.stderr
