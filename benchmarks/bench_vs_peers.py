"""Our `python -m launch.train` against three peer SAE libraries, each through its own trainer, same data.

  .venv/bin/python benchmarks/bench_vs_peers.py --setup      # once: .venv-peers with torch 2.13.0 (CPU) + peers
  .venv/bin/python benchmarks/bench_vs_peers.py              # D 512, F 16384, k 32, batch 4096, 500 steps
  .venv/bin/python benchmarks/bench_vs_peers.py --quick      # smoke test: D 64, F 1024, batch 256, 40 steps
  .venv/bin/python benchmarks/bench_vs_peers.py --libs sparsify,ours_topk --steps 300

A plain SAE (C = 1). Rows:
  - EleutherAI sparsify (`eai-sparsify`): TopK through `sparsify.Trainer(TrainConfig, dataset, model).fit()`.
    Its Trainer can only read activations from a model's hooked module, so it is fed the rows
    through a tiny torch "model": an `nn.Embedding` holding the training rows, `input_ids` being
    row indices, hookpoint `embed` (no lower-level pieces are called directly).
  - dictionary_learning 0.1.0: `BatchTopKTrainer` through `dictionary_learning.training.trainSAE`
    with an iterable of [B, D] batches; the trained SAE is read back from trainSAE's `save_dir`.
  - SAELens 6.54: `BatchTopKTrainingSAE` through `sae_lens.SAETrainer` with an iterator of batches
    as its data provider; inference through its own JumpReLU conversion (`save_inference_model`).
  - ours: `python -m launch.train --config=configs/crosscoder.py` with `--config.activation` topk and
    batchtopk, reading the store this script writes.
The peers run in subprocesses with `.venv-peers/bin/python benchmarks/peers_runner.py` (see there).

Data: our planted-feature generator (`synthetic.planted`; C = 1, `--features` true directions, on
average `--active` of them per token, noise 0.02), rescaled so rows have mean norm sqrt(D) (what
our normalisation and SAELens's `expected_average_only_in` aim at), written once with
`data.planted_store.write_store`; the same rows are read back from the store into a .npy for the
peers. Every library's input normalisation is off (ours `normalize=False`, dictionary_learning
`normalize_activations=False`, SAELens `normalize_activations="none"`, sparsify has none), so all
of them train on identical inputs. Sampling the planted data is slow (einsum over the features), so
the training pool holds `--pool_batches` batches (default 64, 262,144 rows at full size) and every
library cycles through it; held-out rows for FVU / L0 are drawn with another seed.

Settings matched: k, F, batch, Adam (0.9, 0.999), one lr for all, by default 2e-4 / sqrt(F / 2^14)
(the default of sparsify's Adam path, of dictionary_learning and of ours; SAELens defaults to 3e-4), no lr warm-up, lr constant then linear decay to 0 over the last 20% (ours `decay_frac`,
dictionary_learning `decay_start`, SAELens `lr_decay_steps`), grad-norm clip 1.0 (ours,
dictionary_learning and SAELens clip at 1.0 in code), AuxK on latents silent for 10M tokens with
k_aux = D / 2 (SAELens counts steps: `dead_feature_window` = 10M / B), and the batchtopk inference
threshold's EMA rate: SAELens's default rate 0.01 (`topk_threshold_lr`), so ours and
dictionary_learning run `threshold_beta` 0.99 (`--threshold_beta`; both default to 0.999, whose
~1,000-step memory would leave the threshold at its first, early-training value in a run of a few
hundred steps) from `--threshold_start` (default steps / 4; dictionary_learning's default 1000).
With 10M tokens to go dead, no latent is dead before step 2,442 at B = 4096, so AuxK does no work in
runs shorter than that, in any library.

What differs (each library's own algorithm, not settable):
  - sparsify's Adam path fixes its schedule to linear warm-up then linear decay to 0 over the whole
    run (`get_linear_schedule_with_warmup`); with `lr_warmup_steps=0` its lr decays from step 0. It
    does not clip gradients, and its loss is the batch FVU (sum of squares / batch variance) rather
    than the summed squared error per token; AuxK weight 1/32 is set (its default is 0).
  - Decoders: sparsify and dictionary_learning keep decoder rows at unit norm (projecting the
    gradient, renormalising after each step); SAELens initialises them at norm 0.1 and folds the
    norms into the selection (`rescale_acts_by_decoder_norm`); ours leaves them free (init norm
    1/sqrt(3 C), 0.577 here) and selects on relu(pre) x decoder norm. Inits differ (sparsify: torch Linear init, decoder =
    encoder; dictionary_learning and ours: decoder first, encoder = its transpose; SAELens: Kaiming
    uniform). b_dec: sparsify starts it at the first batch's mean, dictionary_learning at its
    geometric median, SAELens and ours at 0.
  - Batchtopk inference thresholds: ours and dictionary_learning start their EMA at the first
    value seen at `--threshold_start`; SAELens's starts at 0 at step 0, so it is (1 - 0.99^steps)
    of its target (99.3% at 500 steps, 87% at 200). The scores differ: ours thresholds
    relu(pre) x decoder norm, SAELens relu(pre) x decoder norm (its rescaling), dictionary_learning
    relu(pre) with unit-norm decoder rows.
  - AuxK details: SAELens's is not variance-normalised and its weight is 1 (its default); sparsify
    normalises by the batch variance; ours and dictionary_learning as Gao et al.
  - Ours runs its matmuls in the dtype `matmul_dtype` picks (default "auto": bf16 operands only
    where a start-up probe finds them faster; the table says which); the peers run float32.
  - Data order: ours reads its store through its reader (shuffled windows of chunks), the peers
    take the same rows in order; the rows are i.i.d. draws, so only the order differs.

Timing: steady tokens/s leaves out the first `--warmup` steps (default steps / 10, at least 10):
compilation, first-touch allocation, the peers' first-step data statistics. For ours it is read
from the `tokens_per_s` that launch.train logs to metrics.jsonl every `--warmup` steps (every
window but the first); for the peers it is timed between per-step stamps (peers_runner.py). The
limit the encoder forward alone sets, 2 B D F FLOPs a step at this machine's measured float32 and
bf16 matmul peaks (`common.matmul_peak`), is printed beside the table. FVU and L0 are measured the
same way for every library (`peers_runner.evaluate`) on `--eval_rows` held-out rows with each
SAE's inference encoder (batchtopk: its threshold).

Run it on an otherwise idle machine. Under load from other processes, torch's OpenMP threads (one
per core by default) stall waiting for each other at every op: on the 2-core dev VM, with another
job running, sparsify's quick run (`--quick --steps 200`) fell from 28,900 tokens/s with one torch
thread to 1,900 with two, while ours (XLA's thread pool) kept ~32,000. `--torch_threads` sets the
peers' thread count; the header and the line under the table give the 1-min load average.

At full size a step takes seconds per library on the 2-core dev CPU (our C = 3 step took 10.5 s,
benchmarks/README.md), so 5 runs x 500 steps take hours: use `--libs` and `--steps` to cut it (with
fewer steps the batchtopk thresholds have less time to settle; see above).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS_VENV = REPO / ".venv-peers"
# another interpreter holding torch and the peers (e.g. an accelerator machine's own python)
PEERS_PY = Path(os.environ.get("PEERS_PYTHON") or PEERS_VENV / "bin" / "python")
RUNNER = REPO / "benchmarks" / "peers_runner.py"
TORCH_PIN = "torch==2.13.0"  # the CPU build pip takes from a local file; a looser pin pulls a multi-GB CUDA build
PEER_PACKAGES = ["eai-sparsify", "dictionary-learning==0.1.0", "sae-lens==6.54.*"]
PEER_LIBS = ("sparsify", "dictionary_learning", "sae_lens")
OURS = ("ours_topk", "ours_batchtopk")
PEER_ACTIVATION = {"sparsify": "topk", "dictionary_learning": "batchtopk", "sae_lens": "batchtopk"}

sys.path.insert(0, str(REPO))


def setup() -> None:
    """Creates .venv-peers (Python of this interpreter's base) with torch pinned and the three peers."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
    with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as fh:
        fh.write(TORCH_PIN + "\n")
    try:
        subprocess.run([str(PEERS_PY), "-m", "pip", "install", "-c", fh.name, TORCH_PIN, *PEER_PACKAGES], check=True)
    finally:
        os.unlink(fh.name)
    # torchvision (pulled in by a dependency) does not build against the CPU torch and breaks `import transformers`
    listed = subprocess.run([str(PEERS_PY), "-m", "pip", "show", "torchvision"], capture_output=True)
    if listed.returncode == 0:
        subprocess.run([str(PEERS_PY), "-m", "pip", "uninstall", "-y", "torchvision"], check=True)
    out = subprocess.run([str(PEERS_PY), "-m", "pip", "list", "--format=json"], check=True, capture_output=True,
                         text=True).stdout
    versions = {p["name"].lower(): p["version"] for p in json.loads(out)}
    for name in ("torch", "eai-sparsify", "dictionary-learning", "sae-lens", "transformers", "transformer-lens"):
        print(f"{name:20s} {versions.get(name, 'missing')}")


def cpu_model() -> str:
    from crosscoder_jax.runtime.matmul_choice import cpu_model as model  # jax only when a run starts, not for --setup
    return model()


def make_data(a, work: Path) -> dict:
    """Writes the store (ours), train.npy (the store's rows) and eval.npy (held out); reused when the
    settings match. `--data`: planted features, power-law feature sums (`synthetic.powerlaw`), or a
    harvested store's snapshot (`store:PATH[:SNAPSHOT]`, its first rows for training, its last
    `--eval_rows` held out; D is the store's)."""
    import numpy as np
    from crosscoder_jax.data.store import Store

    want = {"data": a.data, "D": a.D, "features": a.features, "active": a.active, "rows": a.pool_batches * a.batch,
            "chunk": a.batch, "eval_rows": a.eval_rows, "seed": a.data_seed, "alpha": a.alpha, "noise": a.noise,
            "version": 2}
    paths = {"store": work / "store", "train": work / "train.npy", "eval": work / "eval.npy",
             "meta": work / "data.json"}
    if all(p.exists() for p in paths.values()) and json.loads(paths["meta"].read_text()) == want:
        print(f"data: reusing {work}")
        return paths
    t = time.perf_counter()
    if a.data == "planted":
        from crosscoder_jax.data.planted_store import write_store
        from crosscoder_jax.synthetic.planted import make_features, sample

        feats = make_features(n_features=a.features, n_checkpoints=1, d_model=a.D, p_active=a.active / a.features,
                              seed=a.data_seed)
        probe = sample(feats, 4096, np.random.default_rng([a.data_seed, 2 ** 31]))
        feats.scale_C = np.array([math.sqrt(a.D) / float(np.linalg.norm(probe[:, 0], axis=-1).mean())])
        write_store(paths["store"], feats, n_tokens=want["rows"], chunk_size=a.batch, seed=a.data_seed)
        held_out = sample(feats, a.eval_rows, np.random.default_rng([a.data_seed, 2 ** 32]))[:, 0]
        what = f"{a.features} planted features ({a.active} active per token on average)"
    elif a.data == "powerlaw":
        from crosscoder_jax.data.planted_store import write_powerlaw_store
        from crosscoder_jax.synthetic import powerlaw

        spec = powerlaw.PowerLaw(d_model=a.D, n_features=a.features, alpha=a.alpha, mean_active=a.active,
                                 noise=a.noise, seed=a.data_seed)
        write_powerlaw_store(paths["store"], spec, want["rows"], chunk_size=a.batch)
        held_out = powerlaw.sample(spec, a.eval_rows, np.random.default_rng([a.data_seed, 2, 0]), spec.directions(),
                                   powerlaw.scale_of(spec))
        what = (f"power-law sums of {a.features} random directions (alpha {a.alpha}, {a.active} a row on average, "
                f"noise {a.noise})")
    else:
        from crosscoder_jax.data.store import create_store

        src_path, _, snap = a.data[len("store:"):].partition(":")
        src = Store(src_path)
        c = src.meta["checkpoints"].index(snap) if snap else src.n_checkpoints - 1
        n_src = src.n_tokens
        if n_src < want["rows"] + a.eval_rows:
            raise SystemExit(f"{src_path} has {n_src} rows, fewer than {want['rows']} training + {a.eval_rows} held out")
        rows_all = np.asarray(src.read_rows(0, want["rows"]), np.float32)[:, c]
        held_out = np.asarray(src.read_rows(n_src - a.eval_rows, n_src), np.float32)[:, c]
        scale = math.sqrt(src.d_model) / float(np.linalg.norm(rows_all, axis=-1).mean())
        rows_all, held_out = rows_all * scale, held_out * scale
        w = create_store(paths["store"], checkpoints=[src.meta["checkpoints"][c]], d_model=src.d_model,
                         n_tokens=want["rows"], chunk_size=a.batch, model=str(src.meta.get("model")), layer=0)
        for i in range(w.n_chunks):
            lo, hi = w.chunk_rows(i)
            w.write_chunk(i, rows_all[lo:hi, None, :])
        what = f"snapshot {src.meta['checkpoints'][c]} of {src_path} (D {src.d_model}), scaled to mean norm sqrt(D)"
    rows = Store(paths["store"]).read_rows(0, want["rows"])[:, 0].astype(np.float32)
    np.save(paths["train"], rows)
    np.save(paths["eval"], np.asarray(held_out, np.float32))
    paths["meta"].write_text(json.dumps(want))
    print(f"data: {want['rows']:,} training rows + {a.eval_rows:,} held out, {what}, mean norm "
          f"{np.linalg.norm(rows, axis=-1).mean():.1f} (sqrt(D) = {math.sqrt(rows.shape[1]):.1f}); "
          f"{time.perf_counter() - t:.0f} s")
    return paths


def peer_env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", WANDB_SILENT="true", TQDM_DISABLE="1",
               TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    return env


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> str:
    """Runs cmd from the repo root with stdout+stderr to `log`; returns the output; raises with its tail."""
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}; last output ({log}):\n" + text[-3000:])
    return text


