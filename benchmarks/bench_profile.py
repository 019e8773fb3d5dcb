"""Where the time of one batchtopk (or topk) train step goes, at the field's sizes, on one device.

  python benchmarks/bench_profile.py [--C 3 --D 2048 --F 65536 --batch 4096 --k 32 --steps 2] [--dense]

Growing prefixes of the step are jitted and timed at the step's shapes, in one run (medians over
`--steps`), and each part is the difference to the previous prefix:
  encoder forward   the one dense matmul, x [B, C*D] @ W_enc [C*D, F]
  selection         + scores, the exact batch top-k mask and its entry list
  sparse work       the whole loss and gradient (`sparse_step.value_and_grad`) minus the above
  optimizer         the jitted train step (Adam, clipping, metrics, dead-latent counters) minus the loss
  data              the store reader's next batch (prefetch off: what the step would wait for without it)
and, around the full step, the process's system time and minor page faults per step (XLA's CPU
runtime re-faulting large temporaries shows up there). The jitted step is the one `launch.train`
runs (`training.train.build`), under the malloc settings the launch scripts use (launch/_malloc.py;
`CROSSCODER_JAX_MALLOC=default` in the environment measures without them), with freed memory kept
between calls where the train loop would keep it (`runtime.host_memory`; `CROSSCODER_JAX_KEEP_FREED=0`
measures without). `--dense` profiles the
dense autodiff step (`sparse_decode=False`).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from launch._malloc import reexec_with_tunables  # noqa: E402

reexec_with_tunables()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import matmul_peak, shape_args  # noqa: E402
from configs.crosscoder import get_config  # noqa: E402
from crosscoder_jax.crosscoder import activations, matmul, sparse_step  # noqa: E402
from crosscoder_jax.runtime import host_memory  # noqa: E402
from crosscoder_jax.runtime.matmul_choice import cpu_model  # noqa: E402
from crosscoder_jax.data.reader import StoreReader  # noqa: E402
from crosscoder_jax.data.store import Store, create_store  # noqa: E402
from crosscoder_jax.training import sharding  # noqa: E402
from crosscoder_jax.training.train import build  # noqa: E402


def _median_time(fn, steps: int, keeper: host_memory.Keeper) -> float:
    host_memory.release()  # the previous program's blocks
    jax.block_until_ready(fn())  # compile and warm
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
        keeper.after_step()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    shape_args(ap, steps=2)
    ap.set_defaults(D=2048, F=65536)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--activation", default="batchtopk", choices=("batchtopk", "topk"))
    ap.add_argument("--dense", action="store_true", help="profile the dense autodiff step instead")
    ap.add_argument("--matmul_dtype", default="auto")
    a = ap.parse_args()
    C, D, F, B = a.C, a.D, a.F, a.batch

    c = get_config()
    c.dict_size, c.batch_size, c.activation, c.k, c.steps = F, B, a.activation, a.k, 1000
    c.sparse_decode, c.matmul_dtype = not a.dense, a.matmul_dtype
    mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    spec, key, _, _, init_fn, step_fn = build(c, C, D, np.ones(C), mesh)
    state = jax.block_until_ready(init_fn(key))  # resident before the keeper measures what a step adds
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(B, C, D)).astype(np.float32)
    x = sharding.global_batch(x_np, mesh)

    # the full step, with system time and page faults around it
    box = {"state": state}

    def step():
        box["state"], m = step_fn(box["state"], x)
        return m["loss"]

    keeper = host_memory.Keeper()  # freed memory kept between steps where there is room, as in the train loop
    t_compile = time.perf_counter()
    jax.block_until_ready(step())
    t_compile = time.perf_counter() - t_compile
    kept = keeper.settle()
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        jax.block_until_ready(step())
        times.append(time.perf_counter() - t)
        keeper.after_step()
    ru1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    t_step = statistics.median(times)
    sys_per_step = (ru1.ru_stime - ru0.ru_stime) / a.steps
    faults_per_step = (ru1.ru_minflt - ru0.ru_minflt) / a.steps

    params, act_state, dead = box["state"].params, box["state"].act_state, jnp.zeros((F,), bool)
    del box, state  # the optimizer moments: the parts below hold parameters and gradients only
    x32 = jnp.asarray(x_np)
    W_KF = params["W_enc"].reshape(C * D, F)
    enc = jax.jit(lambda x, W: matmul.matmul("bk,kf->bf", x.reshape(B, C * D), W, spec.matmul_dtype))
    t_enc = _median_time(lambda: enc(x32, W_KF), a.steps, keeper)
    dn = jnp.sum(jnp.linalg.norm(jnp.asarray(params["W_dec"]), axis=-1), axis=-1)
    act = activations.get(a.activation)

    b_enc = params["b_enc"]

    @jax.jit
    def enc_select(x, W, b, dn):
        pre = enc(x, W) + b
        relu = jax.nn.relu(pre)
        e, vals, _ = sparse_step.list_kept(act.select(relu * dn, spec, jnp.int32(0), B), relu, sparse_step.Axes(), ())
        return e.rows, e.cols, e.n, vals

    t_sel = _median_time(lambda: enc_select(x32, W_KF, b_enc, dn), a.steps, keeper) - t_enc
    if a.dense:
        from crosscoder_jax import crosscoder
        vg = jax.jit(jax.value_and_grad(crosscoder.loss_fn, has_aux=True), static_argnums=3)
    else:
        vg = jax.jit(sparse_step.value_and_grad, static_argnums=3)
    del W_KF
    t_vg = _median_time(lambda: vg(params, act_state, x32, spec, jnp.int32(0), dead), a.steps, keeper)
    del params

    with tempfile.TemporaryDirectory() as tmp:
        rows = 2 * B
        w = create_store(tmp + "/s", checkpoints=[f"c{i}" for i in range(C)], d_model=D, n_tokens=rows,
                         dtype="bfloat16", chunk_size=B)
        for i in range(w.n_chunks):
            s, e = w.chunk_rows(i)
            w.write_chunk(i, rng.normal(size=(e - s, C, D)).astype(np.float32))
        r = StoreReader(Store(tmp + "/s"), B, seed=0, prefetch=0, window_chunks=2)
        t_data = _median_time(lambda: next(r).acts_BCD, a.steps, keeper)
        r.close()

    flops = 2 * B * C * D * F
    peak = matmul_peak(2048, jnp.bfloat16 if spec.matmul_dtype == "bfloat16" else jnp.float32)
    parts = [("encoder forward matmul", t_enc), ("selection (scores, batch top-k, entry list)", t_sel),
             ("sparse work (decode, gradients, AuxK)" if not a.dense else "rest of the dense loss and autodiff",
              t_vg - t_enc - t_sel),
             ("optimizer, clipping, metrics", t_step - t_vg)]
    print(f"# {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}; {a.activation} C={C} D={D} F={F} batch={B} "
          f"k={a.k}; {'dense autodiff' if a.dense else 'sparse top-k'} step; matmul operands {spec.matmul_dtype}; "
          f"median of {a.steps} steps (compile {t_compile:.0f} s); malloc "
          f"{'glibc defaults' if 'glibc.malloc.hugetlb' not in os.environ.get('GLIBC_TUNABLES', '') else 'launch settings'}"
          f"; temporaries {kept}, stray holes returned {keeper.releases} times")
    print(f"# step {t_step:.2f} s = {B / t_step:.0f} tokens/s; encoder forward {flops / 1e9:.0f} GFLOP at "
          f"{flops / t_enc / 1e9:.0f} GFLOP/s (this machine's {spec.matmul_dtype} peak at n = 2048: "
          f"{peak / 1e9:.0f}); system time {sys_per_step:.2f} s/step, {faults_per_step:.0f} minor page faults/step "
          f"(wall of the timed steps {wall:.1f} s)")
    keeper.close()
    print("| part | seconds | share of the step |")
    print("|---|---|---|")
    for name, t in parts:
        print(f"| {name} | {t:.2f} | {t / t_step:.0%} |")
    print(f"| data: reader's next batch, prefetch off (overlapped when on) | {t_data:.2f} | {t_data / t_step:.0%} |")
    print(f"| system time inside the step | {sys_per_step:.2f} | {sys_per_step / t_step:.0%} |")


if __name__ == "__main__":
    main()
