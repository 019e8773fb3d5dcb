"""Which operand dtype the crosscoder's matmuls use when the config says "auto".

bf16 operands with float32 accumulation halve the bytes a matmul moves, and on GPUs, TPUs and CPUs
with bf16 matrix units (AMX, AVX512-BF16) they run 2-4x faster than float32. On a CPU without them
XLA emulates the bf16 products and they run slower than float32 (measured on an AVX2-only AMD EPYC:
84-102 against 102-149 GFLOP/s). So: bf16 on GPU and TPU; on CPU, bf16 only where a short matmul
probe at start-up shows it beating float32 by 10%. The probe's answer is cached per machine (CPU
model, core count, jax version) in the user cache, so it runs once per machine, not once per run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

CHOICES = ("auto", "float32", "bfloat16")
_MARGIN = 1.1  # bf16 must beat float32 by this factor on CPU (timings on a shared VM drift ~10%)
_MEMO: dict[str, tuple[str, str]] = {}


def cache_path() -> Path:
    """Where probe results are kept: $XDG_CACHE_HOME (or ~/.cache)/crosscoder_jax/matmul_probe.json."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "crosscoder_jax" / "matmul_probe.json"


def cpu_model() -> str:
    """This machine's CPU model name (/proc/cpuinfo), for cache keys and benchmark headers."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """The probe's cache key: CPU model, cores, jax version (a new jaxlib may add bf16 kernels)."""
    return f"{cpu_model()} | {os.cpu_count()} cores | jax {jax.__version__}"


def probe(n: int = 1024, reps: int = 3) -> dict[str, float]:
    """GFLOP/s of an [n, n] x [n, n] dot with float32 and with bf16 operands (float32 result), best of
    `reps` after one warm-up. About 0.2-0.5 s on a 2-core CPU at n = 1024."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
    out = {}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        x, y = a.astype(dtype), b.astype(dtype)
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        f(x, y).block_until_ready()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            f(x, y).block_until_ready()
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * n ** 3 / best / 1e9
    return out


def _cached_probe() -> dict[str, float]:
    path, key = cache_path(), machine_key()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    rates = probe()
    cache[key] = rates
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: probe again next time
    return rates


def choose(setting: str) -> tuple[str, str]:
    """(dtype, reason) for a config's `matmul_dtype`: "float32" and "bfloat16" as given; "auto" by
    backend, and on CPU by the cached probe. The reason is one line for the run log."""
    if setting not in CHOICES:
        raise ValueError(f"matmul_dtype={setting!r}: choose one of {', '.join(CHOICES)}")
    if setting != "auto":
        return setting, "set in the config"
    backend = jax.default_backend()
    if backend != "cpu":
        return "bfloat16", f"auto: {backend} backend (bf16 matrix units)"
    if backend not in _MEMO:
        rates = _cached_probe()
        f32, bf16 = rates["float32"], rates["bfloat16"]
        dtype = "bfloat16" if bf16 > _MARGIN * f32 else "float32"
        _MEMO[backend] = (dtype, f"auto: CPU probe {f32:.0f} GFLOP/s float32, {bf16:.0f} bf16 "
                                 f"({cpu_model()}; cached in {cache_path()})")
    return _MEMO[backend]
