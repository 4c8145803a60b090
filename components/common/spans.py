"""Finding complete spans under a data root and reading their files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Collection, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.common.errors import DataError

SUCCESS_MARKER = "_SUCCESS"
SPAN_PREFIX = "span="
READERS = {".parquet": "parquet", ".csv": "csv"}


@dataclasses.dataclass(frozen=True)
class SpanFolder:
    span_id: str
    path: Path

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.suffix in READERS and p.is_file())


def complete_spans(data_root: Path) -> list[SpanFolder]:
    """The spans under `data_root` whose `_SUCCESS` marker exists, oldest first.

    A span without its marker is still being written; it is skipped, not an error.

    Raises:
        DataError: the data root does not exist.
    """
    if not data_root.is_dir():
        raise DataError("data root does not exist or is not a folder", path=str(data_root))
    spans = [
        SpanFolder(child.name[len(SPAN_PREFIX) :], child)
        for child in data_root.iterdir()
        if child.is_dir() and child.name.startswith(SPAN_PREFIX) and (child / SUCCESS_MARKER).is_file()
    ]
    return sorted(spans, key=lambda span: span.span_id)


def read_file(path: Path, file_format: str = "") -> pd.DataFrame:
    """Reads one Parquet or CSV file.

    Args:
        path: The file.
        file_format: `parquet` or `csv`; by default taken from the file's suffix.

    Raises:
        DataError: the file is missing, truncated, corrupt or not of its format.
    """
    file_format = file_format or READERS.get(path.suffix, "")
    try:
        if file_format == "parquet":
            return pq.read_table(path).to_pandas()
        if file_format == "csv":
            return pd.read_csv(path)
    except (pa.ArrowException, OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read {file_format} file: {error}", path=str(path)) from None
    raise DataError(f"unknown file type (expected one of {', '.join(READERS)})", path=str(path))


def read_parquet_batches(path: Path, rows: int, columns: Collection[str] | None = None) -> Iterator[pd.DataFrame]:
    """One Parquet file, `rows` rows at a time: memory holds one batch, whatever the file's
    size. An empty file gives one empty frame.

    Args:
        columns: Only these of the file's columns (those it lacks are left out, for the
            caller to name); None: all.

    Raises:
        DataError: the file is missing, truncated, corrupt or not Parquet.
    """
    try:
        parquet = pq.ParquetFile(path)
        kept = [name for name in parquet.schema_arrow.names if columns is None or name in columns]
        batches = parquet.iter_batches(batch_size=rows, columns=kept)
        first = next(batches, None)
        yield (first if first is not None else parquet.schema_arrow.empty_table().select(kept)).to_pandas()
        yield from (batch.to_pandas() for batch in batches)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"cannot read parquet file: {error}", path=str(path)) from None


def read_spans(spans: list[SpanFolder], unique_key: str = "", index_by_file: bool = False) -> pd.DataFrame:
    """All rows of the given spans, in span order.

    Args:
        spans: The spans to read.
        unique_key: A column whose values must each be on one row only (a span written
            twice, or rows repeated, would train on them twice); empty: not checked.
        index_by_file: Index each row by the position of its file among the spans' files
            in reading order (`[f for s in spans for f in s.files]`) instead of 0..n-1, so
            that a caller can tell each row's span and file without adding a column.

    Raises:
        DataError: a span with no data file or no rows, an unreadable file, files whose
            columns or column types differ (the first file is the reference), or a value
            of `unique_key` on more than one row.
    """
    frames: list[tuple[Path, pd.DataFrame]] = []
    for span in spans:
        if not span.path.is_dir():
            raise DataError("span folder does not exist", path=str(span.path))
        files = span.files
        if not files:
            raise DataError("span has no .parquet or .csv file", path=str(span.path))
        span_frames = [(path, read_file(path)) for path in files]
        if sum(len(frame) for _, frame in span_frames) == 0:
            raise DataError("span is empty (0 rows)", path=str(span.path))
        frames.extend(span_frames)
    reference_path, reference = frames[0]
    for path, frame in frames[1:]:
        _check_same_columns(reference_path, reference, path, frame)
    if unique_key and unique_key in reference.columns:
        _check_unique(frames, unique_key)
    rows = pd.concat([frame for _, frame in frames], ignore_index=True)
    if index_by_file:
        rows.index = np.repeat(np.arange(len(frames)), [len(frame) for _, frame in frames])
    return rows


def _check_unique(frames: list[tuple[Path, pd.DataFrame]], key: str) -> None:
    keys = pd.concat([pd.DataFrame({key: frame[key], "file": str(path)}) for path, frame in frames], ignore_index=True)
    repeated = keys[keys[key].duplicated(keep=False)]
    if len(repeated):
        value = repeated[key].iloc[0]
        rows = repeated[repeated[key] == value]
        raise DataError(
            f"the same key on {len(rows)} rows ({repeated[key].nunique()} keys repeated)",
            path=", ".join(dict.fromkeys(rows["file"])),
            feature=key,
            value=value,
        )


def _check_same_columns(reference_path: Path, reference: pd.DataFrame, path: Path, frame: pd.DataFrame) -> None:
    for column in frame.columns.difference(reference.columns):
        raise DataError(f"column not in {reference_path}", path=str(path), feature=column)
    for column in reference.columns.difference(frame.columns):
        raise DataError(f"column missing (present in {reference_path})", path=str(path), feature=column)
    for column in reference.columns:
        if reference[column].dtype != frame[column].dtype:
            raise DataError(
                f"type {frame[column].dtype} differs from {reference[column].dtype} in {reference_path}",
                path=str(path),
                feature=column,
                value=_first_value(frame[column]),
            )


def _first_value(column: pd.Series) -> object:
    present = column.dropna()
    return present.iloc[0] if len(present) else None
