"""Keeping freed memory between train steps (`runtime.host_memory`): glibc really stops re-faulting a
block that is freed and allocated again, and the keeper keeps only where there is room, returning
stray holes."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, subprocess_env
from crosscoder_jax.runtime import arena, host_memory

GLIBC = arena.glibc()

REUSE = """
import ctypes, json, resource, sys
from crosscoder_jax.runtime import host_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
keeper = host_memory.Keeper() if sys.argv[1] == "keep" else None
n = 256 << 20
faults = []
for i in range(4):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    libc.memset(p, 1, n)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"faults": faults, "why": keeper.settle() if keeper else None}))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings")
def test_a_kept_block_is_not_faulted_again():
    def run(mode):
        env = subprocess_env()
        env.pop(host_memory.OFF, None)
        out = subprocess.run([sys.executable, "-c", REUSE, mode], env=env, cwd=ROOT, capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, kept = run("default"), run("keep")
    pages = (256 << 20) // 4096
    # glibc's defaults map a 256 MB block fresh every time: at least its 2 MB pages fault again
    assert min(default["faults"][1:]) >= pages // 512
    # kept: only the first allocation faults
    assert kept["faults"][0] >= pages // 512 and max(kept["faults"][1:]) < 16, kept
    assert kept["why"].startswith("kept between steps")


THREAD = """
import ctypes, json, queue, resource, sys, threading
if sys.argv[1] == "early":
    import crosscoder_jax  # sets one arena, as it does before JAX's worker threads start
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
todo, done = queue.Queue(), queue.Queue()

def worker():  # a pool thread, as XLA's: allocates when it starts, large blocks later
    libc.free(libc.malloc(64))
    while (n := todo.get()):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(n)
        libc.memset(p, 1, n)
        libc.free(p)
        done.put(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)

t = threading.Thread(target=worker)
t.start()
from crosscoder_jax.runtime import arena, host_memory
keeper = host_memory.Keeper()
faults = []
for _ in range(4):
    todo.put(256 << 20)
    faults.append(done.get())
todo.put(0)
t.join()
print(json.dumps({"faults": faults, "why": keeper.settle(), "early": arena.made_before_jax()}))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings")
def test_importing_the_package_first_lets_a_worker_thread_reuse_the_kept_block():
    def run(mode, **extra):
        env = subprocess_env(**extra)
        for name in (host_memory.OFF, "GLIBC_TUNABLES"):
            env.pop(name, None)
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", THREAD, mode], env=env, cwd=ROOT, capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    pages = (256 << 20) // 4096
    early, late = run("early"), run("late")
    off = run("early", CROSSCODER_JAX_MALLOC="default")
    # the thread took its own arena before the setting: each block is mapped fresh and faults again
    assert min(late["faults"][1:]) >= pages // 512, late
    assert min(off["faults"][1:]) >= pages // 512 and not off["early"], off
    # set first, the thread allocates from the main arena, which the keeper keeps
    assert early["early"] and max(early["faults"][1:]) < 16, early
    assert "one arena)" in early["why"]


class FakeMemory:
    def __init__(self, monkeypatch, resident, available):
        self.resident, self.available, self.released = resident, available, 0
        monkeypatch.setattr(host_memory, "resident_bytes", lambda: self.resident)
        monkeypatch.setattr(host_memory, "available_bytes", lambda: self.available)
        monkeypatch.setattr(host_memory, "release", self._release)

    def _release(self):
        self.released += 1


GB = 1 << 30


def keeper_with(monkeypatch, resident, available):
    """A keeper (on, as on any glibc CPU machine) over faked resident and available memory."""
    monkeypatch.delenv(host_memory.OFF, raising=False)
    mem = FakeMemory(monkeypatch, resident, available)
    return mem, host_memory.Keeper()


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings")
def test_keeper_keeps_where_there_is_room_and_returns_stray_holes(monkeypatch):
    mem, keeper = keeper_with(monkeypatch, resident=10 * GB, available=20 * GB)
    try:
        mem.resident = 14 * GB  # the first step kept 4 GB; 20 GB left is room for another 4
        assert keeper.settle().startswith("kept between steps (4.3 GB")
        mem.resident = 17 * GB  # the loop's own buffers settle over the first steps: learned, not returned
        for _ in range(keeper.WARM_STEPS):
            keeper.after_step()
        assert (keeper.releases, mem.released) == (0, 0)
        mem.resident = 18 * GB  # within half a block of the settled size: nothing returned
        keeper.after_step()
        assert (keeper.releases, mem.released) == (0, 0)
        mem.resident = 20 * GB  # a stray hole: returned
        keeper.after_step()
        assert (keeper.releases, mem.released) == (1, 1)
    finally:
        keeper.close()
    assert not keeper.on and mem.released == 2  # close returns the kept memory
    keeper.after_step()
    assert keeper.releases == 1


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings")
def test_keeper_steps_back_without_room(monkeypatch):
    mem, keeper = keeper_with(monkeypatch, resident=10 * GB, available=3 * GB)
    mem.resident = 18 * GB  # 8 GB kept over the first step and 3 GB left: a stray hole would not fit
    line = keeper.settle()
    assert line.startswith("returned to the system after each step") and "too little room" in line
    assert not keeper.on and mem.released == 1
    mem.resident = 30 * GB
    keeper.after_step()
    assert keeper.releases == 0


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(host_memory.OFF, "0")
    keeper = host_memory.Keeper()
    assert not keeper.on and host_memory.OFF in keeper.settle()
