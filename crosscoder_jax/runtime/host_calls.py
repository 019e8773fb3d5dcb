"""The host kernels (`host_kernels`) in traced programs, where they pay: as XLA custom calls
(`host_ffi`) on a single CPU device (inside a program sharded over devices they would need the
whole operands on one host), with numba importable and `CROSSCODER_HOST_KERNELS` not "0" (for
timing one against the other). Elsewhere the callers run XLA's versions. No gradient flows through
them (the callers compute gradients by hand, or use the results as thresholds).
"""

from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from crosscoder_jax.runtime import host_kernels as hk

_FFI: list = []  # the registered `host_ffi` module, once imported


def available() -> bool:
    """Whether programs traced now run the host kernels (see the module docstring)."""
    return (hk.numba is not None and os.environ.get("CROSSCODER_HOST_KERNELS", "1") != "0"
            and jax.default_backend() == "cpu" and jax.device_count() == 1 and _ffi() is not None)


def _ffi():
    """`host_ffi`, compiled and registered with XLA on first use (None where that fails)."""
    if not _FFI:
        try:
            # a parallel kernel run first starts numba's threads, whose symbols the cached C functions
            # link against when loaded ("Symbol not found: allocate_sched" otherwise)
            hk.top_k_host(np.zeros((1, 1), np.float32), 1)
            from crosscoder_jax.runtime import host_ffi
            host_ffi.register()
            _FFI.append(host_ffi)
        except Exception as err:  # a speed-up, never a requirement: XLA's versions run instead
            warnings.warn(f"host kernels not available, XLA's run instead: {err!r}")
            _FFI.append(None)
    return _FFI[0]


def _ffi_call(name: str, results, *args, aliases: dict[int, int] | None = None):
    """The kernel `name` as an XLA custom call on args and, last, numba's thread count now."""
    return jax.ffi.ffi_call(_ffi().target(name), results, input_output_aliases=aliases)(
        *(lax.stop_gradient(a) for a in args), jnp.int32(hk.threads()))


def top_k(x_Rn: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`lax.top_k(x, k)` for x [R, n]: values [R, k] descending and int32 positions [R, k], by the
    host kernel where `available()` (float32, n >= k; values then without gradient), else by XLA."""
    R, n = x_Rn.shape
    if not (available() and x_Rn.dtype == jnp.float32 and 1 <= k <= n and R >= 1):
        return lax.top_k(x_Rn, k)
    out = (jax.ShapeDtypeStruct((R, k), jnp.float32), jax.ShapeDtypeStruct((R, k), jnp.int32))
    return tuple(_ffi_call("top_k", out, x_Rn))


def _f32(shape) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _as_bits(W_FK: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(W_FK, jnp.uint32) if W_FK.dtype == jnp.float32 else W_FK


def _entries(v_N, rows_N, cols_N, n):
    return v_N.astype(jnp.float32), rows_N.astype(jnp.int32), cols_N.astype(jnp.int32), jnp.asarray(n, jnp.int32)


def gather_sum(v_N: jax.Array, W_FK: jax.Array, rows_N: jax.Array, cols_N: jax.Array, n: jax.Array,
               B: int) -> jax.Array:
    """`host_kernels.gather_sum_host` in a traced program (W float32, or bf16 bits as uint16): [B, K] float32."""
    v, rows, cols, n = _entries(v_N, rows_N, cols_N, n)
    return _ffi_call("gather_sum", _f32((B, W_FK.shape[1])), v, _as_bits(W_FK), rows, cols, n)


def decoder_grads(v_N: jax.Array, W_FK: jax.Array, rows_N: jax.Array, cols_N: jax.Array, n: jax.Array,
                  g_BK: jax.Array, dW_FK: jax.Array | None, weight_grad: bool
                  ) -> tuple[jax.Array, jax.Array | None]:
    """`host_kernels.decoder_grads_host` in a traced program: (dv [N], dW [F, K] or None), dW_FK added to in place."""
    v, rows, cols, n = _entries(v_N, rows_N, cols_N, n)
    args = (v, _as_bits(W_FK), rows, cols, n, g_BK.astype(jnp.float32))
    if not weight_grad:
        return _ffi_call("decoder_grads", (_f32(v.shape),), *args)[0], None
    if dW_FK is None:
        return tuple(_ffi_call("decoder_grads", (_f32(v.shape), _f32(W_FK.shape)), *args))
    return tuple(_ffi_call("decoder_grads", (_f32(v.shape), _f32(W_FK.shape)), *args, dW_FK.astype(jnp.float32),
                           aliases={6: 1}))


def scatter_rows(v_N: jax.Array, X_BK: jax.Array, rows_N: jax.Array, cols_N: jax.Array, n: jax.Array,
                 F: int, out_FK: jax.Array | None) -> jax.Array:
    """`host_kernels.scatter_rows_host` in a traced program: [F, K] float32, out_FK added to in place."""
    v, rows, cols, n = _entries(v_N, rows_N, cols_N, n)
    args = (v, X_BK.astype(jnp.float32), rows, cols, n)
    if out_FK is None:
        return _ffi_call("scatter_rows", _f32((F, X_BK.shape[1])), *args)
    return _ffi_call("scatter_rows", _f32((F, X_BK.shape[1])), *args, out_FK.astype(jnp.float32), aliases={5: 0})
