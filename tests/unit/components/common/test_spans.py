import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.errors import DataError
from components.common.spans import ShardWriter, parquet_files, parquet_pattern, read_file, read_parquet_batches


def test_a_parquet_file_is_read_a_batch_at_a_time_with_only_the_columns_asked_for(tmp_path):
    path = tmp_path / "part-0.parquet"
    pd.DataFrame({"a": range(10), "b": list("abcdefghij"), "c": 0.5}).to_parquet(path, row_group_size=4)
    batches = list(read_parquet_batches(path, 3, {"a", "c", "not in the file"}))
    assert [len(b) for b in batches] == [3, 3, 3, 1]  # never more than asked, across row groups
    assert all(list(b.columns) == ["a", "c"] for b in batches)
    assert pd.concat(batches).a.tolist() == list(range(10))
    assert [list(b.columns) for b in read_parquet_batches(path, 100)] == [["a", "b", "c"]]


def test_an_empty_file_gives_one_empty_batch_and_a_corrupt_one_is_named(tmp_path):
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"a": pd.Series([], dtype="int64")}).to_parquet(empty)
    [batch] = read_parquet_batches(empty, 10)
    assert batch.empty and list(batch.columns) == ["a"]
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=f"{corrupt}.*cannot read parquet file"):
        list(read_parquet_batches(corrupt, 10))


def test_a_split_is_written_in_shards_of_bounded_rows_and_read_back_across_them(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "part-00007.parquet").write_bytes(b"a shard of an earlier write")
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    writer = ShardWriter(folder, schema, shard_rows=4)
    for start in (0, 3, 6):
        writer.write(pa.table({"a": range(start, start + 3), "b": ["x"] * 3}, schema=schema))
    assert writer.close() == 9
    assert sorted(p.name for p in folder.iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [pq.ParquetFile(p).metadata.num_rows for p in parquet_files(folder)] == [4, 4, 1]
    assert [len(b) for b in read_parquet_batches(folder, 3, {"a"})] == [3, 1, 3, 1, 1]  # a batch stays in its shard
    assert read_file(folder, "parquet").a.tolist() == list(range(9))
    assert parquet_pattern(folder) == f"{folder}/*.parquet"


def test_a_split_with_no_rows_keeps_its_columns_and_a_folder_without_shards_is_named(tmp_path):
    empty = tmp_path / "eval"
    assert ShardWriter(empty, pa.schema([("a", pa.float64())]), shard_rows=4).close() == 0
    [batch] = read_parquet_batches(empty, 10)
    assert batch.empty and dict(batch.dtypes) == {"a": "float64"}
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=rf"^{tmp_path / 'nothing'}: folder has no \.parquet file$"):
        read_file(tmp_path / "nothing", "parquet")
