"""Guarding a training workdir against what users and machines do to it: a second run started on
it, a checkpoint left half-written or corrupted, a full disk.

- `WorkdirLock`: one writer per workdir. An exclusive `flock` on `<workdir>/.lock`, which the
  kernel releases when the holder exits however it exits (kill -9 included), so a stale lock never
  blocks a resume; the file names the holder (pid, host, start time, command) for the refusal.
- `restore_latest`: the newest checkpoint that restores, moving unreadable ones aside (into
  `checkpoints_unreadable/`) with a message, instead of failing on a raw orbax error; one that
  reads but holds other shapes (`shape_changes`) is an `Incompatible` config, and stays.
- `disk_full`: whether an exception is the filesystem running out of space, and `space_message`
  the error to raise instead (path, bytes needed, bytes free).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax


class WorkdirBusy(RuntimeError):
    """Another live process is writing this workdir."""


class Incompatible(ValueError):
    """A checkpoint that reads fine but holds other shapes than the config asks for."""


def _names(tree) -> dict[str, tuple]:
    def name(k):
        return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(name(k) for k in path): tuple(getattr(leaf, "shape", ())) for path, leaf in leaves}


def shape_changes(saved_tree, target) -> list[str]:
    """'name: saved shape -> wanted shape' for every array whose shape differs (orbax metadata tree
    against the abstract target state)."""
    saved, want = _names(saved_tree), _names(target)
    return [f"{k}: {saved[k]} -> {want[k]}" for k in sorted(set(saved) & set(want)) if saved[k] != want[k]]


class WorkdirLock:
    """Context manager holding the workdir's lock (process 0 of a multi-process run only takes it)."""

    def __init__(self, workdir: str | os.PathLike, take: bool = True):
        self.path = Path(workdir) / ".lock"
        self.take = take
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        if not self.take:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirBusy(f"{self.path.parent} is in use by another run ({self._holder()}). Wait for it to "
                              "finish or stop it, or use another --config.workdir.") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                 "argv": sys.argv}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            h = json.loads(self.path.read_text())
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started"]))
            return f"pid {h['pid']} on {h['host']}, started {started}: {' '.join(h.get('argv', []))}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def restore_latest(mngr, restore: Callable[[int], Any], workdir: Path, say: Callable[[str], None] = print):
    """(step, state) from the newest checkpoint of `mngr` that `restore(step)` reads, or (None, None)
    when there is none. Unreadable ones (truncated files, missing metadata) are moved to
    `<workdir>/checkpoints_unreadable/<step>` so that the run can save that step again, and said."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            return step, restore(step)
        except Incompatible:
            raise
        except Exception as e:  # orbax and tensorstore raise many types for a damaged checkpoint
            if disk_full(e):
                raise
            src = Path(mngr.directory) / str(step)
            dst = workdir / "checkpoints_unreadable" / f"{step}-{int(time.time())}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if jax.process_index() == 0 and src.exists():
                shutil.move(str(src), str(dst))
            mngr.reload()
            first = _first_line(e)
            say(f"checkpoint step {step} in {src.parent} is unreadable ({first}); moved it to {dst} and "
                "falling back to the previous one")
    return None, None


def _first_line(e: BaseException) -> str:
    """A readable one-line cause: the exception type and the first line of its message that is not a
    repr of code (orbax puts bound-method reprs such as `<bound method ...>` in some messages)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [re.sub(r"<(bound method|function|[\w.]+ object) [^>]*>", "...", ln) for ln in lines]
    text = next((ln for ln in lines if ln.strip(" .:")), "")
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def disk_full(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is a write failing for lack of space."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or ("RESOURCE_EXHAUSTED" in text and "space" in text.lower()):
            return True
        e = e.__cause__ or e.__context__
    return False


def space_message(path: Path, needed_bytes: int) -> str:
    """What to tell a user whose write to `path` ran out of space."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = -1
    have = f"{free / 2**30:.2f} GiB free there now" if free >= 0 else "free space unknown"
    return (f"the disk holding {path} is full: a checkpoint needs about {needed_bytes / 2**30:.2f} GiB "
            f"({have}). Free space (or lower --config.max_to_keep) and rerun the same command to resume; "
            "nothing computed before the last checkpoint is lost.")
