"""Cost of IG attribution relative to one forward+backward of the model, and a whole small run.

  python benchmarks/bench_attribution.py [--N 16 --T 32 --layer 6 --F 16384 --repeats 2 --pairs 1000]

Part 1 (Pythia-160M-shaped GPT-NeoX, random weights, float32; crosscoder C = 3, l1, on layer
`layer`; N random prompts of T tokens): best-of-`repeats` seconds, all rows timed in rotation, of
  - one jitted forward+backward from the layer: grad of the logit-difference metric of
    `models.logits_from(resid)` w.r.t. the residual (the unit of work of one IG step);
  - the same with the unembedding applied at the last prompt position only (built here from
    `models.core` internals: what the metric actually needs);
  - `attribution.checkpoint_program` with AtP and with IG-10, one checkpoint, one batch;
  - `attribution.attribute` (IG-10) on the batch with 3 checkpoints, divided by 3 (per checkpoint,
    with the residual harvest and the encode).
Ideal IG-10 / forward+backward is ~10 (10 gradient evaluations of the same downstream network,
plus the decode and its transpose).

Part 2 (grammar-sized GPT-NeoX: d 96, 2 layers, 4 heads, vocab 161, like configs/pretrain.py;
crosscoder C = 3, F = `tiny_F`, layer 0; `pairs` minimal pairs of the synthetic language over
several tasks, 3 random checkpoints, IG-10, batch 32): wall time of `attribute` cold (first call,
compiles included) and warm (second call), the number of compilations of `checkpoint_program`, and
the share of warm wall time spent inside jitted calls (each jitted call of the run wrapped and
blocked: `_residual`, `checkpoint_program`; the rest is Python, eager ops and host transfers).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from crosscoder_jax import crosscoder, models  # noqa: E402
from crosscoder_jax.analysis import attribution  # noqa: E402
from crosscoder_jax.synthetic import pairs as grammar_pairs, vocab  # noqa: E402
from crosscoder_jax.crosscoder.export import Crosscoder  # noqa: E402
from crosscoder_jax.models import core  # noqa: E402
from crosscoder_jax.data.tasks import Prompts, build_prompts, logit_diff  # noqa: E402

PYTHIA_160M = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   vocab_size=50304, rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=2048)
TINY = dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=384, rotary_pct=0.25,
            max_position_embeddings=64, use_parallel_residual=True, vocab_size=len(vocab.VOCAB))


def make_cc(C: int, D: int, F: int, seed: int = 0) -> Crosscoder:
    spec = crosscoder.Spec(C, D, F, activation="l1")
    params = crosscoder.init_params(spec, jax.random.key(seed))
    return Crosscoder(params, {}, spec, np.ones(C), [f"c{i}" for i in range(C)], {})


@functools.partial(jax.jit, static_argnames="layer")
def fwd_bwd(lm, resid, prompts, layer):
    def m(r):
        return jnp.sum(logit_diff(models.logits_from(lm, r, prompts.mask_NT, layer=layer), prompts))
    return jax.grad(m)(resid)


@functools.partial(jax.jit, static_argnames="layer")
def fwd_bwd_last(lm, resid, prompts, layer):
    """Same metric, blocks after `layer` at every position but the unembedding at the last one."""
    def m(r):
        mask = prompts.mask_NT
        _, ctx = core._context(lm, mask)
        x = core._run_blocks(lm, r, ctx, layer + 1, lm.config.n_layers)
        n = jnp.arange(x.shape[0])
        x_last = x[n, prompts.last_N][:, None, :]
        logits = core.FAMILIES[lm.family].final(lm.params, lm.config, x_last)[:, 0].astype(jnp.float32)
        return jnp.sum(logits[n, prompts.patch_N] - logits[n, prompts.clean_N])
    return jax.grad(m)(resid)


def part1(a) -> list[tuple[str, float]]:
    cfg = models.config_for("gpt_neox", **PYTHIA_160M)
    lm = models.init_params("gpt_neox", cfg, jax.random.key(0))
    cc = make_cc(3, cfg.d_model, a.F)
    rng = np.random.default_rng(0)
    N, T = a.N, a.T
    ids = rng.integers(0, cfg.vocab_size, (N, T)).astype(np.int32)
    prompts = Prompts(ids, np.ones((N, T), np.int32), np.full(N, T - 1, np.int32),
                      rng.integers(0, cfg.vocab_size, N).astype(np.int32),
                      rng.integers(0, cfg.vocab_size, N).astype(np.int32))
    lms = [lm, lm, lm]  # same weights three times: the cost is what is measured
    batch = attribution.encode_batch(lms, cc, prompts, a.layer, True)
    dec = attribution.decoders(cc)[0]
    f_patch = jnp.zeros_like(batch.f_NTF)
    jp = Prompts(*(jnp.asarray(x) for x in prompts))
    resid = batch.a_CNTD[0]

    def program(method, steps):
        return attribution.checkpoint_program(lm, dec, batch.prompts, resid, batch.f_NTF, f_patch, batch.splice_NT,
                                              0.1, layer=a.layer, method=method, steps=steps, reduce="mean",
                                              zero_eps_patch=False)

    fns = {"forward+backward from the layer (logits at every position)":
           lambda: fwd_bwd(lm, resid, jp, a.layer),
           "forward+backward from the layer, unembedding at the last position only":
           lambda: fwd_bwd_last(lm, resid, jp, a.layer),
           "checkpoint_program AtP": lambda: program("atp", 1),
           f"checkpoint_program IG-{a.ig_steps}": lambda: program("ig", a.ig_steps),
           f"attribute() IG-{a.ig_steps} per checkpoint (3 checkpoints, incl. residuals + encode)":
           lambda: attribution.attribute(lms, cc, prompts, a.layer, method="ig", steps=a.ig_steps,
                                         batch_size=N)["ie"]}
    per = {n: (3 if n.startswith("attribute()") else 1) for n in fns}
    for fn in fns.values():  # warm-up: compiles
        jax.block_until_ready(fn())
    best = {n: float("inf") for n in fns}
    for _ in range(a.repeats):  # rotated, so load from other users hits every row alike
        for n, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[n] = min(best[n], (time.perf_counter() - t) / per[n])
    out = [(n, best[n]) for n in fns]
    return out


class Timed:
    """Wraps a jitted function: every call blocked and its time added up."""

    def __init__(self, fn):
        self.fn, self.total, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kw):
        t = time.perf_counter()
        out = jax.block_until_ready(self.fn(*args, **kw))
        self.total += time.perf_counter() - t
        self.calls += 1
        return out


def part2(a) -> dict:
    tok = vocab.hf_tokenizer()
    tasks = ["simple_agreement", "across_pp_attractor", "across_orc_attractor", "reflexive_agreement"]
    pairs = []
    for i, t in enumerate(tasks):
        pairs += grammar_pairs.make_pairs(t, a.pairs // len(tasks) + (i < a.pairs % len(tasks)))
    prompts, report = build_prompts(pairs, tok)
    cfg = models.config_for("gpt_neox", **TINY)
    lms = [models.init_params("gpt_neox", cfg, jax.random.key(s)) for s in range(3)]
    cc = make_cc(3, cfg.d_model, a.tiny_F)
    run = functools.partial(attribution.attribute, lms, cc, prompts, 0, method="ig", steps=a.ig_steps,
                            batch_size=32)
    orig_prog, orig_res = attribution.checkpoint_program, attribution._residual
    cache0 = orig_prog._cache_size()  # part 1 may have compiled it already (other model, other shapes)
    t = time.perf_counter()
    run()
    cold = time.perf_counter() - t
    n_compiles = orig_prog._cache_size() - cache0
    timed_prog, timed_res = Timed(orig_prog), Timed(orig_res)
    attribution.checkpoint_program, attribution._residual = timed_prog, timed_res
    try:
        t = time.perf_counter()
        run()
        warm = time.perf_counter() - t
    finally:
        attribution.checkpoint_program, attribution._residual = orig_prog, orig_res
    lengths = sorted({int(sub.ids_NT.shape[1]) for sub, _ in prompts.batches(32)})
    return {"n": prompts.n, "cold": cold, "warm": warm, "compiles": n_compiles, "lengths": lengths,
            "in_prog": timed_prog.total, "in_res": timed_res.total, "calls": timed_prog.calls + timed_res.calls}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=16, help="prompts per batch (part 1)")
    ap.add_argument("--T", type=int, default=32, help="prompt length (part 1)")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--F", type=int, default=16384)
    ap.add_argument("--ig_steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--tiny_F", type=int, default=512)
    ap.add_argument("--skip_part1", action="store_true")
    a = ap.parse_args()
    rows = [] if a.skip_part1 else part1(a)
    p2 = part2(a)
    print(f"# {os.cpu_count()}-core {jax.devices()[0].platform}, jax {jax.__version__}; part 1: Pythia-160M-shaped "
          f"GPT-NeoX, random, float32, crosscoder C=3 F={a.F} (l1) at layer {a.layer}, {a.N} prompts x {a.T} "
          f"tokens, best of {a.repeats} rotated rounds; part 2: grammar-sized GPT-NeoX (d 96, 2 layers, vocab "
          f"{TINY['vocab_size']}), C=3 F={a.tiny_F}, layer 0, {p2['n']} prompts, batch 32")
    print("| measurement | seconds | / forward+backward |")
    print("|---|---|---|")
    if rows:
        base = rows[0][1]
        for name, s in rows:
            print(f"| 160M: {name} | {s:.3f} | {s / base:.1f} |")
    print(f"| tiny: attribute() {p2['n']} pairs x 3 checkpoints x IG-{a.ig_steps}, cold (first call) | "
          f"{p2['cold']:.1f} | |")
    print(f"| tiny: same, warm (second call) | {p2['warm']:.2f} | |")
    print(f"| tiny: warm, inside jitted calls ({p2['calls']} blocked calls: checkpoint_program "
          f"{p2['in_prog']:.2f} s, _residual {p2['in_res']:.2f} s) | {p2['in_prog'] + p2['in_res']:.2f} | "
          f"share {(p2['in_prog'] + p2['in_res']) / p2['warm']:.2f} of warm wall |")
    print(f"| tiny: checkpoint_program compilations in the cold call (distinct padded lengths "
          f"{p2['lengths']}) | {p2['compiles']} | |")


if __name__ == "__main__":
    main()
