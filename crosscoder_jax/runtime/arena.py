"""glibc's one-arena setting, made when `crosscoder_jax` is imported, before XLA:CPU starts the
worker threads that allocate each program's temporaries.

A glibc thread that allocates gets its own arena, and an arena other than the main one serves a
block as large as a train step's temporaries (0.7-1.3 GB at C 1, D 512, F 16384, batch 4096) with a
fresh mmap whatever `mallopt` says later, so `host_memory.Keeper` cannot keep it and every step
faults it in again. `mallopt(M_ARENA_MAX, 1)` before those threads first allocate sends them to the
main arena. The launch scripts get the same from `GLIBC_TUNABLES` (launch/_malloc.py, with huge
pages as well); this covers a notebook or a script that calls the library directly. Measured on a
2-core AMD EPYC with AVX-512 (2026-12-06; the topk train step, C 1, D 512, F 16384, batch 4096,
median of 50 steps, one process each): no setting 424 ms, this call before JAX starts 284 ms,
the arena tunable 279 ms, both tunables 260 ms, this call with the huge-page tunable 261 ms.

One arena also means one lock for every thread's small allocations; the launch scripts (the
reader's threads included) have always run that way. `CROSSCODER_JAX_MALLOC=default` turns it
off. No jax import here: the call must come before JAX's backend starts, and `python -m
launch...` reads this module's `OFF` before it re-executes.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

OFF = "CROSSCODER_JAX_MALLOC"  # "default": leave glibc's malloc settings as they are
M_ARENA_MAX = -8  # <malloc.h>
_EARLY: list[bool] = []  # whether the setting was made before any JAX backend started


def glibc() -> bool:
    """Whether this process runs on Linux with glibc, whose malloc these settings are for."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _backends_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    if xb is None:  # jax not imported yet: no backend either
        return False
    try:
        return bool(xb.backends_are_initialized())
    except AttributeError:  # another jax: assume the worst, the message then says how to launch
        return True


def set_one_arena() -> bool:
    """Calls `mallopt(M_ARENA_MAX, 1)` on Linux with glibc unless `OFF` is "default"; returns
    whether it took effect before any JAX backend started (then XLA's threads share the heap)."""
    if not _EARLY:
        ok = os.environ.get(OFF) != "default" and glibc()
        early = ok and not _backends_started()
        if ok:
            ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
        _EARLY.append(early)
    return _EARLY[0]


def made_before_jax() -> bool:
    """Whether `set_one_arena` ran before JAX's backend started (False if it never ran)."""
    return bool(_EARLY and _EARLY[0])
