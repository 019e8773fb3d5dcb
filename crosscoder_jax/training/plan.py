"""What a crosscoder run costs before it runs: store bytes, FLOPs, device-hours, store or live.

A run either harvests activations once into a store and trains on it (`store`), or recomputes
them during training (`live`, nothing on disk). The arithmetic (per token, C snapshots, hook after block L
of a model with n_layers blocks of width d, MLP width d_ff, context T):

  forward to the layer   2 (L + 1) (4 d^2 + 2 d d_ff + T d)   FLOPs per token and snapshot
                         (attention projections, MLP, and the causal attention scores, T/2 keys
                          on average for QK^T and AV; embeddings are lookups)
  crosscoder step        dense:  6 * 2 C D F per token (encoder and decoder, forward and backward)
                         sparse top-k (k <= F / 64, `sparse_step.applies`): 2 C D F for the encoder
                          forward plus ~8 k C D for the kept entries' decode and gradients
  optimizer              ~16 FLOPs per parameter per step (Adam), 2 C D F parameters
  store                  N C D bytes-per-value (+ 8 N for tokens and positions)

Device-hours divide FLOPs by `peak x utilisation` of the named accelerator (dense bf16 peaks from
the vendors' data sheets; "cpu" is this machine's measured matmul peak). `store` pays the forward
passes once per stored token and then reads them back for every run and epoch; `live` pays them
for every token of every run. The rule of thumb that falls out: live costs `runs x epochs` times
the harvest's forward FLOPs where the store costs them once plus its bytes, so the store wins
when a store is trained on more than once (several runs, several epochs) or when the forward to
the layer costs more than the crosscoder step; live wins when the bytes are the limit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# name: (n_layers, d_model, d_ff, context), public configs
MODELS = {
    "pythia-70m": (6, 512, 2048, 2048), "pythia-160m": (12, 768, 3072, 2048),
    "pythia-410m": (24, 1024, 4096, 2048), "pythia-1b": (16, 2048, 8192, 2048),
    "pythia-1.4b": (24, 2048, 8192, 2048), "pythia-2.8b": (32, 2560, 10240, 2048),
    "pythia-6.9b": (32, 4096, 16384, 2048), "pythia-12b": (36, 5120, 20480, 2048),
    "olmo-1b": (16, 2048, 8192, 2048), "bloom-1b1": (24, 1536, 6144, 2048),
    "gpt2": (12, 768, 3072, 1024), "gpt2-medium": (24, 1024, 4096, 1024),
    "llama-2-7b": (32, 4096, 11008 * 3 // 2, 4096),  # gated MLP: three d x d_ff matrices
}

# dense bf16 TFLOP/s per device (vendor data sheets, without structured sparsity)
ACCELERATORS = {
    "h100": 989.0, "h200": 989.0, "a100": 312.0, "l4": 121.0, "v100": 125.0,
    "tpu-v4": 275.0, "tpu-v5e": 197.0, "tpu-v5p": 459.0, "tpu-v6e": 918.0,
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Inputs of a cost estimate (see the module docstring)."""

    n_layers: int
    d_model: int
    d_ff: int
    context: int
    layer: int
    checkpoints: int
    store_tokens: int
    train_tokens: int
    dict_size: int
    k: int
    sparse: bool
    bytes_per_value: int = 2
    runs: int = 1


def forward_flops_per_token(p: Plan) -> float:
    """FLOPs of one snapshot's forward pass up to the hooked layer, per token."""
    d = p.d_model
    return 2.0 * (p.layer + 1) * (4 * d * d + 2 * d * p.d_ff + p.context * d)


def step_flops_per_token(p: Plan) -> float:
    """Crosscoder training FLOPs per token (optimizer included at its per-token share)."""
    CD, F = p.checkpoints * p.d_model, p.dict_size
    if p.sparse:
        core = 2.0 * CD * F + 8.0 * p.k * CD
    else:
        core = 12.0 * CD * F
    return core


def optimizer_flops(p: Plan, batch_size: int) -> float:
    """Adam FLOPs over a whole run (per step, every parameter)."""
    return 16.0 * 2 * p.checkpoints * p.d_model * p.dict_size * (p.train_tokens / batch_size)


def estimate(p: Plan, peak_tflops: float, utilisation: float, batch_size: int = 4096) -> dict[str, Any]:
    """FLOPs, bytes and device-hours of the store and live routes for `runs` crosscoders."""
    rate = peak_tflops * 1e12 * utilisation
    fwd = forward_flops_per_token(p) * p.checkpoints
    harvest = fwd * p.store_tokens
    train = step_flops_per_token(p) * p.train_tokens + optimizer_flops(p, batch_size)
    live_fwd = fwd * p.train_tokens
    store_bytes = p.store_tokens * (p.checkpoints * p.d_model * p.bytes_per_value + 8)
    hours = lambda flops: flops / rate / 3600.0  # noqa: E731
    store_route = harvest + p.runs * train
    live_route = p.runs * (train + live_fwd)
    return {
        "store_bytes": store_bytes,
        "harvest_flops": harvest, "train_flops": train, "live_forward_flops": live_fwd,
        "forward_share_live": live_fwd / (train + live_fwd),
        "harvest_hours": hours(harvest), "train_hours": hours(train),
        "store_route_hours": hours(store_route), "live_route_hours": hours(live_route),
        "epochs": p.train_tokens / p.store_tokens,
        "cheaper": ("store" if store_route < 0.999 * live_route else "live" if live_route < 0.999 * store_route
                    else "live (the same compute, and no store to hold)"),
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} PB"