def run_peer(lib: str, a, paths: dict, work: Path) -> dict:
    cmd = [str(PEERS_PY), str(RUNNER), lib, str(paths["train"]), str(paths["eval"]), "--steps", str(a.steps),
           "--batch", str(a.batch), "--F", str(a.F), "--k", str(a.k), "--lr", repr(a.lr),
           "--decay_start", str(a.decay_start), "--threshold_start", str(a.threshold_start),
           "--threshold_beta", repr(a.threshold_beta),
           "--warmup", str(a.warmup), "--threads", str(a.torch_threads), "--device", a.torch_device]
    out = run_logged(cmd, work / f"{lib}.log", env=peer_env())
    lines = [ln for ln in out.splitlines() if ln.startswith("PEER_RESULT ")]
    if not lines:
        raise RuntimeError(f"{lib}: no PEER_RESULT line in {work / f'{lib}.log'}:\n" + out[-3000:])
    r = json.loads(lines[-1][len("PEER_RESULT "):])
    r["activation"] = PEER_ACTIVATION[lib]
    r["label"] = f"{r['package']} {r['version']}"
    return r


def ours_fields(activation: str, a, paths: dict, wd: Path, extra: dict | None = None) -> dict:
    """The `configs/crosscoder.py` fields of our run (everything else at its default), `extra` last."""
    fields = {"activations": str(paths["store"]), "workdir": str(wd), "dict_size": a.F, "k": a.k,
              "batch_size": a.batch, "activation": activation, "steps": a.steps, "normalize": False, "lr": a.lr,
              "warmup_steps": 0, "decay_frac": a.decay_frac, "grad_clip": 1.0,
              "threshold_start_step": a.threshold_start, "threshold_beta": a.threshold_beta,
              "log_every": a.warmup, "save_every": a.steps, "progress": False, "seed": 0}
    if a.matmul_dtype:
        fields["matmul_dtype"] = a.matmul_dtype
    return {**fields, **(extra or {})}


