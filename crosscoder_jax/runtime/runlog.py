"""Run bookkeeping shared by every long run: a metrics.jsonl file and a progress bar.

Every launch step writes its metrics as one JSON object a line to `<workdir>/metrics.jsonl` (or
another named file) so that a killed run keeps everything it logged, and shows a tqdm bar with rate
and ETA.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm.auto import tqdm


def jsonable(value: Any) -> Any:
    """Converts numpy / jax scalars and arrays to JSON-ready Python values (NaN -> None)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "__array__"):
        arr = np.asarray(value)
        return jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends metric records to a JSON-lines file; each line is flushed at once.

    Records get a wall-clock `time` field. The file is append-only, so a resumed run keeps the
    history of the run it continues.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps({"time": time.time(), **jsonable(dict(record))})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")

    def drop_after(self, step: int) -> None:
        """On resume: drops records of steps after `step` (a killed run logged them, the resumed run
        recomputes them identically), so every step appears once."""
        if not self.path.exists():
            return
        keep = [l for l, r in self._records() if r.get("step", -1) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(l + "\n" for l in keep))
        os.replace(tmp, self.path)

    def _records(self) -> list[tuple[str, dict[str, Any]]]:
        """(line, record) of every whole line; a torn line (a kill or a full disk mid-write) is
        skipped, and dropped by the next `drop_after`."""
        out = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append((line, record))
        return out

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [r for _, r in self._records()]


def progress(total: int, initial: int = 0, desc: str = "", unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar with rate and ETA; `initial` lets a resumed run start where it stopped."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                smoothing=0.1, mininterval=0.5, **kwargs)
