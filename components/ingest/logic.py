"""Ingest: the latest window of complete spans, split deterministically into train and eval.

By default eval is the newest rows of the window (out of time), as the model will be used:
on data later than what it trained on. Flights of one day share weather and delays, so a
split by a hash of the key puts the same days on both sides and overstates live AUC.

The window is streamed, never held whole: a first pass reads only the split's columns (the
key and the event time) and keeps a hash and a time per row; the split is decided on those;
a second pass reads the rows a batch at a time, joins their features and writes each split
as a folder of Parquet shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from components.common.datasets import DatasetConfig
from components.common.errors import ConfigError, DataError
from components.common.spans import (
    SPAN_PREFIX,
    Location,
    ShardWriter,
    SpanFolder,
    column_types,
    complete_spans,
    data_location,
    file_batches,
    read_column,
    reading_storage,
    span_data_files,
)
from features.joins import ENTITY_COLUMNS, FeatureJoin, JoinCounts
from features.sources import tables_root

HASH_BUCKETS = 100
BATCH_ROWS = 65_536  # rows a step holds at a time
SHARD_ROWS = 1_048_576  # rows of one Parquet shard of a split
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
        folders = sorted({data_location(f).parent for f in self.files}, key=str)
        return {folder.name.removeprefix(SPAN_PREFIX): str(folder) for folder in folders}


def ingest(
    data_root: Location,
    window_spans: int,
    eval_percent: int,
    key: str,
    train_path: Path,
    eval_path: Path,
    dataset: DatasetConfig | None = None,
    feature_tables: str = "",
    eval_split: str = TIME_SPLIT,
    batch_rows: int = BATCH_ROWS,
    shard_rows: int = SHARD_ROWS,
) -> IngestResult:
    """Reads the latest `window_spans` complete spans and writes the train and eval splits, each
    a folder of Parquet shards of at most `shard_rows` rows, holding `batch_rows` rows at a time.

    When `dataset` takes its features from the feature store, each row gets them
    point-in-time correct from the feature tables (`feature_tables`, a folder or URI;
    default `<data_root>/features/`) and keeps only the key, the features and the label.

    `eval_split` says which rows go to eval:
      time: the newest `eval_percent`% of the rows: ordered by span (oldest first), then by
        the dataset's event time when it declares one, then by a hash of `key` (of the span's
        whole row when `key` is empty), the last ceil(rows * eval_percent / 100) are eval, so
        the model is judged on data later than what it trained on.
      hash: the rows whose hash of `key` falls in the first `eval_percent` of 100 buckets,
        so a row keeps its split when the window moves.
    Each split keeps the rows in reading order.

    Raises:
        DataError: no complete span, unreadable or empty spans, inconsistent files, a
            missing key column, a key value on more than one row, or (time split) a missing
            event time column or a value of it that is missing or not ISO-8601, or files
            that changed while they were read. A split is written only once the window has
            been read and checked; one that fails while it is written is removed.
        ConfigError: `window_spans` < 1, `eval_percent` outside 1..99, or an unknown `eval_split`.
    """
    check_window(window_spans, eval_percent, eval_split)
    spans = latest_spans(data_root, window_spans)
    span_files = [span_data_files(span) for span in spans]
    files = [path for paths in span_files for path in paths]
    span_of_file = np.repeat(np.arange(len(spans)), [len(paths) for paths in span_files])
    types = column_types(files)
    newest = str(spans[-1].path)
    if key and key not in types:
        raise DataError("split key column is missing", path=newest, feature=key)
    event_time = dataset.event_time if dataset is not None and eval_split == TIME_SPLIT else ""
    if event_time and event_time not in types:
        raise DataError("event time column is missing", path=newest, feature=event_time)
    keys = read_keys(files, key, event_time, batch_rows, types)
    for span, rows in zip(spans, np.bincount(span_of_file, weights=keys.rows_per_file, minlength=len(spans))):
        if rows == 0:
            raise DataError("span is empty (0 rows)", path=str(span.path))
    if key:
        check_unique(files, keys, key)
    hashed_what = key or "the row"
    if eval_split == HASH_SPLIT:
        is_eval = keys.hashes % HASH_BUCKETS < eval_percent
        split_rule, eval_cut = f"hash of {hashed_what}, {eval_percent} of {HASH_BUCKETS} buckets", ""
    else:
        span_of_row = np.repeat(span_of_file, keys.rows_per_file)
        is_eval, split_rule, first_eval = newest_rows(eval_percent, span_of_row, keys, hashed_what, event_time)
        eval_cut = str(keys.value(files, event_time, first_eval)) if event_time else ""
    feature_join = None
    if dataset is not None and dataset.feature_store:
        feature_join = FeatureJoin(tables_root(data_root, feature_tables))
        types = {name: arrow_type for name, arrow_type in types.items() if name not in feature_join.features}
    span_paths = [str(spans[span].path) for span in span_of_file]
    paths = (train_path, eval_path)
    joined = write_splits(files, span_paths, is_eval, dataset, feature_join, paths, batch_rows, shard_rows, types)
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


@dataclasses.dataclass(frozen=True)
class WindowKeys:
    """What the first pass keeps of each row of the window, in reading order: 8 to 16 bytes a
    row, whatever the rows hold.

    Attributes:
        hashes: The hash of the row's key (of the whole row without a key).
        nanoseconds: The row's event time as nanoseconds since the epoch, UTC; None without one.
        rows_per_file: Rows of each file read.
    """

    hashes: np.ndarray
    nanoseconds: np.ndarray | None
    rows_per_file: np.ndarray

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The file of each of `rows` (its position among the files read) and the row within it."""
        starts = np.cumsum(self.rows_per_file) - self.rows_per_file
        files = np.searchsorted(starts, rows, side="right") - 1
        return files, rows - starts[files]

    def value(self, files: list[Location], column: str, row: int) -> object:
        """Row `row`'s value of `column`, read again from its file."""
        [file], [within] = self.locate(np.array([row]))
        return read_column(files[file], column).iloc[within]


