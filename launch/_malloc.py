"""Re-executes a launch script once with glibc malloc settings under which XLA's CPU runtime
does not re-fault its temporaries at every step.

XLA:CPU allocates each program's temporaries with malloc at every execution. glibc serves blocks
over 32 MB with fresh mmaps and unmaps them on free, so every step touches gigabytes of new pages:
at C 3, D 2048, F 65536 the batchtopk step took 2.6 million page faults and 16 s of system time out
of 34 s (benchmarks/README.md). Two settings, read only at process start (hence the re-exec, before
jax is imported):
- `glibc.malloc.hugetlb=1`: transparent huge pages for the heap (honoured where THP is in "madvise"
  mode), so that what is faulted comes in 2 MB pages: ~8,000 faults per step, the step 1.27x faster;
- `glibc.malloc.arena_max=1`: one arena, so that the blocks XLA's worker threads allocate come from
  the heap that the train loop keeps between steps (`crosscoder_jax.runtime.host_memory`; a
  thread's own arena maps blocks that large fresh whatever the settings).
`CROSSCODER_JAX_MALLOC=default` turns it off; nothing changes off Linux/glibc.
"""

from __future__ import annotations

import os
import sys

from crosscoder_jax.runtime.arena import OFF, glibc  # no jax import, so still before JAX starts

TUNABLES = {"glibc.malloc.hugetlb": "1", "glibc.malloc.arena_max": "1"}


def tunables(current: str) -> str:
    """`current` GLIBC_TUNABLES with ours added where the user set none of their own."""
    have = {item.split("=", 1)[0] for item in current.split(":") if "=" in item}
    extra = [f"{k}={v}" for k, v in TUNABLES.items() if k not in have]
    return ":".join([current] * bool(current) + extra)


def reexec_with_tunables() -> None:
    """Restarts this process (same interpreter and command line) with the tunables, once."""
    if os.environ.get(OFF) == "default" or not glibc():
        return
    current = os.environ.get("GLIBC_TUNABLES", "")
    wanted = tunables(current)
    if wanted == current:
        return
    os.environ["GLIBC_TUNABLES"] = wanted
    os.environ[OFF] = "default"  # the restarted process does not restart again
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
