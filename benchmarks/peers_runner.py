"""Trains one peer SAE library through its own trainer on in-memory activations; prints one JSON line.

  .venv-peers/bin/python benchmarks/peers_runner.py LIB TRAIN.npy EVAL.npy --steps N --batch B --F F --k K
      --lr LR --decay_start S --threshold_start T --threshold_beta BETA --warmup W

LIB is `sparsify` (EleutherAI sparsify, TopK through `sparsify.Trainer`), `dictionary_learning`
(`BatchTopKTrainer` through `dictionary_learning.training.trainSAE`) or `sae_lens` (`BatchTopKTrainingSAE`
through `sae_lens.SAETrainer`). Run by `bench_vs_peers.py` with the `.venv-peers` interpreter (torch);
this file imports torch and the peers only inside the functions, so the benchmark (JAX venv) can
import `evaluate` from here and every library is scored by the same code.

TRAIN.npy holds [N, D] float32 rows (N a multiple of B): batch i is rows (i mod N/B)*B onwards, in
order (the rows are i.i.d. draws). Timing: a time stamp as each step asks for its data (the peer's
data iterator, or sparsify's model forward); steady tokens/s = B * (steps - 1 - W) / (t[steps-1] - t[W]),
the steps after the first W. FVU and L0 are measured on EVAL.npy with the trained SAE's inference
encoder (`evaluate`). The result goes to stdout as one line `PEER_RESULT {json}` (the libraries
print too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from importlib import metadata
from typing import Callable

import numpy as np

DEAD_TOKENS = 10_000_000   # a latent silent this many tokens is dead (ours, dictionary_learning, sparsify)
AUX_ALPHA = 1.0 / 32.0      # AuxK weight (ours, dictionary_learning; set on sparsify, whose default is 0)


def evaluate(x_ND: np.ndarray, encode_decode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
             chunk: int = 1024) -> tuple[float, float]:
    """(FVU, L0) of an SAE on held-out rows x [N, D]: FVU = sum ||x - xhat||^2 / sum ||x - mean(x)||^2
    over the rows, L0 = mean nonzero codes per row. `encode_decode(x_chunk)` returns the inference
    reconstruction [n, D] and the codes [n, F] (or just the per-row nonzero counts [n])."""
    x = np.asarray(x_ND, np.float64)
    err, nnz = 0.0, 0.0
    for s in range(0, len(x), chunk):
        xhat, codes = encode_decode(np.ascontiguousarray(x_ND[s:s + chunk]))
        err += float(np.sum(np.square(x[s:s + chunk] - np.asarray(xhat, np.float64))))
        codes = np.asarray(codes)
        nnz += float(np.sum(codes != 0) if codes.ndim == 2 else np.sum(codes))
    var = float(np.sum(np.square(x - x.mean(axis=0, keepdims=True))))
    return err / var, nnz / len(x)


def steady_tokens_per_s(stamps: list[float], steps: int, batch: int, warmup: int) -> tuple[float, int]:
    """Tokens/s over steps warmup .. steps-2 from the per-step start stamps; (value, steps timed)."""
    if len(stamps) < steps:
        raise RuntimeError(f"{len(stamps)} step stamps for {steps} steps: the trainer ran fewer steps")
    n = steps - 1 - warmup
    if n < 1:
        raise ValueError(f"--warmup {warmup} leaves no step to time out of {steps}")
    return batch * n / (stamps[steps - 1] - stamps[warmup]), n


class Batches:
    """Iterable over [B, D] torch batches of the training rows, cycling; stamps each request."""

    def __init__(self, train, batch: int, stamps: list[float]):
        self.train, self.batch, self.stamps = train, batch, stamps
        self.n_batches = len(train) // batch

    def __iter__(self):
        i = 0
        while True:
            self.stamps.append(time.perf_counter())
            j = i % self.n_batches
            yield self.train[j * self.batch:(j + 1) * self.batch]
            i += 1


def run_sparsify(a, train, stamps):
    """EleutherAI sparsify: `Trainer(TrainConfig(SaeConfig(...)), dataset, model).fit()`.

    Its Trainer trains on a model's hooked module outputs. The "model" here is an embedding table
    holding the training rows: `input_ids` are row indices and the hooked module `embed` outputs
    the rows, so the Trainer runs unchanged (its hook, loss, optimizer, schedule, dead-latent
    bookkeeping). Sequences of L = 64 ids (B / L per batch), since batch_size counts sequences."""
    import torch
    from torch import nn
    from sparsify import SaeConfig, TrainConfig, Trainer

    seq = min(64, a.batch)
    assert a.batch % seq == 0

    class RowModel(nn.Module):
        def __init__(self, table):
            super().__init__()
            self.embed = nn.Embedding.from_pretrained(table, freeze=True)

        @property
        def base_model(self):
            return self

        @property
        def device(self):
            return self.embed.weight.device

        @property
        def dummy_inputs(self):
            return {"input_ids": torch.zeros(1, seq, dtype=torch.long)}

        def forward(self, input_ids, **_):
            stamps.append(time.perf_counter())
            return self.embed(input_ids)

    class RowIds(torch.utils.data.Dataset):
        def __init__(self, n_seqs, n_rows):
            self.n_seqs, self.n_rows = n_seqs, n_rows

        def __len__(self):
            return self.n_seqs

        def __getitem__(self, i):
            return {"input_ids": (torch.arange(seq) + i * seq) % self.n_rows}

    model = RowModel(train).to(a.device)
    dataset = RowIds(a.steps * (a.batch // seq), len(train))
    save_dir = os.path.join(a.tmp, "sparsify")
    cfg = TrainConfig(
        SaeConfig(activation="topk", num_latents=a.F, k=a.k),
        batch_size=a.batch // seq, loss_fn="fvu", optimizer="adam", lr=a.lr, lr_warmup_steps=0,
        auxk_alpha=AUX_ALPHA, dead_feature_threshold=DEAD_TOKENS, hookpoints=["embed"], init_seeds=[0],
        save_every=10 ** 9, log_to_wandb=False, save_dir=save_dir, run_name="bench")
    trainer = Trainer(cfg, dataset, model)
    stamps.clear()  # resolve_widths ran a dummy forward
    trainer.fit()
    sae = trainer.saes["embed"]

    @torch.no_grad()
    def encode_decode(x):
        top_acts, top_indices, _ = sae.encode(torch.from_numpy(x).to(a.device))
        return sae.decode(top_acts, top_indices).cpu().numpy(), (top_acts > 0).sum(-1).cpu().numpy()

    notes = (f"Trainer, optimizer=adam, lr_warmup_steps=0 (linear decay to 0 over the whole run), "
             f"{seq}-token sequences x {a.batch // seq}")
    return encode_decode, {"trainer": "Trainer (TopK)", "notes": notes}


def run_dictionary_learning(a, train, stamps):
    """dictionary_learning: `trainSAE(data, [{"trainer": BatchTopKTrainer, ...}], steps, save_dir=...)`;
    trainSAE keeps its trainers, so the trained SAE is read back from `save_dir/trainer_0/ae.pt` with
    `BatchTopKSAE.from_pretrained` (as its users do) and encodes with its threshold."""
    import torch
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE, BatchTopKTrainer
    from dictionary_learning.training import trainSAE

    save_dir = os.path.join(a.tmp, "dictionary_learning")
    config = {"trainer": BatchTopKTrainer, "steps": a.steps, "activation_dim": train.shape[1], "dict_size": a.F,
              "k": a.k, "layer": 0, "lm_name": "planted", "lr": a.lr, "auxk_alpha": AUX_ALPHA,
              "warmup_steps": 0, "decay_start": a.decay_start, "threshold_beta": a.threshold_beta,
              "threshold_start_step": a.threshold_start,
              "seed": 0, "device": "cpu"}
    trainSAE(Batches(train, a.batch, stamps), [config], steps=a.steps, use_wandb=False, save_dir=save_dir,
             normalize_activations=False, device="cpu", autocast_dtype=torch.float32)
    ae = BatchTopKSAE.from_pretrained(os.path.join(save_dir, "trainer_0", "ae.pt"), device="cpu")
    threshold = float(ae.threshold)
    if threshold < 0:
        raise RuntimeError(f"dictionary_learning's threshold was never set: raise --steps above "
                           f"--threshold_start ({a.threshold_start})")

    @torch.no_grad()
    def encode_decode(x):
        f = ae.encode(torch.from_numpy(x))  # use_threshold=True: the inference path
        return ae.decode(f).numpy(), (f != 0).sum(-1).numpy()

    notes = (f"trainSAE, lr constant then linear decay from step {a.decay_start}, threshold EMA (beta "
             f"{a.threshold_beta}) from step {a.threshold_start + 1} (theta {threshold:.4g})")
    return encode_decode, {"trainer": "BatchTopKTrainer (trainSAE)", "threshold": threshold, "notes": notes}


def run_sae_lens(a, train, stamps):
    """SAELens: `SAETrainer(cfg=SAETrainerConfig(...), sae=BatchTopKTrainingSAE(...), data_provider=iterator).fit()`;
    inference through its own conversion: `save_inference_model` (a JumpReLU SAE carrying the
    batch threshold) and `SAE.load_from_disk`."""
    import torch
    from sae_lens import SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, LoggingConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(0)
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=train.shape[1], d_sae=a.F, k=a.k, dtype="float32",
                                                          device="cpu"))
    decay_steps = a.steps - a.decay_start
    cfg = SAETrainerConfig(
        total_training_samples=a.steps * a.batch, train_batch_size_samples=a.batch, lr=a.lr, lr_end=a.lr,
        lr_scheduler_name="constant", lr_warm_up_steps=0, lr_decay_steps=decay_steps, device="cpu",
        dead_feature_window=math.ceil(DEAD_TOKENS / a.batch), logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(Batches(train, a.batch, stamps)))
    trainer.fit()
    threshold = float(sae.topk_threshold)
    out = os.path.join(a.tmp, "sae_lens")
    sae.save_inference_model(out)
    inf = SAE.load_from_disk(out, device="cpu")

    @torch.no_grad()
    def encode_decode(x):
        f = inf.encode(torch.from_numpy(x))
        return inf.decode(f).numpy(), (f != 0).sum(-1).numpy()

    notes = (f"SAETrainer, lr constant then linear decay over the last {decay_steps} steps, threshold EMA "
             f"(lr 0.01, from 0) from step 0 (theta {threshold:.4g}); inference as {type(inf).__name__}")
    return encode_decode, {"trainer": "BatchTopKTrainingSAE (SAETrainer)", "threshold": threshold, "notes": notes}


RUNNERS = {"sparsify": (run_sparsify, "eai-sparsify"),
           "dictionary_learning": (run_dictionary_learning, "dictionary-learning"),
           "sae_lens": (run_sae_lens, "sae-lens")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lib", choices=sorted(RUNNERS))
    ap.add_argument("train_npy")
    ap.add_argument("eval_npy")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--F", type=int, required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--decay_start", type=int, required=True, help="lr decays linearly to 0 from this step")
    ap.add_argument("--threshold_start", type=int, required=True, help="batchtopk threshold EMA start step")
    ap.add_argument("--threshold_beta", type=float, required=True, help="batchtopk threshold EMA decay")
    ap.add_argument("--warmup", type=int, required=True, help="steps left out of the timing")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="torch device of sparsify's run (cpu, cuda); the others run on cpu")
    a = ap.parse_args(argv)

    import torch

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    train_np = np.load(a.train_npy)
    if len(train_np) % a.batch:
        raise ValueError(f"{a.train_npy} has {len(train_np)} rows, not a multiple of the batch {a.batch}")
    train = torch.from_numpy(train_np)
    run, dist = RUNNERS[a.lib]
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(prefix=f"peer_{a.lib}_") as a.tmp:  # the peer's saves
        t0 = time.perf_counter()
        encode_decode, info = run(a, train, stamps)
        train_s = time.perf_counter() - t0
        tokens_per_s, timed = steady_tokens_per_s(stamps, a.steps, a.batch, a.warmup)
        fvu, l0 = evaluate(np.load(a.eval_npy), encode_decode)
    result = {"library": a.lib, "package": dist, "version": metadata.version(dist), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "tokens_per_s": tokens_per_s, "timed_steps": timed,
              "total_s": train_s, "fvu": fvu, "l0": l0, **info}
    sys.stdout.flush()
    print("PEER_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