def read_keys(
    files: list[Location], key: str, event_time: str, batch_rows: int, types: dict[str, pa.DataType]
) -> WindowKeys:
    """The first pass: reads only `key` (every column without a key) and `event_time` (if
    any) of the files, a batch at a time. An integer column (`types`) is hashed as the same
    type in every batch, those with a missing value too (pandas reads them as floats).

    Raises:
        DataError: an unreadable file, or an event time that is missing or not ISO-8601.
    """
    columns = [name for name in (key, event_time) if name] if key else None
    integers = {name: "Int64" for name, arrow_type in types.items() if pa.types.is_integer(arrow_type)}
    hashes, times, rows_per_file = [], [], []
    for path in files:
        rows = 0
        for batch in file_batches(path, batch_rows, columns):
            hashed = batch[[key]] if key else batch
            hashed = hashed.astype({name: kind for name, kind in integers.items() if name in hashed.columns})
            hashes.append(pd.util.hash_pandas_object(hashed[key] if key else hashed, index=False).to_numpy())
            if event_time:
                times.append(event_nanoseconds(batch[event_time], event_time, path))
            rows += len(batch)
        rows_per_file.append(rows)
    return WindowKeys(
        np.concatenate(hashes),
        np.concatenate(times) if event_time else None,
        np.array(rows_per_file, dtype=np.int64),
    )


def event_nanoseconds(written: pd.Series, column: str, path: Location) -> np.ndarray:
    """Event times (ISO-8601 strings, UTC unless they carry an offset, or timestamps) as
    nanoseconds since the epoch, UTC.

    Raises:
        DataError: a value that is missing or not an ISO-8601 date or time (the first such
            value is named with its file).
    """
    text = written.astype(str)
    times = pd.to_datetime(text.where(text.str.fullmatch(ISO_8601)), utc=True, errors="coerce")
    bad = times.isna().to_numpy()  # missing, not ISO-8601, or a date that does not exist (2013-02-30)
    if bad.any():
        value = written.iloc[int(bad.argmax())]
        raise DataError(
            "event time is missing"
            if pd.api.types.is_scalar(value) and pd.isna(value)
            else "event time is not ISO-8601 like 2013-01-01T10:15:00Z",
            path=str(path),
            feature=column,
            value=value,
        )
    return times.dt.tz_convert(None).to_numpy().view("int64")


def check_unique(files: list[Location], keys: WindowKeys, key: str) -> None:
    """Raises DataError when a value of `key` is on more than one row (a span written twice, or
    rows repeated, would train on them twice), naming the first such value in reading order
    and its files. Rows whose keys hash alike are read again to compare their values.
    """
    ordered = np.sort(keys.hashes)
    alike = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not len(alike):
        return
    of_file, within = keys.locate(np.flatnonzero(np.isin(keys.hashes, alike)))
    columns = {file: read_column(files[file], key) for file in np.unique(of_file)}
    candidates = pd.DataFrame(
        {
            key: [columns[file].iloc[row] for file, row in zip(of_file, within)],
            "file": [str(files[file]) for file in of_file],
        }
    )
    repeated = candidates[candidates[key].duplicated(keep=False)]
    if len(repeated):
        value = repeated[key].iloc[0]
        same = repeated[repeated[key] == value]
        raise DataError(
            f"the same key on {len(same)} rows ({repeated[key].nunique()} keys repeated)",
            path=", ".join(dict.fromkeys(same["file"])),
            feature=key,
            value=value,
        )


