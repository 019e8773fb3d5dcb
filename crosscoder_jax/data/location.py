"""Where a store lives: a local directory or an object-storage prefix, behind one small interface.

A location is a path (`runs/demo/store`) or a tensorstore kvstore URL (`gs://bucket/path`,
`s3://bucket/path`, `memory://path`). Object storage uses the usual credential environment
(Google application-default credentials for gcs; `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
`AWS_REGION` for s3) and, for S3-compatible servers, `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`),
which tensorstore's URL form does not read by itself.

Waits on object storage are bounded: every request retries for about `CROSSCODER_STORE_TIMEOUT`
seconds (default 30) and no call of this class waits longer, so an unreachable endpoint or
refused credentials give `StoreUnreachable`, naming the URL and the endpoint, instead of a hang
(tensorstore's own default retries for many minutes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tensorstore as ts

TIMEOUT_ENV = "CROSSCODER_STORE_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
# tensorstore statuses that mean "cannot reach or may not use the store", not "no such key"
_UNREACHABLE = ("ABORTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "PERMISSION_DENIED", "UNAUTHENTICATED")


class StoreUnreachable(OSError):
    """Object storage did not answer in time, or refused the request; the message names the URL,
    the endpoint and what to check."""


def timeout_s() -> float:
    """Seconds a request to object storage may take, retries included (`CROSSCODER_STORE_TIMEOUT`)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return value


def _retries(total_s: float) -> dict[str, Any]:
    """Exponential back-off (0.25 s doubling, at most total / 4 apart) whose delays add up to ~total."""
    delays, d = [], 0.25
    while sum(delays) + d <= total_s:
        delays.append(d)
        d = min(2 * d, max(0.25, total_s / 4))
    return {"max_retries": max(1, len(delays)), "initial_delay": "0.25s", "max_delay": f"{max(0.25, total_s / 4)}s"}


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
        if spec.get("driver") in ("s3", "gcs"):
            spec["context"] = {f"{spec['driver']}_request_retries": _retries(timeout_s())}
        if spec.get("driver") == "s3":
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if endpoint:
                spec["endpoint"] = endpoint
            if region:
                spec["aws_region"] = region
        return spec

    def endpoint(self) -> str:
        """Where requests go: the S3 endpoint set in the environment, or the service's default."""
        if self.url.startswith("s3://"):
            return (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                    or "the AWS default endpoint")
        return "the service's default endpoint"

    def wait(self, future, doing: str):
        """`future.result()` within the timeout; unreachable or refusing storage becomes StoreUnreachable."""
        limit = timeout_s()
        try:
            return future.result(timeout=limit)
        except TimeoutError:
            raise StoreUnreachable(
                f"{self.url}: no answer from {self.endpoint()} within {limit:.0f} s while {doing}. Check that "
                f"the endpoint is up and reachable (AWS_ENDPOINT_URL for S3-compatible servers), or set "
                f"{TIMEOUT_ENV} to wait longer.") from None
        except ValueError as e:
            if not str(e).startswith(_UNREACHABLE):
                raise
            raise StoreUnreachable(
                f"{self.url}: {doing} failed at {self.endpoint()}: {str(e)[:300]}. Check the endpoint "
                "(AWS_ENDPOINT_URL), the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or Google "
                f"application-default credentials) and the bucket's permissions; {TIMEOUT_ENV} bounds the "
                "retries.") from None

    def _kv(self, sub: str = ""):
        return self.wait(ts.KvStore.open(self.kvstore(sub)), "opening it")

    def read_text(self, name: str) -> str | None:
        """The file `name` here, or None when there is none."""
        if not self.is_url:
            p = Path(self.url) / name
            return p.read_text() if p.exists() else None
        r = self.wait(self._kv().read(name), f"reading {name}")
        return r.value.decode() if r.state == "value" else None

    def write_text(self, name: str, text: str) -> None:
        if not self.is_url:
            p = Path(self.url) / name
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, p)
            return
        self.wait(self._kv().write(name, text.encode()), f"writing {name}")

    def exists(self, name: str) -> bool:
        if not self.is_url:
            return (Path(self.url) / name).exists()
        return bool(self.wait(self._kv().list(ts.KvStore.KeyRange(name, name + "\x00")), f"looking for {name}"))

    def make(self) -> None:
        """Creates the directory (object storage needs none)."""
        if not self.is_url:
            Path(self.url).mkdir(parents=True, exist_ok=True)

    def keys(self, sub: str) -> set[str]:
        """Every key below `sub`, relative to it."""
        if not self.is_url:
            return {k.decode() for k in ts.KvStore.open(self.kvstore(sub)).result().list().result()}
        return {k.decode() for k in self.wait(self._kv(sub).list(), f"listing {sub}")}
