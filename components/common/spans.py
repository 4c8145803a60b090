"""Finding complete spans under a data root and reading their files.

A data root is a folder or an object-storage URI (`s3://bucket/prefix`, through fsspec's s3fs
with the standard AWS configuration, as the feature tables are read). Both are walked with
pathlib's methods (universal_pathlib's paths for a URI), and Parquet files in object storage
are read in place, by ranges, one record batch at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Collection, Iterator, TypeAlias

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from components.common.errors import ConfigError, DataError

if TYPE_CHECKING:  # pandas is imported where frames are made: every `ct` command imports this
    import pandas as pd  # module, and pandas' 0.3 s would hold back the start of `ct run`'s step host

SUCCESS_MARKER = "_SUCCESS"
SPAN_PREFIX = "span="
PARQUET = ".parquet"
ROW_GROUP_ROWS = 65_536  # at most, in a shard ShardWriter writes: what a reader of one row group holds
READERS = {PARQUET: "parquet", ".csv": "csv"}
OBJECT_STORAGE = ("s3://",)  # what this image reaches (s3fs); gs:// would need gcsfs
Location: TypeAlias = Path | UPath  # a local path, or a path in object storage


def data_location(location: str | Path) -> Location:
    """A folder, or an object-storage URI as a path with pathlib's methods, whose file system
    keeps no listings: every look lists the bucket as it is now (a long-running controller
    sees spans arrive, complete and change).

    Raises:
        ConfigError: a URI of a scheme other than s3://.
    """
    text = str(location)
    if "://" not in text:
        return Path(text)
    if not text.startswith(OBJECT_STORAGE):
        raise ConfigError(f"{text}: a data root is a folder or an {' or '.join(OBJECT_STORAGE)} URI")
    return UPath(text, use_listings_cache=False)


@dataclasses.dataclass(frozen=True)
class SpanFolder:
    span_id: str
    path: Location

    @property
    def files(self) -> list[Location]:
        with reading_storage(self.path):
            return sorted(p for p in self.path.iterdir() if p.suffix in READERS and p.is_file())


def complete_spans(data_root: Location) -> list[SpanFolder]:
    """The spans under `data_root` whose `_SUCCESS` marker exists, oldest first.

    A span without its marker is still being written; it is skipped, not an error.

    Raises:
        DataError: the data root does not exist, or its storage cannot be read (unreachable,
            access refused).
    """
    with reading_storage(data_root):
        if not data_root.is_dir():
            raise DataError("data root does not exist or is not a folder", path=str(data_root))
        spans = [
            SpanFolder(marker.parent.name[len(SPAN_PREFIX) :], marker.parent) for marker in _span_markers(data_root)
        ]
    return sorted(spans, key=lambda span: span.span_id)


def _span_markers(data_root: Location) -> list[Location]:
    """The `_SUCCESS` files of the span folders under `data_root`. In object storage they come
    from one listing of every object under the prefix (a request per thousand objects), not
    from a request or two per span: the controller looks at every poll."""
    pattern = f"{SPAN_PREFIX}*/{SUCCESS_MARKER}"
    if isinstance(data_root, Path):
        return [marker for marker in data_root.glob(pattern) if marker.is_file()]
    inside = (PurePosixPath(name).relative_to(data_root.path) for name in data_root.fs.find(data_root.path))
    return [data_root / path for path in inside if len(path.parts) == 2 and path.match(pattern)]


@contextlib.contextmanager
def reading_storage(path: Location) -> Iterator[None]:
    """What a file system or object store raises while `path` is listed or read (gone,
    unreachable, access refused, changed while read) as a DataError naming it."""
    try:
        yield
    except OSError as error:
        raise DataError(f"cannot read: {type(error).__name__}: {error}", path=str(path)) from None


def read_file(path: Location, file_format: str = "") -> pd.DataFrame:
    """Reads one Parquet or CSV file, or a folder of Parquet shards (as ingest writes a split).

    Args:
        path: The file or folder.
        file_format: `parquet` or `csv`; by default taken from the file's suffix.

    Raises:
        DataError: the file is missing, truncated, corrupt or not of its format.
    """
    import pandas as pd

    file_format = file_format or READERS.get(path.suffix, "")
    shards = parquet_files(path) if file_format == "parquet" else []
    try:
        if file_format == "parquet":
            return pa.concat_tables(_read_table(shard) for shard in shards).to_pandas()
        if file_format == "csv":
            with path.open("rb") as handle:
                return pd.read_csv(handle)
    except (pa.ArrowException, OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read {file_format} file: {error}", path=str(path)) from None
    raise DataError(f"unknown file type (expected one of {', '.join(READERS)})", path=str(path))


def parquet_files(path: Location) -> list[Location]:
    """A Parquet file itself, or the shards of a folder in name order.

    Raises:
        DataError: a folder with no `.parquet` file.
    """
    if not path.is_dir():
        return [path]
    shards = sorted(shard for shard in path.glob(f"*{PARQUET}") if shard.is_file())
    if not shards:
        raise DataError(f"folder has no {PARQUET} file", path=str(path))
    return shards


def parquet_pattern(location: str | Path) -> str:
    """The file pattern Beam's Parquet readers take for a file or a folder of shards, local or in
    object storage (a URI such as `s3://bucket/run/train`: a folder unless it ends in `.parquet`)."""
    text = str(location)
    if "://" in text:
        return text if text.endswith(PARQUET) else f"{text.rstrip('/')}/*{PARQUET}"
    return f"{text}/*{PARQUET}" if Path(text).is_dir() else text


def read_parquet_batches(path: Location, rows: int, columns: Collection[str] | None = None) -> Iterator[pd.DataFrame]:
    """A Parquet file or a folder of shards, `rows` rows at a time: memory holds one batch,
    whatever the data's size. No rows give one empty frame.

    Args:
        columns: Only these of the file's columns (those it lacks are left out, for the
            caller to name); None: all.

    Raises:
        DataError: the file is missing, truncated, corrupt or not Parquet (the shard is named).
    """
    for batch in read_record_batches(path, rows, columns, empty=True):
        yield batch.to_pandas()


def read_record_batches(
    path: Location, rows: int, columns: Collection[str] | None = None, empty: bool = False
) -> Iterator[pa.RecordBatch]:
    """As `read_parquet_batches`, as Arrow record batches; no rows give no batch unless `empty`."""
    any_rows = False
    for shard in parquet_files(path):
        with _parquet_file(shard) as parquet:
            kept = _present(parquet, columns)
            for batch in parquet.iter_batches(batch_size=rows, columns=kept):
                any_rows = True
                yield batch
    if empty and not any_rows:
        yield pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow.empty_table().select(kept).schema)


def row_groups(path: Location) -> list[tuple[Location, int]]:
    """Every row group of a Parquet file or folder of shards, as (shard, index), in order.

    Raises:
        DataError: a shard that cannot be read.
    """
    groups = []
    for shard in parquet_files(path):
        with _parquet_file(shard) as parquet:
            groups.extend((shard, index) for index in range(parquet.num_row_groups))
    return groups


def read_row_group(shard: Location, index: int, columns: Collection[str] | None = None) -> pd.DataFrame:
    """Row group `index` of a Parquet file, only `columns` of it (those it has; None: all).

    Raises:
        DataError: the file cannot be read.
    """
    with _parquet_file(shard) as parquet:
        return parquet.read_row_group(index, columns=_present(parquet, columns)).to_pandas()


@contextlib.contextmanager
def _parquet_file(path: Location) -> Iterator[pq.ParquetFile]:
    """The Parquet file, opened by pyarrow (a local file) or through fsspec (an object, read by
    ranges); what pyarrow or the storage raises for a missing, truncated or corrupt file is a
    DataError naming it."""
    try:
        with contextlib.ExitStack() as stack:
            source = path if isinstance(path, Path) else stack.enter_context(path.open("rb"))
            yield pq.ParquetFile(source)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"cannot read parquet file: {error}", path=str(path)) from None


def _read_table(path: Location) -> pa.Table:
    with _parquet_file(path) as parquet:
        return parquet.read()


def _present(parquet: pq.ParquetFile, columns: Collection[str] | None) -> list[str]:
    """The file's columns that are among `columns` (all of them for None), in the file's order."""
    return [name for name in parquet.schema_arrow.names if columns is None or name in columns]


def read_spans(spans: list[SpanFolder]) -> pd.DataFrame:
    """All rows of the given spans, in span order, as one frame (for data that fits memory;
    ingest streams its window instead).

    Raises:
        DataError: a span with no data file or no rows, an unreadable file, or files whose
            columns or column types differ (the first file is the reference).
    """
    import pandas as pd

    frames: list[tuple[Location, pd.DataFrame]] = []
    for span in spans:
        span_frames = [(path, read_file(path)) for path in span_data_files(span)]
        if sum(len(frame) for _, frame in span_frames) == 0:
            raise DataError("span is empty (0 rows)", path=str(span.path))
        frames.extend(span_frames)
    reference_path, reference = frames[0]
    for path, frame in frames[1:]:
        check_same_columns(reference_path, dict(reference.dtypes), path, dict(frame.dtypes), frame.__getitem__)
    return pd.concat([frame for _, frame in frames], ignore_index=True)


def span_data_files(span: SpanFolder) -> list[Location]:
    """The span's data files.

    Raises:
        DataError: the span's folder is gone or holds no `.parquet` or `.csv` file.
    """
    if not span.path.is_dir():
        raise DataError("span folder does not exist", path=str(span.path))
    files = span.files
    if not files:
        raise DataError("span has no .parquet or .csv file", path=str(span.path))
    return files


def column_types(files: list[Location]) -> dict[str, pa.DataType]:
    """The columns of the files, in the first file's order, with their Arrow types. A column
    of no type in a file (every value null) takes its type from another file; it reads as
    objects, so that file's column must read as objects (strings) too.

    Parquet files are compared by their schemas, CSV files by the types pandas reads.

    Raises:
        DataError: an unreadable file, or files whose columns or column types differ (the
            first file is the reference), naming the file, the column and its first value.
    """
    reference_path, reference = files[0], _file_schema(files[0])
    types = dict(zip(reference.names, reference.types))
    for path in files[1:]:
        schema = _file_schema(path)
        check_same_columns(
            reference_path, _pandas_types(reference), path, _pandas_types(schema), functools.partial(read_column, path)
        )
        for name, arrow_type in zip(schema.names, schema.types):
            if pa.types.is_null(types[name]):
                types[name] = arrow_type
    return types


def file_batches(path: Location, rows: int, columns: Collection[str] | None = None) -> Iterator[pd.DataFrame]:
    """A span's data file `rows` rows at a time: Parquet by record batches (memory holds one),
    CSV read whole, then sliced.

    Args:
        columns: Only these columns; None: all.

    Raises:
        DataError: the file is missing, truncated, corrupt or not of its format.
    """
    if path.suffix != ".csv":
        yield from read_parquet_batches(path, rows, columns)
        return
    frame = read_file(path, "csv")
    frame = frame if columns is None else frame[[name for name in frame.columns if name in columns]]
    for start in range(0, max(len(frame), 1), rows):
        yield frame.iloc[start : start + rows].reset_index(drop=True)


def read_column(path: Location, name: str) -> pd.Series:
    """One column of a span's data file.

    Raises:
        DataError: the file cannot be read.
    """
    import pandas as pd

    return pd.concat(list(file_batches(path, 1 << 30, [name])), ignore_index=True)[name]


class ShardWriter:
    """Writes a split as a folder of Parquet shards (`part-00000.parquet`, …) of at most
    `shard_rows` rows each, a batch at a time, in row groups of at most ROW_GROUP_ROWS rows.
    An existing folder or file at `folder` is replaced; a split with no rows gets one empty
    shard, so readers still see its columns.
    """

    def __init__(self, folder: Path, schema: pa.Schema, shard_rows: int):
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.unlink(missing_ok=True)
        folder.mkdir(parents=True)
        self.folder, self.schema, self.shard_rows = folder, schema, shard_rows
        self.rows = 0
        self._shards = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None:
                self._open()
            part = table.slice(0, self.shard_rows - self._in_shard)
            self._writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
            self._in_shard += part.num_rows
            self.rows += part.num_rows
            table = table.slice(part.num_rows)
            if self._in_shard == self.shard_rows:
                self._writer.close()
                self._writer = None

    def close(self) -> int:
        """Closes the last shard; returns the rows written."""
        if self._shards == 0:
            self._open()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.rows

    def _open(self) -> None:
        self._writer = pq.ParquetWriter(self.folder / f"part-{self._shards:05d}{PARQUET}", self.schema)
        self._shards += 1
        self._in_shard = 0


def _file_schema(path: Location) -> pa.Schema:
    if path.suffix == ".csv":
        return pa.Schema.from_pandas(read_file(path, "csv"), preserve_index=False)
    with _parquet_file(path) as parquet:
        return parquet.schema_arrow


def _pandas_types(schema: pa.Schema) -> dict[str, object]:
    return dict(schema.empty_table().to_pandas().dtypes)


def check_same_columns(
    reference_path: Location,
    reference: dict[str, object],
    path: Location,
    types: dict[str, object],
    column: Callable[[str], pd.Series],
) -> None:
    """Raises DataError when `path`'s columns or their pandas types (`types`) differ from
    `reference_path`'s (`reference`), naming the column and its first value (`column` reads it)."""
    for name in sorted(types.keys() - reference.keys()):
        raise DataError(f"column not in {reference_path}", path=str(path), feature=name)
    for name in sorted(reference.keys() - types.keys()):
        raise DataError(f"column missing (present in {reference_path})", path=str(path), feature=name)
    for name, reference_type in reference.items():
        if types[name] != reference_type:
            raise DataError(
                f"type {types[name]} differs from {reference_type} in {reference_path}",
                path=str(path),
                feature=name,
                value=_first_value(column(name)),
            )


def _first_value(column: pd.Series) -> object:
    present = column.dropna()
    return present.iloc[0] if len(present) else None
