"""Parquet logs on the home volume: served requests (features, prediction, version, time)
and, apart, the true outcomes that arrive later as feedback.

Rows are buffered as the columns they came in, a chunk per call, every `JOIN_CHUNKS` small
chunks joined into one as they arrive, and written at most `rotate_rows` to a file,
`part-<time>-<host>-<pid>-<writer>-<n>.parquet` (the host name keeps replicas sharing a
volume apart): by a thread of the log's own once `rotate_rows` are buffered, and by `flush`
(the service's timed flush, its stop). A request appends, and one request in `JOIN_CHUNKS`
joins: it never waits for a write, and no write holds the GIL long turning rows into a
table (joining 4,000 single-row chunks at write time took 45 ms of Python that every request
waited through; joined as they arrive, about 2 ms). What a prediction
appends is a dict of NumPy arrays, which the cyclic garbage collector does not track:
thousands of buffered requests held as lists and tuples added to what set it walking the
models' objects every few seconds under load, every request waiting. Floating-point columns
are written as float64 whatever the request's arrays were, so every file has one schema.
When the folder grows past `max_bytes` the oldest files are deleted. A file appears whole
or not at all (written under a temporary name, then renamed).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PREFIX = "part-"
STAMP = "logged_at"  # when a row was buffered (seconds since the epoch)
Columns = Mapping[str, Sequence[Any]]


class ParquetLog:
    """A log that keeps what it cannot write: after a failed write the rows stay buffered
    (up to `RETRY_FILES` files' worth, the oldest dropped beyond that and counted) and the
    write is tried again `RETRY_SECONDS` later; `failing` says why meanwhile."""

    RETRY_FILES = 5
    RETRY_SECONDS = 5.0
    JOIN_CHUNKS = 64

    def __init__(self, folder: Path, rotate_rows: int, max_bytes: int):
        self.folder = folder
        self.rotate_rows = rotate_rows
        self.max_bytes = max_bytes
        self.failing = ""  # why the last write failed; empty while writes succeed
        self.failed_writes = 0
        self.dropped_rows = 0
        self._retry_at = 0.0
        self._chunks: list[Columns] = []  # oldest first, each stamped (`_rows`)
        self._arrived: list[Columns] = []  # the newest chunks, not yet joined; after `_chunks`
        self._buffered = 0
        self._writing = False  # a background write is started or under way
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._written = 0
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # unique per writer
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffers rows, stamped `logged_at` (see `add_columns`); a field a row lacks is empty."""
        if rows:
            names = dict.fromkeys(name for row in rows for name in row)
            self.add_columns({name: [row.get(name) for row in rows] for name in names}, len(rows))

    def add_columns(self, columns: Columns, count: int) -> None:
        """Buffers `count` rows given as columns, stamped `logged_at`; once `rotate_rows` are
        buffered, a background thread writes them. The caller only appends."""
        stamped = {**columns, STAMP: np.full(count, time.time())}
        with self._lock:
            self._arrived.append(stamped)
            if len(self._arrived) >= self.JOIN_CHUNKS:
                self._join_arrived()
            self._buffered += count
            write = self._buffered >= self.rotate_rows and not self._writing and time.monotonic() >= self._retry_at
            self._writing = self._writing or write
        if write:
            threading.Thread(target=self._write_full, name="log-writer", daemon=True).start()

    def _write_full(self) -> None:
        try:
            self._write(full_files_only=True)
        finally:
            with self._lock:
                self._writing = False

    def flush(self) -> Path | None:
        """Writes the buffered rows, if any, after a background write under way; see `_write`."""
        return self._write()

    def _write(self, full_files_only: bool = False) -> Path | None:
        """Writes the rows buffered when the write begins, at most `rotate_rows` a file
        (`full_files_only`: full files only), and enforces the size bound; on failure keeps
        them (see the class doc). Rows that arrive meanwhile wait for the next write, so a
        steady stream of requests cannot keep a write going. One write at a time, so files are
        written in the order of their names and rows. Returns the last file written, or None."""
        written = None
        with self._write_lock:
            with self._lock:
                remaining = self._buffered
            while remaining >= (self.rotate_rows if full_files_only else 1):
                with self._lock:
                    chunks = self._take(min(self.rotate_rows, remaining))
                    self._written += 1
                    serial = self._written
                remaining -= sum(map(_rows, chunks))
                written = self._write_file(chunks, serial)
                if written is None:
                    return None
            return written

    def _join_arrived(self) -> None:
        """Moves the chunks that arrived to the end of `_chunks`: joined into one when they hold
        at most a sixteenth of a file's rows, else as they are. A write takes whole chunks, so a
        larger joined chunk would leave files short of `rotate_rows`, and a failed write's bound
        would drop that many rows at once; requests that large cost little to join at write time."""
        if not self._arrived:
            return
        if sum(map(_rows, self._arrived)) <= self.rotate_rows // 16:
            self._chunks.append(_joined_columns(self._arrived))
        else:
            self._chunks.extend(self._arrived)
        self._arrived = []

    def _take(self, rows: int) -> list[Columns]:
        """The oldest chunks up to `rows` rows (at least one chunk), out of the buffer in one
        cut: popping them one by one from the front would hold the lock requests append under
        for a time growing with the square of the chunks (20 ms for 20,000)."""
        self._join_arrived()
        end, count = 0, 0
        while end < len(self._chunks) and (end == 0 or count + _rows(self._chunks[end]) <= rows):
            count += _rows(self._chunks[end])
            end += 1
        taken = self._chunks[:end]
        del self._chunks[:end]
        self._buffered -= count
        return taken

    def _write_file(self, chunks: list[Columns], serial: int) -> Path | None:
        name = f"{PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{self._writer}-{serial:06d}.parquet"
        path = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        try:
            _table(chunks).to_parquet(temporary, index=False)
            os.rename(temporary, path)
        except Exception as error:  # a full volume, or rows Parquet refuses: kept, counted, said
            self._keep(chunks, f"{self.folder}: {getattr(error, 'strerror', None) or error}")
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            return None
        self.failing = ""
        self._enforce_bound()
        return path

    def _keep(self, chunks: list[Columns], error: str) -> None:
        with self._lock:
            self._join_arrived()
            self._chunks = chunks + self._chunks
            self._buffered = sum(map(_rows, self._chunks))
            dropped = 0  # the oldest chunks beyond the bound, cut at once as in `_take`
            while self._buffered > self.RETRY_FILES * self.rotate_rows:
                self._buffered -= _rows(self._chunks[dropped])
                self.dropped_rows += _rows(self._chunks[dropped])
                dropped += 1
            del self._chunks[:dropped]
            self.failed_writes += 1
            self.failing = error
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            kept = self._buffered
        log.error("log write failed, %d rows kept to retry: %s", kept, error)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{PREFIX}*.parquet"))

    def _enforce_bound(self) -> None:
        files = self.files()
        sizes = [f.stat().st_size for f in files]
        while files and sum(sizes) > self.max_bytes and len(files) > 1:
            files.pop(0).unlink(missing_ok=True)
            sizes.pop(0)


def _rows(chunk: Columns) -> int:
    return len(chunk[STAMP])


def _table(chunks: list[Columns]) -> pd.DataFrame:
    return pd.DataFrame(_joined_columns(chunks))


def _joined_columns(chunks: list[Columns]) -> Columns:
    """The chunks' rows in order as one chunk, a column at a time: every field any chunk has,
    empty where a chunk lacks it (a canary with another input), floats as float64."""
    names = dict.fromkeys(name for columns in chunks for name in columns)
    return {
        name: _joined([columns[name] if name in columns else [None] * _rows(columns) for columns in chunks])
        for name in names
    }


def _joined(parts: list[Sequence[Any]]) -> np.ndarray | list:
    """One column from its chunks: arrays concatenated (floats as float64), anything else chained."""
    if all(isinstance(part, np.ndarray) for part in parts):
        joined = np.concatenate(parts)
        return joined.astype(np.float64) if joined.dtype.kind == "f" else joined
    return list(itertools.chain.from_iterable(parts))


class RequestLog(ParquetLog):
    """Served requests, each row kept with probability `sample`."""

    def __init__(self, folder: Path, sample: float, rotate_rows: int, max_bytes: int, seed: int | None = None):
        super().__init__(folder, rotate_rows, max_bytes)
        self.sample = sample
        self._random = random.Random(seed)

    def append(self, columns: Columns, scores: Sequence[float], version: int, request_ids: Sequence[str]) -> None:
        """Buffers one request's rows: its input columns, and each row's prediction, version and id."""
        if self.sample <= 0:
            return
        count = len(request_ids)
        columns = {
            **columns,
            "prediction": np.asarray(scores, dtype=np.float64),
            "model_version": np.full(count, version),
            "request_id": np.asarray(request_ids, dtype=object),
        }
        if self.sample < 1:
            with self._lock:
                kept = np.array([self._random.random() < self.sample for _ in range(count)], dtype=bool)
            if not kept.any():
                return
            columns = {name: np.asarray(values)[kept] for name, values in columns.items()}
            count = int(kept.sum())
        self.add_columns(columns, count)


def read_log(folder: Path, since: float = 0.0, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every logged row written after `since` (seconds since the epoch), oldest first; only
    `columns` (and `logged_at`) when given.

    A file last written before `since` holds no such row (a row is stamped before its file
    is written), so it is not read: a window costs what is in the window.
    """
    wanted = None if columns is None else list(dict.fromkeys([*columns, STAMP]))
    frames = [frame for path, _ in _written(folder, since) if (frame := _read(path, wanted)) is not None]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame.logged_at > since].reset_index(drop=True)


def first_written(folder: Path) -> float | None:
    """When the log's oldest file was written (seconds since the epoch); None without one."""
    return min((written for _, written in _written(folder, 0.0)), default=None)


def _written(folder: Path, since: float) -> list[tuple[Path, float]]:
    """The log's files written at or after `since`, in name order, with when. Another
    process's bound may delete a file meanwhile (`_enforce_bound`): it is left out."""
    found = []
    for path in sorted(folder.glob(f"{PREFIX}*.parquet")):
        with contextlib.suppress(FileNotFoundError):
            if (written := path.stat().st_mtime) >= since:
                found.append((path, written))
    return found


def _read(path: Path, columns: list[str] | None) -> pd.DataFrame | None:
    """A log file's rows; None when another process's bound deleted it since it was listed."""
    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        return None
