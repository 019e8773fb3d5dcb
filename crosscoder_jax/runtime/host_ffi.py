"""The host kernels (`host_kernels`) as XLA FFI custom calls: they read and write XLA's own buffers.

`jax.pure_callback` copies every operand into a new host array and every result back (~33 ms of
a 220 ms train step at C 1, D 512, F 16384, batch 4096: the kernels' own time was 49 ms of the
callbacks' 82). Here each kernel is a numba C function with XLA's FFI handler signature
(`XLA_FFI_Error* handler(XLA_FFI_CallFrame*)`, xla/ffi/api/c_api.h, shipped with jaxlib), which
finds its buffers in the call frame and runs the kernel on them in place, without the GIL. The
frame is read at the offsets of that header's structs on a 64-bit target (the tests run every
kernel through XLA against the same kernel on NumPy).

Compiled on first import (~10 s on a 2-core CPU, then cached in __pycache__), so `host_calls`
imports this module only when a program would use it.
"""

from __future__ import annotations

import ctypes

import jax
import numba
import numpy as np
from numba import carray, types
from numba.core.extending import intrinsic

from crosscoder_jax.runtime import host_kernels as hk

_OK = 0  # XLA_FFI_Error*: NULL, no error
_EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
_METADATA = 1  # XLA_FFI_Extension_Metadata
_API = (0, 1)  # the FFI API version the handlers were written against (major, minor)
_U16 = 7  # XLA_FFI_DataType_U16 (= xla::PrimitiveType U16)


