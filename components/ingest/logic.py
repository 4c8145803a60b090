"""Ingest: the latest window of complete spans, split deterministically into train and eval.

By default eval is the newest rows of the window (out of time), as the model will be used:
on data later than what it trained on. Flights of one day share weather and delays, so a
split by a hash of the key puts the same days on both sides and overstates live AUC.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from components.common.datasets import DatasetConfig
from components.common.errors import ConfigError, DataError
from components.common.spans import SPAN_PREFIX, SpanFolder, complete_spans, read_spans
from features.joins import ENTITY_COLUMNS, JoinCounts, training_features
from features.sources import tables_root

HASH_BUCKETS = 100
TIME_SPLIT, HASH_SPLIT = "time", "hash"
EVAL_SPLITS = (TIME_SPLIT, HASH_SPLIT)
# How event times are written: 2013-01-01, 2013-01-01T10:15:00Z, 2013-01-01 05:15:00.5-05:00 (UTC without an offset).
ISO_8601 = r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?(?:Z|[+-]\d\d:?\d\d)?"


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """What was read and how it was split.

    Attributes:
        spans: Span ids of the window, oldest first.
        files: Every file read.
        train_rows, eval_rows: Rows written to each split.
        fingerprint: SHA-256 of the files' names and bytes: the same data gives the same value.
        split_rule: Which rows went to eval, in words (`newest 20% by sched_dep`,
            `hash of flight_id, 20 of 100 buckets`).
        eval_cut: For a time split by event time, the first eval row's event time as the
            span writes it (no train row of its span is later); empty otherwise.
        features: With the feature store: rows joined, rows missing each table (defaults used)
            and the first and last scheduled departure.
    """

    spans: tuple[str, ...]
    files: tuple[str, ...]
    train_rows: int
    eval_rows: int
    fingerprint: str
    split_rule: str
    eval_cut: str = ""
    features: JoinCounts | None = None

    @property
    def span_folders(self) -> dict[str, str]:
        """Each span id of the window and the folder it was read from."""
        folders = sorted({Path(f).parent for f in self.files})
        return {folder.name.removeprefix(SPAN_PREFIX): str(folder) for folder in folders}


@dataclasses.dataclass(frozen=True)
class EventTimes:
    """The rows' event times, in reading order.

    Attributes:
        column: The dataset's event time column.
        written: Its values as the spans write them.
        nanoseconds: The same as nanoseconds since the epoch, UTC.
    """

    column: str
    written: pd.Series
    nanoseconds: np.ndarray


def ingest(
    data_root: Path,
    window_spans: int,
    eval_percent: int,
    key: str,
    train_path: Path,
    eval_path: Path,
    dataset: DatasetConfig | None = None,
    feature_tables: str = "",
    eval_split: str = TIME_SPLIT,
) -> IngestResult:
    """Reads the latest `window_spans` complete spans and writes the train and eval splits as Parquet.

    When `dataset` takes its features from the feature store, each row gets them
    point-in-time correct from the feature tables (`feature_tables`, a folder or URI;
    default `<data_root>/features/`) and keeps only the key, the features and the label.

    `eval_split` says which rows go to eval:
      time: the newest `eval_percent`% of the rows: ordered by span (oldest first), then by
        the dataset's event time when it declares one, then by a hash of `key` (of the whole
        row when `key` is empty), the last ceil(rows * eval_percent / 100) are eval, so the
        model is judged on data later than what it trained on.
      hash: the rows whose hash of `key` falls in the first `eval_percent` of 100 buckets,
        so a row keeps its split when the window moves.

    Raises:
        DataError: no complete span, unreadable or empty spans, inconsistent files, a
            missing key column, a key value on more than one row, or (time split) a missing
            event time column or a value of it that is missing or not ISO-8601.
        ConfigError: `window_spans` < 1, `eval_percent` outside 1..99, or an unknown `eval_split`.
    """
    check_window(window_spans, eval_percent, eval_split)
    spans = latest_spans(data_root, window_spans)
    span_files = [span.files for span in spans]
    files = [path for paths in span_files for path in paths]
    frame = read_spans(spans, unique_key=key, index_by_file=True)
    file_of_row = frame.index.to_numpy()
    frame = frame.reset_index(drop=True)
    span_of_row = np.repeat(np.arange(len(spans)), [len(paths) for paths in span_files])[file_of_row]
    event_time = dataset.event_time if dataset is not None and eval_split == TIME_SPLIT else ""
    # Read before the join, which consumes entity columns (such as the scheduled departure)
    # and keeps the rows in their order: the times stay aligned with the examples by position.
    times = event_times(frame, event_time, files, file_of_row, str(spans[-1].path)) if event_time else None
    joined = None
    if dataset is not None and dataset.feature_store:
        frame, joined = examples_with_features(
            frame, dataset, tables_root(data_root, feature_tables), str(spans[-1].path)
        )
    if key and key not in frame.columns:
        raise DataError("split key column is missing", path=str(spans[-1].path), feature=key)
    hashed = pd.util.hash_pandas_object(frame[key] if key else frame, index=False).to_numpy()
    hashed_what = key or "the row"
    if eval_split == HASH_SPLIT:
        is_eval = hashed % HASH_BUCKETS < eval_percent
        split_rule, eval_cut = f"hash of {hashed_what}, {eval_percent} of {HASH_BUCKETS} buckets", ""
    else:
        is_eval, split_rule, eval_cut = newest_rows(eval_percent, span_of_row, hashed, hashed_what, times)
    frame[~is_eval].to_parquet(train_path, index=False)
    frame[is_eval].to_parquet(eval_path, index=False)
    return IngestResult(
        spans=tuple(span.span_id for span in spans),
        files=tuple(str(path) for path in files),
        train_rows=int((~is_eval).sum()),
        eval_rows=int(is_eval.sum()),
        fingerprint=fingerprint(files),
        split_rule=split_rule,
        eval_cut=eval_cut,
        features=joined,
    )


def check_window(window_spans: int, eval_percent: int, eval_split: str) -> None:
    """Ingest's settings, checked before reading anything (and by `ct run` before a run starts).

    Raises:
        ConfigError: `window_spans` < 1, `eval_percent` outside 1..99 or `eval_split` neither
            `time` nor `hash`, named with its parameter.
    """
    if window_spans < 1:
        raise ConfigError(f"window_spans={window_spans}: must be at least 1")
    if not 0 < eval_percent < 100:
        raise ConfigError(f"eval_percent={eval_percent}: must be between 1 and 99")
    if eval_split not in EVAL_SPLITS:
        raise ConfigError(f"eval_split={eval_split!r}: must be {' or '.join(EVAL_SPLITS)}")


def event_times(frame: pd.DataFrame, column: str, files: list[Path], file_of_row: np.ndarray, where: str) -> EventTimes:
    """The rows' event times from `column`: ISO-8601 strings (UTC unless they carry an offset) or timestamps.

    Args:
        frame: The spans' rows.
        column: The dataset's event time column.
        files: The files read, in reading order; `file_of_row` holds each row's position among them.
        where: The span named when the column is missing.

    Raises:
        DataError: the column is missing, or a value is missing or not an ISO-8601 date or
            time (the first such value is named with its file).
    """
    if column not in frame.columns:
        raise DataError("event time column is missing", path=where, feature=column)
    written = frame[column]
    text = written.astype(str)
    times = pd.to_datetime(text.where(text.str.fullmatch(ISO_8601)), utc=True, errors="coerce")
    bad = times.isna().to_numpy()  # missing, not ISO-8601, or a date that does not exist (2013-02-30)
    if bad.any():
        row = int(bad.argmax())
        value = written.iloc[row]
        raise DataError(
            "event time is missing"
            if pd.api.types.is_scalar(value) and pd.isna(value)
            else "event time is not ISO-8601 like 2013-01-01T10:15:00Z",
            path=str(files[file_of_row[row]]),
            feature=column,
            value=value,
        )
    return EventTimes(column, written, times.dt.tz_convert(None).to_numpy().view("int64"))


def newest_rows(
    eval_percent: int, span_of_row: np.ndarray, hashed: np.ndarray, hashed_what: str, times: EventTimes | None
) -> tuple[np.ndarray, str, str]:
    """The time split: the last ceil(rows * eval_percent / 100) rows ordered by span, event
    time (when there are `times`), then `hashed`, the hash of `hashed_what` (rows equal on all
    three keep their reading order).

    Returns:
        Whether each row is eval, the split rule in words, and the first eval row's event
        time as written (empty without `times`).
    """
    keys = (hashed, span_of_row) if times is None else (hashed, times.nanoseconds, span_of_row)
    order = np.lexsort(keys)  # stable; the last key is the most significant
    eval_rows = -(-len(order) * eval_percent // 100)  # ceil(rows * eval_percent / 100), in integers
    first = len(order) - eval_rows
    is_eval = np.zeros(len(order), dtype=bool)
    is_eval[order[first:]] = True
    if times is None:
        return is_eval, f"newest {eval_percent}% by span, then hash of {hashed_what}", ""
    return is_eval, f"newest {eval_percent}% by {times.column}", str(times.written.iloc[order[first]])


def examples_with_features(
    flights: pd.DataFrame, dataset: DatasetConfig, feature_root: str | Path, where: str
) -> tuple[pd.DataFrame, JoinCounts]:
    """Flights as examples: their features from the feature store (point in time), then the
    key, the features and the label; `where` names the span in errors.

    The entity columns the join consumed are left out; any other column of the span is kept,
    so data validation sees a column the schema does not know and stops the run, unless the
    schema declares that it may appear.
    """
    joined, counts = training_features(flights, feature_root, where)
    known = [c for c in (dataset.key, *dataset.features, dataset.label) if c]
    others = [c for c in flights.columns if c not in known and c not in ENTITY_COLUMNS]
    return joined[known + others], counts


def latest_spans(data_root: Path, window_spans: int) -> list[SpanFolder]:
    """The latest `window_spans` complete spans, oldest first.

    Raises:
        DataError: the data root does not exist or has no complete span.
    """
    spans = complete_spans(data_root)[-window_spans:]
    if not spans:
        raise DataError("no complete span (a span=<id>/ folder with a _SUCCESS marker)", path=str(data_root))
    return spans


def fingerprint(files: list[Path]) -> str:
    """SHA-256 of the files' span folders, names and bytes."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.parent.name}/{path.name}".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