def run_ours(activation: str, a, paths: dict, work: Path, extra: dict | None = None, name: str = "",
             in_process: bool = False) -> dict:
    """Trains ours with `python -m launch.train` (or `training.train.train` in this process) and
    scores it like the peers; `extra`: config fields over the benchmark's, `name`: the run's label."""
    import numpy as np
    from benchmarks.peers_runner import evaluate
    from crosscoder_jax.crosscoder import load_crosscoder

    name = name or f"ours_{activation}"
    wd = work / name
    shutil.rmtree(wd, ignore_errors=True)  # launch.train resumes a workdir: start fresh
    fields = ours_fields(activation, a, paths, wd, extra)
    t = time.perf_counter()
    if in_process:
        from configs.crosscoder import get_config
        from crosscoder_jax.training.train import train

        config = get_config()
        config.update(fields)
        train(config)
    else:
        cmd = [sys.executable, "-m", "launch.train", "--config=configs/crosscoder.py",
               *(f"--config.{k}={v!r}" if isinstance(v, float) else f"--config.{k}={v}" for k, v in fields.items())]
        run_logged(cmd, work / f"{name}.log")
    total_s = time.perf_counter() - t
    records = [json.loads(ln) for ln in (wd / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    start = next(r for r in records if r.get("event") == "start")
    windows = [r for r in records if "tokens_per_s" in r]
    steady, prev = [], 0
    for r in windows:  # every window after the first (which holds compilation)
        if prev >= a.warmup:
            steady.append((r["step"] - prev, (r["step"] - prev) * a.batch / r["tokens_per_s"]))
        prev = r["step"]
    if not steady:
        raise RuntimeError(f"ours {activation}: no logged window after step {a.warmup}; raise --steps")
    timed = sum(n for n, _ in steady)
    tokens_per_s = timed * a.batch / sum(s for _, s in steady)
    cc = load_crosscoder(wd / "crosscoder.safetensors")

    def encode_decode(x):
        x_B1D = x[:, None, :]
        f = np.asarray(cc.encode(x_B1D))
        return np.asarray(cc.reconstruct(x_B1D))[:, 0], (f != 0).sum(-1)

    fvu, l0 = evaluate(np.load(paths["eval"]), encode_decode)
    theta = json.loads(cc.meta["threshold"])
    if activation == "batchtopk" and (theta is None or theta < 0):
        raise RuntimeError("ours batchtopk: no inference threshold was set; raise --steps above --threshold_start")
    notes = f"launch.train, matmul_dtype {start.get('matmul_dtype')}, {start.get('step_path')}"
    if theta is not None:
        notes += f", threshold EMA (beta {a.threshold_beta}) from step {a.threshold_start} (theta {theta:.4g})"
    return {"library": name, "label": f"crosscoder_jax ({git_rev()})", "activation": activation,
            "trainer": f"launch.train --config.activation={activation}", "tokens_per_s": tokens_per_s,
            "timed_steps": timed, "total_s": total_s, "fvu": fvu, "l0": l0, "threshold": theta, "notes": notes}


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup", action="store_true", help="create .venv-peers and install torch + the peers, then exit")
    ap.add_argument("--quick", action="store_true", help="smoke test: D 64, F 1024, batch 256, 40 steps")
    ap.add_argument("--libs", default="sparsify,dictionary_learning,sae_lens,ours",
                    help="comma list of sparsify, dictionary_learning, sae_lens, ours_topk, ours_batchtopk, "
                         "ours (both)")
    ap.add_argument("--steps", type=int, default=None, help="training steps of every run (default 500; quick 40)")
    ap.add_argument("--D", type=int, default=None)
    ap.add_argument("--F", type=int, default=None)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="default 2e-4 / sqrt(F / 2^14)")
    ap.add_argument("--decay_frac", type=float, default=0.2, help="lr decays linearly to 0 over this last fraction")
    ap.add_argument("--threshold_start", type=int, default=None, help="batchtopk threshold EMA start (default steps/4)")
    ap.add_argument("--threshold_beta", type=float, default=0.99,
                    help="ours and dictionary_learning batchtopk threshold EMA decay "
                         "(default 0.99 = SAELens's rate 0.01)")
    ap.add_argument("--warmup", type=int, default=None, help="steps left out of the timing (default steps/10, >= 10)")
    ap.add_argument("--data", default="planted",
                    help="planted | powerlaw | store:PATH[:SNAPSHOT] (a harvested store's snapshot; default the last)")
    ap.add_argument("--data_seed", type=int, default=0, help="seed of the planted / power-law data")
    ap.add_argument("--features", type=int, default=None,
                    help="planted features (default 1024; quick 128), or power-law directions (default 4096)")
    ap.add_argument("--active", type=float, default=None,
                    help="features active per token (planted: default 16, quick 8; power-law: default 24)")
    ap.add_argument("--alpha", type=float, default=1.1, help="power-law exponent of the feature frequencies")
    ap.add_argument("--noise", type=float, default=0.05, help="power-law noise, relative to the signal norm")
    ap.add_argument("--pool_batches", type=int, default=64, help="distinct training batches (cycled)")
    ap.add_argument("--eval_rows", type=int, default=None, help="held-out rows (default 8192; quick 2048)")
    ap.add_argument("--torch_threads", type=int, default=0,
                    help="peers: torch.set_num_threads (default 0: torch's own, one per core)")
    ap.add_argument("--torch_device", default="cpu", help="sparsify's torch device (cpu, cuda)")
    ap.add_argument("--matmul_dtype", default="", help="ours: override config.matmul_dtype (default: the config's)")
    ap.add_argument("--workdir", default="", help="data and runs (default /tmp/bench_vs_peers[_quick]); data reused")
    a = ap.parse_args(argv)
    full = {"D": 512, "F": 16384, "batch": 4096, "steps": 500, "features": 4096 if a.data == "powerlaw" else 1024,
            "active": 24 if a.data == "powerlaw" else 16, "eval_rows": 8192}
    quick = {"D": 64, "F": 1024, "batch": 256, "steps": 40, "features": 128, "active": 8, "eval_rows": 2048}
    for key, value in (quick if a.quick else full).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.lr = a.lr if a.lr is not None else 2e-4 / math.sqrt(a.F / 2 ** 14)
    a.threshold_start = a.threshold_start if a.threshold_start is not None else a.steps // 4
    a.warmup = a.warmup if a.warmup is not None else max(10, a.steps // 10)
    a.decay_start = a.steps - round(a.decay_frac * a.steps)
    a.pool_batches = min(a.pool_batches, a.steps)
    libs = []
    for name in (s.strip() for s in a.libs.split(",") if s.strip()):
        names = OURS if name == "ours" else (name,)
        for n in names:
            if n not in PEER_LIBS + OURS:
                ap.error(f"unknown library {n!r}: pick from {', '.join(PEER_LIBS + OURS)}, ours")
            if n not in libs:
                libs.append(n)
    a.libs = libs
    if a.steps - 1 - a.warmup < 1:
        ap.error(f"--steps {a.steps} leaves nothing to time after --warmup {a.warmup}")
    if not 0 < a.threshold_start < a.steps - 1:
        ap.error(f"--threshold_start {a.threshold_start} must lie inside the run (steps {a.steps})")
    if not a.warmup < a.decay_start:
        ap.error(f"lr decay from step {a.decay_start} must start after --warmup {a.warmup}")
    a.workdir = Path(a.workdir or f"/tmp/bench_vs_peers{'_quick' if a.quick else ''}")
    return a


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def main(argv=None) -> None:
    a = parse(argv)
    if a.setup:
        setup()
        return
    if any(lib in PEER_LIBS for lib in a.libs) and not PEERS_PY.exists():
        sys.exit(f"{PEERS_PY} is missing: run `{sys.executable} benchmarks/bench_vs_peers.py --setup` first")
    a.workdir.mkdir(parents=True, exist_ok=True)
    cpu = cpu_model()
    print(f"CPU: {cpu} ({os.cpu_count()} logical cores); data {a.data}; C 1, D {a.D}, F {a.F}, k {a.k}, batch {a.batch}, "
          f"{a.steps} steps ({a.steps * a.batch:,} tokens), lr {a.lr:.3g}, timing after step {a.warmup}, "
          f"batchtopk threshold from step {a.threshold_start}; 1-min load average {os.getloadavg()[0]:.1f}")
    paths = make_data(a, a.workdir)
    results, failures = [], []
    for lib in a.libs:
        print(f"running {lib} ...", flush=True)
        try:
            if lib in OURS:
                r = run_ours(lib.split("_", 1)[1], a, paths, a.workdir)
            else:
                r = run_peer(lib, a, paths, a.workdir)
        except RuntimeError as e:
            print(f"  FAILED: {e}", flush=True)
            failures.append(lib)
            continue
        r["load_after"] = os.getloadavg()[0]
        print(f"  {r['tokens_per_s']:,.0f} tokens/s, FVU {r['fvu']:.4f}, L0 {r['l0']:.1f} ({r['total_s']:.0f} s; "
              f"load average {r['load_after']:.1f})", flush=True)
        results.append(r)

    import jax.numpy as jnp
    from benchmarks.common import matmul_peak

    n = 1024 if a.quick else 4096
    peaks = {"float32": matmul_peak(n, jnp.float32), "bf16": matmul_peak(n, jnp.bfloat16)}
    enc_flops_per_token = 2 * a.D * a.F

    ours_by_act = {r["activation"]: r["tokens_per_s"] for r in results if r["library"] in OURS}
    print()
    print(f"### Peers vs ours (C 1, D {a.D}, F {a.F}, k {a.k}, batch {a.batch}, {a.steps} steps = "
          f"{a.steps * a.batch:,} tokens; CPU: {cpu})")
    print()
    print("| library | trainer | steady tokens/s | ours (same activation) / this | timed steps | FVU (held out) "
          "| L0 (held out) | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ours = ours_by_act.get(r["activation"])
        ratio = "-" if r["library"] in OURS or not ours else f"{ours / r['tokens_per_s']:.2f}x"
        print(f"| {r['label']} | {r['trainer']} | {fmt_int(r['tokens_per_s'])} | {ratio} | {r['timed_steps']} | "
              f"{r['fvu']:.4f} | {r['l0']:.1f} | {r['notes']} |")
    print()
    print(f"Encoder-forward limit (2 B D F = {enc_flops_per_token * a.batch / 1e9:.3g} GFLOP a step): "
          + "; ".join(f"{name} peak {p / 1e9:.1f} GFLOP/s -> {fmt_int(p / enc_flops_per_token)} tokens/s"
                      for name, p in peaks.items())
          + f" ({n}^3 jitted matmul, this JAX build).")
    if results:
        print("1-min load average after each run: "
              + ", ".join(f"{r['library']} {r['load_after']:.1f}" for r in results)
              + f" ({os.cpu_count()} cores); torch threads: "
              + (str(a.torch_threads) if a.torch_threads else "torch's default")
              + next((f" ({r['torch_threads']})" for r in results if "torch_threads" in r), "") + ".")
    if failures:
        print(f"Failed: {', '.join(failures)} (logs in {a.workdir})")
    (a.workdir / "results.json").write_text(json.dumps(
        {"cpu": cpu, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
         "peaks": peaks, "results": results}, indent=1))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
