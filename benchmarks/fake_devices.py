"""Re-executes the calling benchmark with N fake XLA host devices (must run before jax is imported)."""

from __future__ import annotations

import os
import sys


def ensure(n: int) -> None:
    """If XLA_FLAGS does not force a host device count yet, set it to `n` and restart this process."""
    if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={n}").strip()
        os.execv(sys.executable, [sys.executable, *sys.argv])
