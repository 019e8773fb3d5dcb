"""Our jitted train step against a straightforward PyTorch crosscoder step, same math, same data.

  python benchmarks/bench_vs_torch.py [--C 3 --Ds 512,2048 --F 16384 --batch 4096 --steps 2]

The PyTorch side is written here the way dictionary_learning and the paper's code write it: dense
encoder einsum, ReLU (l1) or a flattened `torch.topk` over the whole batch's scores plus a scatter
(batchtopk), dense decoder einsum, float32, `torch.optim.Adam`, `clip_grad_norm_(1.0)`. Both sides
start from the same parameters (ours' init copied into torch) and train on the same resident batch.
AuxK is left out on both sides: ours runs with `dead_tokens` = 2**30 (no latent can go dead in a
few steps), so its AuxK branch is never taken, and the torch side has none. The l1 penalty weight
is constant (no warm-up) on both sides so their first-step losses agree (the `loss rel diff`
column is a parity check). `torch.set_num_threads` = the core count.

Per (activation, D): every variant (ours float32, ours bf16 operands, torch float32) is warmed up
once, then they are timed in rotation, `steps` rounds; in each round a variant runs `block`
consecutive steps and the last `block - 1` are timed (the first re-warms memory the other variants
used in between: stepping variants one step each, XLA's CPU runtime re-faulted its large
temporaries every step, which never happens in a training run). The median step time is reported.
Everything is in one process, so load from other users hits all variants alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402


def ours(activation: str, C: int, D: int, F: int, batch: int, k: int, matmul_dtype: str, x_np: np.ndarray):
    """(step callable returning the loss, initial params as numpy)."""
    c = get_config()
    c.dict_size, c.batch_size, c.steps, c.activation, c.k = F, batch, 1000, activation, k
    c.matmul_dtype, c.dead_tokens, c.sparsity_warmup_frac = matmul_dtype, 2 ** 30, 0.0
    mesh = sharding.make_mesh(-1, 1)
    _, key, _, _, init_fn, step_fn = build(c, C, D, np.ones(C), mesh)
    box = {"state": init_fn(key)}
    params0 = {k_: np.asarray(v) for k_, v in box["state"].params.items()}
    x = sharding.global_batch(x_np, mesh)

    def step():
        box["state"], m = step_fn(box["state"], x)
        return float(m["loss"])  # blocks

    return step, params0


def theirs(activation: str, params0: dict, x_np: np.ndarray, k: int, l1_coeff: float = 2.0):
    import torch

    W_enc = torch.nn.Parameter(torch.tensor(params0["W_enc"]))   # [C, D, F]
    b_enc = torch.nn.Parameter(torch.tensor(params0["b_enc"]))   # [F]
    W_dec = torch.nn.Parameter(torch.tensor(params0["W_dec"]))   # [F, C, D]
    b_dec = torch.nn.Parameter(torch.tensor(params0["b_dec"]))   # [C, D]
    ps = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(ps, lr=5e-5, betas=(0.9, 0.999))
    x = torch.tensor(x_np)
    B = x.shape[0]

    def loss_fn():
        pre = torch.einsum("bcd,cdf->bf", x, W_enc) + b_enc
        dn = W_dec.norm(dim=-1).sum(-1)  # [F]
        relu = torch.relu(pre)
        if activation == "l1":
            f = relu
        else:  # batchtopk, as dictionary_learning: top k*B of relu(pre) * decoder norm over the batch
            scores = (relu * dn).flatten()
            idx = scores.topk(k * B, sorted=False).indices
            f = torch.zeros_like(scores).scatter_(-1, idx, relu.flatten()[idx]).view(B, -1)
        xhat = torch.einsum("bf,fcd->bcd", f, W_dec) + b_dec
        loss = (xhat - x).pow(2).sum(dim=(1, 2)).mean()
        if activation == "l1":
            loss = loss + l1_coeff * (f * dn).sum(-1).mean()
        return loss

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ps, 1.0)
        opt.step()
        return float(loss.detach())

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--C", type=int, default=3)
    ap.add_argument("--Ds", default="512,2048")
    ap.add_argument("--F", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2, help="timed rounds per variant (after one warm-up)")
    ap.add_argument("--block", type=int, default=2, help="consecutive steps per variant and round; the first untimed")
    ap.add_argument("--activations", default="l1,batchtopk")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count())
    rows = []
    for D in [int(d) for d in a.Ds.split(",")]:
        x_np = np.random.default_rng(0).normal(size=(a.batch, a.C, D)).astype(np.float32)
        for act in a.activations.split(","):
            ours32, p0 = ours(act, a.C, D, a.F, a.batch, a.k, "float32", x_np)
            ours16, _ = ours(act, a.C, D, a.F, a.batch, a.k, "bfloat16", x_np)
            torch_step = theirs(act, p0, x_np, a.k)
            del p0
            variants = {"ours f32": ours32, "ours bf16": ours16, "torch f32": torch_step}
            first = {n: fn() for n, fn in variants.items()}  # warm-up (compile); first-step losses
            times = {n: [] for n in variants}
            for _ in range(a.steps):
                for n, fn in variants.items():
                    fn()
                    for _ in range(a.block - 1):
                        t = time.perf_counter()
                        fn()
                        times[n].append(time.perf_counter() - t)
            s = {n: float(np.median(v)) for n, v in times.items()}
            rel = abs(first["ours f32"] - first["torch f32"]) / abs(first["torch f32"])
            rows.append((act, D, s, rel))
            print(f"# done {act} D={D}: " + ", ".join(f"{n} {v:.2f}s" for n, v in s.items()), file=sys.stderr,
                  flush=True)
            del variants, ours32, ours16, torch_step
    print(f"# {os.cpu_count()}-core {jax.devices()[0].platform}, jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); C={a.C} F={a.F} batch={a.batch} k={a.k}; {a.steps} rounds of "
          f"{a.block} consecutive steps per variant, median of the last {a.block - 1} of each; AuxK off on both sides")
    print("| activation | D | torch f32 tok/s | ours f32 tok/s | ours bf16 tok/s | ours f32 / torch | "
          "ours bf16 / torch | loss rel diff (step 0) |")
    print("|---|---|---|---|---|---|---|---|")
    for act, D, s, rel in rows:
        tt, o32, o16 = (a.batch / s[n] for n in ("torch f32", "ours f32", "ours bf16"))
        print(f"| {act} | {D} | {tt:.0f} | {o32:.0f} | {o16:.0f} | {o32 / tt:.2f} | {o16 / tt:.2f} | {rel:.1e} |")


if __name__ == "__main__":
    main()
