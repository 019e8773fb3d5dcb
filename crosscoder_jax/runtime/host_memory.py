"""Keeping XLA:CPU's temporaries mapped from one train step to the next (glibc only).

XLA:CPU puts every temporary of a program in one block (the "preallocated temp", 8.6 GB for the
batchtopk step at C 3, D 2048, F 65536) that it mallocs at each execution and frees after it. glibc
serves blocks over 32 MB with a fresh mmap and unmaps them on free, so the kernel zeroes every page
of that block again at every step: ~6,000 faults of 2 MB pages and 6-7 s of system time a step at
that size. With mmap off and no trimming, the freed block stays in the heap and the next step reuses
it. Measured on a 2-core CPU (benchmarks/README.md): at C 3, D 1024, F 32768 the step took 4.45-4.91 s
kept against 6.32 s; at F 65536 14.3-17.4 s against 18.3-24.1 s, but there the heap later outgrew the
machine's 24 GB, which the keeper's room check now prevents by not keeping.

Two settings make that possible. One arena (`glibc.malloc.arena_max=1`, which the launch scripts
set at start-up, launch/_malloc.py, and `import crosscoder_jax` sets before JAX starts, `arena`):
XLA's worker threads allocate the block, and a thread's own arena falls back to mmap for a block
that large whatever the settings. And, while a `Keeper` is
open, no mmap and no trim (`mallopt`). Freed memory is then not returned to the system unless the
keeper returns it (`release`): it keeps only where the system has room for a second block, and
returns stray holes as they appear (see `Keeper`).

Only on the CPU backend (on GPU and TPU the temporaries live in the device allocator, which keeps
them). `CROSSCODER_JAX_KEEP_FREED=0` turns it off.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import jax

from crosscoder_jax.runtime import arena

OFF = "CROSSCODER_JAX_KEEP_FREED"
# <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
_LIBC: list = []


def _glibc():
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None) if arena.glibc() else None)
    return _LIBC[0]


def why_not() -> str | None:
    """Why freed memory is not kept here (None: it is)."""
    if os.environ.get(OFF, "1") == "0":
        return f"{OFF}=0"
    if _glibc() is None:
        return "not Linux with glibc"
    if jax.default_backend() != "cpu":
        return f"the {jax.default_backend()} backend keeps its own temporaries"
    return None


def one_arena() -> bool:
    """Whether XLA's worker threads allocate from the main arena: glibc's one-arena setting from
    start-up, or made by `arena` before JAX's backend started (without it the kept heap does not
    serve the worker threads' large blocks, and a `Keeper` changes little)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "").split(":")
    return "glibc.malloc.arena_max=1" in tunables or arena.made_before_jax()


def resident_bytes() -> int:
    """This process's resident memory (/proc/self/statm; 0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes() -> int:
    """Memory the system can still give (MemAvailable, capped by a cgroup v2 limit where one is set)."""
    avail = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return avail


class Keeper:
    """Keeps freed memory in the heap between train steps while the system has room for it.

    glibc does not always put the next step's block where the last one was freed (it happened
    twice in one profile run at C 3, D 1024, F 32768; probably small allocations in between take
    the edges of the hole, and XLA's aligned request then needs a little more), and such a step
    takes a new block and leaves the old one resident. So: after the first step
    `settle` measures what keeping costs (resident growth over that step: the freed block, plus the
    compiler's garbage) and keeps only if the system could hold that again on top (room for one
    stray hole and the next block); over the next `WARM_STEPS` steps the limit follows the resident
    size up (the reader's windows and the loop's own buffers settle after the first step); then,
    after every step, a resident size past the limit (the settled size plus half a block) returns
    the free pages (`release`), so that stray holes do not pile up. At C 3, D 2048, F 65536 on a
    24 GB machine that room is not there and the defaults stay. A limit fixed right after the first
    step sat below the steady resident size (C 1, D 512, F 16384, batch 4096: 4.15 against 4.85 GB),
    so half of all steps returned the 1.3 GB block and faulted it in again: 8,000 tokens/s against
    10,891 with the limit learned (benchmarks/README.md).
    """

    WARM_STEPS = 16

    def __init__(self) -> None:
        self.reason = why_not()
        self.on = self.reason is None
        self.releases = 0
        self._rss0 = resident_bytes()
        self._limit: int | None = None
        if self.on:
            libc = _glibc()
            libc.mallopt(arena.M_ARENA_MAX, 1)  # threads that have not allocated yet join the one arena
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, -1)  # -1: never trim (glibc's documented value)

    def settle(self) -> str:
        """Called once, after the first step has finished: keep on or turn off. Returns the run
        log's line."""
        if not self.on:
            return f"returned to the system after each step ({self.reason})"
        kept = max(resident_bytes() - self._rss0, 0)
        room = available_bytes()
        if room < kept + (1 << 30):
            self.close(f"{kept / 1e9:.1f} GB kept over the first step, {room / 1e9:.1f} GB left")
            return f"returned to the system after each step ({self.reason}: too little room to keep them)"
        self._half_block = kept // 2
        self._limit = resident_bytes() + self._half_block
        self._warm = self.WARM_STEPS
        return (f"kept between steps ({kept / 1e9:.1f} GB over the first step, {room / 1e9:.1f} GB left; glibc: "
                "no mmap, no trim" + (", one arena)" if one_arena() else "; not one arena: import crosscoder_jax "
                "before running anything in JAX, or launch through `python -m launch.train`, so that worker "
                "threads reuse the heap)"))

    def after_step(self) -> None:
        """Returns stray holes once the resident size passes the settled one (see the class)."""
        if not self.on or self._limit is None:
            return
        rss = resident_bytes()
        if self._warm > 0:  # still settling: learn the steady size instead of returning memory
            self._warm -= 1
            self._limit = max(self._limit, rss + self._half_block)
        elif rss > self._limit:
            release()
            self.releases += 1

    def close(self, reason: str = "closed") -> None:
        """glibc's defaults back, the kept memory returned (idempotent)."""
        if self.on:
            libc = _glibc()
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            release()
            self.on, self.reason = False, reason


def release() -> None:
    """Returns the heap's free pages to the system (`malloc_trim(0)`); nothing off glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