@intrinsic
def _ptr(typingctx, addr):
    """An int64 address as a pointer, for `carray`."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))
    return types.voidptr(types.int64), codegen


@numba.njit(inline="always")
def _words(addr, n):
    return carray(_ptr(addr), n, dtype=np.int64)


@numba.njit(inline="always")
def _frame(frame):
    return carray(frame, 20, dtype=np.int64)


@numba.njit(inline="always")
def _execute(frame) -> bool:
    """Whether this call runs the kernel: not a metadata query (answered here), not an earlier stage.
    XLA_FFI_CallFrame: struct_size, extension_start, api, ctx, stage (int32), args, rets, ..."""
    cf = _frame(frame)
    if cf[1] != 0:
        ext = _words(cf[1], 4)  # XLA_FFI_Metadata_Extension: base {size, type, next}, metadata*
        if (ext[1] & 0xFFFFFFFF) == _METADATA:
            md = carray(_ptr(ext[3]), 10, dtype=np.int32)  # XLA_FFI_Metadata: size, api_version, traits
            md[6], md[7], md[8] = _API[0], _API[1], 0
        return False
    return (cf[4] & 0xFFFFFFFF) == _EXECUTE


@numba.njit(inline="always")
def _count(frame, which):
    """How many args (which 0) or results (1): XLA_FFI_Args/Rets {size, ext, count, types, ptrs}."""
    return _frame(frame)[7 + 5 * which]


@numba.njit(inline="always")
def _buffer(frame, which, i):
    """(data address, dims [rank] int64, dtype) of arg (which 0) or result (1) i: XLA_FFI_Buffer
    {size, ext, dtype (int32), data, rank, dims*}."""
    b = _words(_words(_frame(frame)[9 + 5 * which], i + 1)[i], 6)
    return b[3], _words(b[5], b[4]), b[2] & 0xFFFFFFFF


@numba.njit(inline="always")
def _vec(frame, which, i, dtype):
    a, d, _ = _buffer(frame, which, i)
    return carray(_ptr(a), d[0], dtype=dtype)


@numba.njit(inline="always")
def _scalar_i32(frame, i):
    a, _, _ = _buffer(frame, 0, i)
    return carray(_ptr(a), 1, dtype=np.int32)[0]


@numba.njit(inline="always")
def _threads(frame):
    """The last arg: the kernel's thread count (an operand: reading numba's in a C function would
    keep it from being cached)."""
    return _scalar_i32(frame, _count(frame, 0) - 1)


@numba.njit(inline="always")
def _mat(frame, which, i, dtype):
    """Arg (which 0) or result (1) i as a matrix; a vector [n] as [n, 1]."""
    a, d, _ = _buffer(frame, which, i)
    return carray(_ptr(a), (d[0], d[1] if d.shape[0] == 2 else 1), dtype=dtype)


@numba.njit(inline="always")
def _entries(frame):
    """Args 0, 2, 3 and 4 of the row kernels: the entries' values [N] float32, their rows [N] and
    columns [N] int32, and how many of them are used, n []."""
    return (_vec(frame, 0, 0, np.float32), _vec(frame, 0, 2, np.int32), _vec(frame, 0, 3, np.int32),
            _scalar_i32(frame, 4))


_SIG = types.voidptr(types.voidptr)


@numba.cfunc(_SIG, cache=True)
def _top_k_ffi(frame):
    """args: x [R, n] float32, then (as every handler's last) the thread count []; results:
    values [R, k] float32, positions [R, k] int32."""
    if _execute(frame):
        idx = _mat(frame, 1, 1, np.int32)
        x, vals = _mat(frame, 0, 0, np.float32), _mat(frame, 1, 0, np.float32)
        hk._top_rows(x, idx.shape[1], vals, idx, _threads(frame))
    return _ptr(_OK)


@numba.cfunc(_SIG, cache=True)
def _gather_sum_ffi(frame):
    """args: v [N], W [F, K] (uint32 float bits or uint16 bf16 bits), rows [N], cols [N], n [];
    result: out [B, K]."""
    if _execute(frame):
        v, rows, cols, n = _entries(frame)
        out, t = _mat(frame, 1, 0, np.float32), _threads(frame)
        if _buffer(frame, 0, 1)[2] == _U16:
            hk._gather_sum(v, _mat(frame, 0, 1, np.uint16), rows, cols, n, out, t)
        else:
            hk._gather_sum(v, _mat(frame, 0, 1, np.uint32), rows, cols, n, out, t)
    return _ptr(_OK)


@numba.cfunc(_SIG, cache=True)
def _decoder_grads_ffi(frame):
    """args: v [N], W [F, K] (as in gather_sum), rows, cols, n, g [B, K], then dW [F, K] to add to
    (aliased to the second result); results: dv [N], then dW [F, K] (none: no weight gradient)."""
    if _execute(frame):
        v, rows, cols, n = _entries(frame)
        g, dv = _mat(frame, 0, 5, np.float32), _vec(frame, 1, 0, np.float32)
        wg = _count(frame, 1) == 2
        dW = _mat(frame, 1, 1 if wg else 0, np.float32)  # without wg a placeholder the kernel does not touch
        zero, t = _count(frame, 0) == 7, _threads(frame)
        if _buffer(frame, 0, 1)[2] == _U16:
            hk._decoder_grads(v, _mat(frame, 0, 1, np.uint16), rows, cols, n, g, dv, dW, wg, zero, t)
        else:
            hk._decoder_grads(v, _mat(frame, 0, 1, np.uint32), rows, cols, n, g, dv, dW, wg, zero, t)
    return _ptr(_OK)


@numba.cfunc(_SIG, cache=True)
def _scatter_rows_ffi(frame):
    """args: v [N], X [B, K] float32, rows, cols, n, then out [F, K] to add to (aliased to the
    result); result: out [F, K]."""
    if _execute(frame):
        v, rows, cols, n = _entries(frame)
        X, out = _mat(frame, 0, 1, np.float32), _mat(frame, 1, 0, np.float32)
        hk._scatter_rows(v, X, rows, cols, n, out, _count(frame, 0) == 6, _threads(frame))
    return _ptr(_OK)


TARGETS = {"top_k": _top_k_ffi, "gather_sum": _gather_sum_ffi, "decoder_grads": _decoder_grads_ffi,
           "scatter_rows": _scatter_rows_ffi}


def target(name: str) -> str:
    return f"crosscoder_jax_host_{name}"


def register() -> None:
    """Registers every handler with XLA's CPU platform (once per process)."""
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    for name, fn in TARGETS.items():
        jax.ffi.register_ffi_target(target(name), new(fn.address, b"xla._CUSTOM_CALL_TARGET", None), platform="cpu")
