"""Print what a crosscoder run will cost: store size, harvest and training FLOPs, device-hours on a
named accelerator, and whether storing activations or computing them live is cheaper.

  python -m launch.plan --config=configs/plan.py                 # the paper's Pythia-1B triplet
  python -m launch.plan --config=configs/plan.py:pythia_160m_x32 --config.accelerator=tpu-v5e
"""

import json
from pathlib import Path

from absl import app
from ml_collections import config_flags

from launch import _logs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/plan.py", "planner config")


def _shape(model: str) -> tuple[int, int, int, int]:
    from crosscoder_jax.training import plan

    if model in plan.MODELS:
        return plan.MODELS[model]
    cfg = Path(model) / "config.json"
    if not cfg.exists():
        raise SystemExit(f"plan: unknown model {model!r}: use one of {', '.join(plan.MODELS)} or a directory "
                         "holding a Hugging Face config.json")
    h = json.loads(cfg.read_text())
    d = int(h.get("hidden_size") or h["n_embd"])
    return (int(h.get("num_hidden_layers") or h["n_layer"]), d, int(h.get("intermediate_size") or 4 * d),
            int(h.get("max_position_embeddings") or h.get("n_positions") or 2048))


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax.training import plan

    c = _CONFIG.value
    n_layers, d, d_ff, ctx = _shape(c.model)
    if not 0 <= c.layer < n_layers:
        raise SystemExit(f"plan: layer {c.layer} is outside {c.model}'s {n_layers} blocks")
    if c.accelerator == "cpu":
        from crosscoder_jax.runtime import matmul_choice
        peak = max(matmul_choice.probe().values()) / 1000.0
    elif c.accelerator in plan.ACCELERATORS:
        peak = plan.ACCELERATORS[c.accelerator]
    else:
        raise SystemExit(f"plan: unknown accelerator {c.accelerator!r}: {', '.join(plan.ACCELERATORS)} or cpu")
    sparse = c.activation in ("topk", "batchtopk") and c.k <= c.dict_size / 64
    p = plan.Plan(n_layers=n_layers, d_model=d, d_ff=d_ff, context=ctx, layer=c.layer, checkpoints=c.checkpoints,
                  store_tokens=c.store_tokens, train_tokens=c.train_tokens, dict_size=c.dict_size, k=c.k,
                  sparse=sparse, bytes_per_value=2 if c.dtype == "bfloat16" else 4, runs=c.runs)
    r = plan.estimate(p, peak, c.utilisation, c.batch_size)
    wall = lambda h: h / max(c.devices, 1)  # noqa: E731
    print(f"{c.model} layer {c.layer}, C {c.checkpoints} (D {d}), F {c.dict_size}, {c.activation} k {c.k} "
          f"({'sparse' if sparse else 'dense'} step), {c.store_tokens:,} stored / {c.train_tokens:,} trained tokens "
          f"({r['epochs']:.2g} epochs), {c.runs} run(s); {c.accelerator} at {peak:.0f} TFLOP/s x {c.utilisation:.0%}, "
          f"{c.devices} device(s)")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| store size ({c.dtype}) | {plan.human_bytes(r['store_bytes'])} |")
    print(f"| harvest: forward to the layer, every snapshot | {r['harvest_flops']:.3g} FLOPs, "
          f"{r['harvest_hours']:.3g} device-h |")
    print(f"| training, one run | {r['train_flops']:.3g} FLOPs, {r['train_hours']:.3g} device-h |")
    print(f"| store route: harvest + {c.runs} run(s) | {r['store_route_hours']:.3g} device-h "
          f"({wall(r['store_route_hours']):.3g} h wall), plus {plan.human_bytes(r['store_bytes'])} of storage |")
    print(f"| live route: {c.runs} run(s) recomputing activations | {r['live_route_hours']:.3g} device-h "
          f"({wall(r['live_route_hours']):.3g} h wall); forward passes {r['forward_share_live']:.0%} of it |")
    print(f"| cheaper in device-hours | {r['cheaper']} |")


if __name__ == "__main__":
    app.run(main)