def newest_rows(
    eval_percent: int, span_of_row: np.ndarray, keys: WindowKeys, hashed_what: str, event_time: str
) -> tuple[np.ndarray, str, int]:
    """The time split: the last ceil(rows * eval_percent / 100) rows ordered by span, event
    time (when there is one), then the hash of `hashed_what` (rows equal on all three keep
    their reading order).

    Returns:
        Whether each row is eval, the split rule in words, and the first eval row in that order.
    """
    if keys.nanoseconds is None:
        order = np.lexsort((keys.hashes, span_of_row))  # stable; the last key is the most significant
    else:
        order = np.lexsort((keys.hashes, keys.nanoseconds, span_of_row))
    eval_rows = -(-len(order) * eval_percent // 100)  # ceil(rows * eval_percent / 100), in integers
    first = len(order) - eval_rows
    is_eval = np.zeros(len(order), dtype=bool)
    is_eval[order[first:]] = True
    if keys.nanoseconds is None:
        return is_eval, f"newest {eval_percent}% by span, then hash of {hashed_what}", int(order[first])
    return is_eval, f"newest {eval_percent}% by {event_time}", int(order[first])


def write_splits(
    files: list[Location],
    span_paths: list[str],
    is_eval: np.ndarray,
    dataset: DatasetConfig | None,
    feature_join: FeatureJoin | None,
    paths: tuple[Path, Path],
    batch_rows: int,
    shard_rows: int,
    types: dict[str, pa.DataType],
) -> JoinCounts | None:
    """The second pass: reads the files a batch at a time, joins the batch's features (with
    `feature_join`; `span_paths` names each file's span in its errors) and writes its rows to
    the train or eval shards (`paths`) by `is_eval`.

    Returns:
        The join's counts over the window; None without a join.

    Raises:
        DataError: the join's errors, or files that hold other rows than the first pass read.
    """
    writers: list[ShardWriter] = []
    joined: JoinCounts | None = None
    row = 0
    try:
        for path, span in zip(files, span_paths):
            for batch in file_batches(path, batch_rows):
                if batch.empty:  # an empty file's; its columns' types may be unknown
                    continue
                if row + len(batch) > len(is_eval):
                    raise DataError("the window's files changed while ingest read them (more rows)", path=str(path))
                in_eval = is_eval[row : row + len(batch)]
                row += len(batch)
                if feature_join is not None:
                    batch, counts = joined_examples(feature_join, batch, dataset, span)
                    joined = counts if joined is None else joined.merged(counts)
                if not writers:
                    schema = split_schema(batch, types)
                    writers = [ShardWriter(folder, schema, shard_rows) for folder in paths]
                table = pa.Table.from_pandas(batch, schema=writers[0].schema, preserve_index=False)
                writers[0].write(table.filter(pa.array(~in_eval)))
                writers[1].write(table.filter(pa.array(in_eval)))
        if row != len(is_eval):
            raise DataError("the window's files changed while ingest read them (fewer rows)", path=span_paths[-1])
    except BaseException:
        for writer in writers:
            writer.close()
            shutil.rmtree(writer.folder, ignore_errors=True)
        raise
    for writer in writers:
        writer.close()
    return joined


def split_schema(batch: pd.DataFrame, types: dict[str, pa.DataType]) -> pa.Schema:
    """The splits' columns, as the first batch has them: a span's column keeps its type in the
    span's files (`types`, which leave out the columns the join replaces); any other column
    takes the type it has in the batch."""
    inferred = pa.Schema.from_pandas(batch, preserve_index=False)
    kept = {name: arrow_type for name, arrow_type in types.items() if not pa.types.is_null(arrow_type)}
    return pa.schema(pa.field(field.name, kept.get(field.name, field.type)) for field in inferred)


def examples_with_features(
    flights: pd.DataFrame, dataset: DatasetConfig, feature_root: str | Path, where: str
) -> tuple[pd.DataFrame, JoinCounts]:
    """Flights as examples, their features read from the feature tables under `feature_root`
    (as `joined_examples`)."""
    return joined_examples(FeatureJoin(feature_root), flights, dataset, where)


def joined_examples(
    feature_join: FeatureJoin, flights: pd.DataFrame, dataset: DatasetConfig, where: str
) -> tuple[pd.DataFrame, JoinCounts]:
    """Flights as examples: their features from the feature store (point in time), then the
    key, the features and the label; `where` names the span in errors.

    The entity columns the join consumed are left out; any other column of the span is kept,
    so data validation sees a column the schema does not know and stops the run, unless the
    schema declares that it may appear.
    """
    joined, counts = feature_join.join(flights, where)
    known = [c for c in (dataset.key, *dataset.features, dataset.label) if c]
    others = [c for c in flights.columns if c not in known and c not in ENTITY_COLUMNS]
    return joined[known + others], counts


def latest_spans(data_root: Location, window_spans: int) -> list[SpanFolder]:
    """The latest `window_spans` complete spans, oldest first.

    Raises:
        DataError: the data root does not exist or has no complete span.
    """
    spans = complete_spans(data_root)[-window_spans:]
    if not spans:
        raise DataError("no complete span (a span=<id>/ folder with a _SUCCESS marker)", path=str(data_root))
    return spans


def fingerprint(files: list[Location]) -> str:
    """SHA-256 of the files' span folders, names and bytes."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.parent.name}/{path.name}".encode())
        with reading_storage(path), path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
