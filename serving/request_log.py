"""Parquet logs on the home volume: served requests (features, prediction, version, time)
and, apart, the true outcomes that arrive later as feedback.

Rows are buffered and written `rotate_rows` at a time to
`part-<time>-<host>-<pid>-<writer>-<n>.parquet` (the host name keeps replicas sharing a
volume apart); when the folder grows past `max_bytes` the oldest files are deleted. A file
appears whole or not at all (written under a temporary name, then renamed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

log = logging.getLogger(__name__)

PREFIX = "part-"


class ParquetLog:
    """A log that keeps what it cannot write: after a failed write the rows stay buffered
    (up to `RETRY_FILES` files' worth, the oldest dropped beyond that and counted) and the
    write is tried again `RETRY_SECONDS` later; `failing` says why meanwhile."""

    RETRY_FILES = 5
    RETRY_SECONDS = 5.0

    def __init__(self, folder: Path, rotate_rows: int, max_bytes: int):
        self.folder = folder
        self.rotate_rows = rotate_rows
        self.max_bytes = max_bytes
        self.failing = ""  # why the last write failed; empty while writes succeed
        self.failed_writes = 0
        self.dropped_rows = 0
        self._retry_at = 0.0
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._written = 0
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # unique per writer
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffers the rows, stamped `logged_at`; writes a file when `rotate_rows` are buffered."""
        now = time.time()
        with self._lock:
            self._rows.extend({**row, "logged_at": now} for row in rows)
            full = len(self._rows) >= self.rotate_rows and time.monotonic() >= self._retry_at
        if full:
            self.flush()

    def flush(self) -> Path | None:
        """Writes the buffered rows, if any, and enforces the size bound; on failure keeps them
        (see the class doc) and returns None."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._written += 1
            name = f"{PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{self._writer}-{self._written:06d}.parquet"
        if not rows:
            return None
        path = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        try:
            pd.DataFrame(rows).to_parquet(temporary, index=False)
            os.rename(temporary, path)
        except OSError as error:
            self._keep(rows, f"{self.folder}: {error.strerror or error}")
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            return None
        self.failing = ""
        self._enforce_bound()
        return path

    def _keep(self, rows: list[dict[str, Any]], error: str) -> None:
        with self._lock:
            self._rows = rows + self._rows
            excess = len(self._rows) - self.RETRY_FILES * self.rotate_rows
            if excess > 0:
                del self._rows[:excess]
                self.dropped_rows += excess
            self.failed_writes += 1
            self.failing = error
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
        log.error("log write failed, %d rows kept to retry: %s", len(self._rows), error)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{PREFIX}*.parquet"))

    def _enforce_bound(self) -> None:
        files = self.files()
        sizes = [f.stat().st_size for f in files]
        while files and sum(sizes) > self.max_bytes and len(files) > 1:
            files.pop(0).unlink(missing_ok=True)
            sizes.pop(0)


class RequestLog(ParquetLog):
    """Served requests, each kept with probability `sample`."""

    def __init__(self, folder: Path, sample: float, rotate_rows: int, max_bytes: int, seed: int | None = None):
        super().__init__(folder, rotate_rows, max_bytes)
        self.sample = sample
        self._random = random.Random(seed)

    def append(
        self, instances: Sequence[Mapping[str, Any]], scores: Sequence[float], version: int, request_ids: Sequence[str]
    ) -> None:
        if self.sample <= 0:
            return
        with self._lock:
            kept = [
                (instance, score, request_id)
                for instance, score, request_id in zip(instances, scores, request_ids)
                if self.sample >= 1 or self._random.random() < self.sample
            ]
        self.add(
            [
                {**instance, "prediction": score, "model_version": version, "request_id": request_id}
                for instance, score, request_id in kept
            ]
        )


def read_log(folder: Path, since: float = 0.0, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every logged row written after `since` (seconds since the epoch), oldest first; only
    `columns` (and `logged_at`) when given.

    A file last written before `since` holds no such row (a row is stamped before its file
    is written), so it is not read: a window costs what is in the window.
    """
    files = [path for path in sorted(folder.glob(f"{PREFIX}*.parquet")) if path.stat().st_mtime >= since]
    wanted = None if columns is None else list(dict.fromkeys([*columns, "logged_at"]))
    frames = [pd.read_parquet(path, columns=wanted) for path in files]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame.logged_at > since].reset_index(drop=True)
