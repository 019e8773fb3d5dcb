"""Where a store lives: a local directory or an object-storage prefix, behind one small interface.

A location is a path (`runs/demo/store`) or a tensorstore kvstore URL (`gs://bucket/path`,
`s3://bucket/path`, `memory://path`). Object storage uses the usual credential environment
(Google application-default credentials for gcs; `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
`AWS_REGION` for s3) and, for S3-compatible servers, `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`),
which tensorstore's URL form does not read by itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tensorstore as ts


class Location:
    """A directory-like prefix: `kvstore(sub)` specs for tensorstore, small text files read and
    written whole (atomically: a rename on disk, a single PUT on object storage), and listings."""

    def __init__(self, where: str | os.PathLike | "Location"):
        if isinstance(where, Location):
            where = where.url
        text = os.fspath(where)
        self.is_url = "://" in text
        self.url = text.rstrip("/") if self.is_url else str(Path(text))

    def __str__(self) -> str:
        return self.url

    @property
    def path(self) -> Path | str:
        """A local directory as a Path; a URL as itself."""
        return self.url if self.is_url else Path(self.url)

    def __truediv__(self, sub: str) -> "Location":
        return Location(f"{self.url}/{sub}" if self.is_url else Path(self.url) / sub)

    def kvstore(self, sub: str = "") -> dict[str, Any]:
        """The tensorstore kvstore spec of `sub` below this location, as a directory (trailing /)."""
        if not self.is_url:
            return {"driver": "file", "path": str(Path(self.url) / sub) + "/"}
        spec = ts.KvStore.Spec(f"{self.url}/{sub}".rstrip("/") + "/").to_json()
        if spec.get("driver") == "s3":
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if endpoint:
                spec["endpoint"] = endpoint
            if region:
                spec["aws_region"] = region
        return spec

    def _kv(self):
        return ts.KvStore.open(self.kvstore()).result()

    def read_text(self, name: str) -> str | None:
        """The file `name` here, or None when there is none."""
        if not self.is_url:
            p = Path(self.url) / name
            return p.read_text() if p.exists() else None
        r = self._kv().read(name).result()
        return r.value.decode() if r.state == "value" else None

    def write_text(self, name: str, text: str) -> None:
        if not self.is_url:
            p = Path(self.url) / name
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, p)
            return
        self._kv().write(name, text.encode()).result()

    def exists(self, name: str) -> bool:
        if not self.is_url:
            return (Path(self.url) / name).exists()
        return bool(self._kv().list(ts.KvStore.KeyRange(name, name + "\x00")).result())

    def make(self) -> None:
        """Creates the directory (object storage needs none)."""
        if not self.is_url:
            Path(self.url).mkdir(parents=True, exist_ok=True)

    def keys(self, sub: str) -> set[str]:
        """Every key below `sub`, relative to it."""
        return {k.decode() for k in ts.KvStore.open(self.kvstore(sub)).result().list().result()}
