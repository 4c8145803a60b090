"""Ingest: the latest window of complete spans, split deterministically into train and eval."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pandas as pd

from components.common.datasets import DatasetConfig
from components.common.errors import ConfigError, DataError
from components.common.spans import SpanFolder, complete_spans, read_spans
from features.joins import ENTITY_COLUMNS, JoinCounts, training_features
from features.sources import tables_root

HASH_BUCKETS = 100


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """What was read and how it was split.

    Attributes:
        spans: Span ids of the window, oldest first.
        files: Every file read.
        train_rows, eval_rows: Rows written to each split.
        fingerprint: SHA-256 of the files' names and bytes: the same data gives the same value.
        features: With the feature store: rows joined, rows missing each table (defaults used)
            and the first and last scheduled departure.
    """

    spans: tuple[str, ...]
    files: tuple[str, ...]
    train_rows: int
    eval_rows: int
    fingerprint: str
    features: JoinCounts | None = None

    @property
    def span_folders(self) -> list[str]:
        return sorted({str(Path(f).parent) for f in self.files})


def ingest(
    data_root: Path,
    window_spans: int,
    eval_percent: int,
    key: str,
    train_path: Path,
    eval_path: Path,
    dataset: DatasetConfig | None = None,
    feature_tables: str = "",
) -> IngestResult:
    """Reads the latest `window_spans` complete spans and writes the train and eval splits as Parquet.

    When `dataset` takes its features from the feature store, each row gets them
    point-in-time correct from the feature tables (`feature_tables`, a folder or URI;
    default `<data_root>/features/`) and keeps only the key, the features and the label.

    A row goes to eval when a hash of its `key` column (of the whole row when `key` is
    empty) falls in the first `eval_percent` of 100 buckets, so a row keeps its split
    when the window moves.

    Raises:
        DataError: no complete span, unreadable or empty spans, inconsistent files, a
            missing key column, or a key value on more than one row.
        ConfigError: `window_spans` < 1 or `eval_percent` outside 1..99.
    """
    check_window(window_spans, eval_percent)
    spans = latest_spans(data_root, window_spans)
    frame = read_spans(spans, unique_key=key)
    joined = None
    if dataset is not None and dataset.feature_store:
        frame, joined = examples_with_features(
            frame, dataset, tables_root(data_root, feature_tables), str(spans[-1].path)
        )
    if key and key not in frame.columns:
        raise DataError("split key column is missing", path=str(spans[-1].path), feature=key)
    hashed = pd.util.hash_pandas_object(frame[key] if key else frame, index=False)
    is_eval = (hashed % HASH_BUCKETS) < eval_percent
    frame[~is_eval].to_parquet(train_path, index=False)
    frame[is_eval].to_parquet(eval_path, index=False)
    files = [path for span in spans for path in span.files]
    return IngestResult(
        spans=tuple(span.span_id for span in spans),
        files=tuple(str(path) for path in files),
        train_rows=int((~is_eval).sum()),
        eval_rows=int(is_eval.sum()),
        fingerprint=fingerprint(files),
        features=joined,
    )


def check_window(window_spans: int, eval_percent: int) -> None:
    """Ingest's settings, checked before reading anything (and by `ct run` before a run starts).

    Raises:
        ConfigError: `window_spans` < 1 or `eval_percent` outside 1..99, named with its parameter.
    """
    if window_spans < 1:
        raise ConfigError(f"window_spans={window_spans}: must be at least 1")
    if not 0 < eval_percent < 100:
        raise ConfigError(f"eval_percent={eval_percent}: must be between 1 and 99")


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
