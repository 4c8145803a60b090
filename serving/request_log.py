"""Parquet logs on the home volume: served requests (features, prediction, version, time)
and, apart, the true outcomes that arrive later as feedback.

Rows are buffered and written at most `rotate_rows` to a file,
`part-<time>-<host>-<pid>-<writer>-<n>.parquet` (the host name keeps replicas sharing a
volume apart): by the log's own writer thread once `rotate_rows` are buffered, and by
`flush` (the service's timed flush, its stop). A request's rows are copied into the arrays
of the block being filled (a sixteenth of a file's rows, one array a column, floats as
float64): the request pays about 25 small array copies and never waits for a write, and no
thread ever turns thousands of small chunks into a table while holding the GIL (joining
4,000 single-row chunks at write time took 45 ms of Python that every request waited
through; joining every 64 as they arrived, 1.3 ms every 64th request, was most of the
service's p99 at 200 requests/s). A
block holds NumPy arrays only, which the cyclic garbage collector does not track: thousands
of buffered requests held as lists and tuples added to what set it walking the models'
objects every few seconds under load, every request waiting. Floating-point columns are
written as float64 whatever the request's arrays were, so a column has one type in every file.
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
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # imported where frames are made, as in components/common/spans.py
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

    def __init__(self, folder: Path, rotate_rows: int, max_bytes: int):
        self.folder = folder
        self.rotate_rows = rotate_rows
        self.max_bytes = max_bytes
        self._block_rows = max(1, rotate_rows // 16)
        self.failing = ""  # why the last write failed; empty while writes succeed
        self.failed_writes = 0
        self.dropped_rows = 0
        self._retry_at = 0.0
        self._chunks: list[Columns] = []  # oldest first, each stamped (`_rows`)
        self._block: _Block | None = None  # the rows arriving now, after `_chunks`
        self._buffered = 0
        self._write_lock = threading.Lock()  # one write at a time
        self._lock = threading.Lock()  # held briefly: appends, and chunks taken or put back
        self._write_due = threading.Condition(self._lock)
        self._writer_thread: threading.Thread | None = None
        self._written = 0
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # unique per writer
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffers rows, stamped `logged_at` (see `add_columns`); a field a row lacks is empty."""
        if rows:
            names = dict.fromkeys(name for row in rows for name in row)
            self.add_columns({name: [row.get(name) for row in rows] for name in names}, len(rows))

    def add_columns(self, columns: Columns, count: int) -> None:
        """Buffers `count` rows given as columns, stamped `logged_at`, and wakes the writer
        thread once `rotate_rows` are buffered (starting it the first time).

        Columns of one-dimensional arrays are copied into the block being filled, or a new one
        when their names or types differ from its (a canary with other inputs) or it is full;
        a request of more rows than a block holds, or of other values (feedback's lists), is
        kept as it is given, as its own chunk."""
        now = time.time()
        types = _block_types(columns) if count <= self._block_rows else None
        with self._lock:
            if types is None:
                self._close_block()
                self._chunks.append({**columns, STAMP: np.full(count, now)})
            else:
                if self._block is None or self._block.types != types or self._block.rows + count > self._block_rows:
                    self._close_block()
                    self._block = _Block(types, self._block_rows)
                self._block.add(columns, count, now)
            self._buffered += count
            if not self._due():
                return
            if self._writer_thread is not None:
                self._write_due.notify()
                return
            writer = self._writer_thread = threading.Thread(target=self._write_when_due, name="log-writer", daemon=True)
        try:
            writer.start()  # outside the lock: other requests append meanwhile
        except RuntimeError:  # no thread to be had: the next full buffer tries again, flush writes meanwhile
            log.exception("log %s: its writer thread did not start", self.folder)
            with self._lock:
                self._writer_thread = None

    def _close_block(self) -> None:
        """Moves the block being filled, if any, to the end of `_chunks`. Called holding `_lock`."""
        if self._block is not None:
            self._chunks.append(self._block.columns())
            self._block = None

    def _due(self) -> bool:
        """Whether a full file waits to be written (and no failed write's retry is pending).
        Called holding `_lock`."""
        return self._buffered >= self.rotate_rows and time.monotonic() >= self._retry_at

    def _write_when_due(self) -> None:
        """The writer thread, for the log's life: writes full files whenever an append says they are due."""
        while True:
            with self._lock:
                while not self._due():
                    self._write_due.wait()
            try:
                self._write(full_files_only=True)
            except Exception:  # the rows stay buffered; tried again as after a failed write
                log.exception("log %s: a write failed", self.folder)
                with self._lock:
                    self._retry_at = time.monotonic() + self.RETRY_SECONDS

    def flush(self) -> Path | None:
        """Writes the buffered rows, if any, after a write under way; see `_write`."""
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
                    self._close_block()
                    chunks = self._take(min(self.rotate_rows, remaining))
                    self._written += 1
                    serial = self._written
                remaining -= sum(map(_rows, chunks))
                written = self._write_file(chunks, serial)
                if written is None:
                    return None
            return written

    def _take(self, rows: int) -> list[Columns]:
        """The oldest chunks up to `rows` rows (at least one chunk), out of the buffer in one
        cut: popping them one by one from the front would hold the lock requests append under
        for a time growing with the square of the chunks (20 ms for 20,000)."""
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
            self._chunks = chunks + self._chunks
            self._buffered += sum(map(_rows, chunks))
            dropped = 0  # the oldest chunks beyond the bound, cut at once as in `_take`
            while self._buffered > self.RETRY_FILES * self.rotate_rows and dropped < len(self._chunks):
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
        listed = _listed(self.folder)
        files, sizes = [path for path, _ in listed], [stat.st_size for _, stat in listed]
        while files and sum(sizes) > self.max_bytes and len(files) > 1:
            files.pop(0).unlink(missing_ok=True)
            sizes.pop(0)


