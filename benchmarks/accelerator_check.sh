#!/usr/bin/env bash
# The first run on a GPU or TPU: install the matching jax build into the project's venv, then write
# one table (tokens/s, achieved TFLOP/s, share of the measured bf16 matmul peak, peak memory) of the
# train step, sharding, memory plan and attribution at paper sizes. About 3-5 minutes of device time.
#
#   bash benchmarks/accelerator_check.sh            # from the repository root
#   QUICK=1 bash benchmarks/accelerator_check.sh    # tiny sizes (e.g. to try it on a CPU)
#
# Never needed by the tests. Output: accelerator_check.md (and the same on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt -e .
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  nvidia-smi -L
  .venv/bin/pip install -q "jax[cuda12]==$(.venv/bin/python -c 'import jax; print(jax.__version__)')"
elif [ -e /dev/accel0 ] || [ -n "${TPU_NAME:-}" ]; then
  .venv/bin/pip install -q "jax[tpu]==$(.venv/bin/python -c 'import jax; print(jax.__version__)')"
fi
.venv/bin/python -c 'import jax; print("backend", jax.default_backend(), jax.devices())'
args=(--out accelerator_check.md)
[ -n "${QUICK:-}" ] && args+=(--quick)
timeout 300 .venv/bin/python benchmarks/accelerator_check.py "${args[@]}"
# the memory plan by compilation (compiles only; on CPU it re-executes itself with fake devices)
if [ -z "${QUICK:-}" ]; then
  timeout 120 .venv/bin/python benchmarks/bench_memory.py --only "Pythia-1B triplet" --matmul_dtype bfloat16 | tee -a accelerator_check.md || true
fi