def _rows(chunk: Columns) -> int:
    return len(chunk[STAMP])


class _Block:
    """Rows of requests with the same columns and types, copied into one array a column as
    they arrive (floats as float64, text and other objects as objects)."""

    def __init__(self, types: tuple[tuple[str, np.dtype], ...], capacity: int):
        self.types = types
        self.rows = 0
        self._arrays = {name: np.empty(capacity, dtype) for name, dtype in types}
        self._arrays[STAMP] = np.empty(capacity, np.float64)

    def add(self, columns: Columns, count: int, now: float) -> None:
        end = self.rows + count
        for name, array in self._arrays.items():
            array[self.rows : end] = now if name == STAMP else columns[name]
        self.rows = end

    def columns(self) -> Columns:
        """The rows as columns; copied when the block is not full, so its unused room is freed."""
        full = self.rows == len(self._arrays[STAMP])
        return {name: array if full else array[: self.rows].copy() for name, array in self._arrays.items()}


def _block_types(columns: Columns) -> tuple[tuple[str, np.dtype], ...] | None:
    """Each column's name and type in a block, or None when a column is not a one-dimensional
    array of numbers, booleans, text or objects (a time, say: an object array would change it)."""
    types = []
    for name, values in columns.items():
        kind = values.dtype.kind if isinstance(values, np.ndarray) and values.ndim == 1 else None
        if kind is None or kind not in "fbiuOUS":
            return None
        types.append((name, _FLOAT if kind == "f" else values.dtype if kind in "biu" else _OBJECT))
    return tuple(types)


_FLOAT, _OBJECT = np.dtype(np.float64), np.dtype(object)


def _table(chunks: list[Columns]) -> pd.DataFrame:
    import pandas as pd

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
    import pandas as pd

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
    """The log's files written at or after `since`, in name order, with when."""
    return [(path, stat.st_mtime) for path, stat in _listed(folder) if stat.st_mtime >= since]


def _listed(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """The log's files in name order, with their `stat`. Another process's bound may delete a
    file meanwhile (`_enforce_bound`): it is left out."""
    found = []
    for path in sorted(folder.glob(f"{PREFIX}*.parquet")):
        with contextlib.suppress(FileNotFoundError):
            found.append((path, path.stat()))
    return found


def _read(path: Path, columns: list[str] | None) -> pd.DataFrame | None:
    """A log file's rows; None when another process's bound deleted it since it was listed."""
    import pandas as pd

    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        return None
