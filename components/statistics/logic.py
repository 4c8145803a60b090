"""Statistics: TFDV statistics of a split, in memory or on Beam for data that does not fit."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from components.common.errors import ConfigError, DataError
from components.common.spans import parquet_pattern, read_record_batches
from components.statistics import equal_width

MEMORY = "memory"
BEAM = "beam"
BATCH_ROWS = 65_536  # rows held at a time by the in-process engine
REMOTE_SCHEMES = ("s3://", "gs://")  # storage that Beam's workers read and write themselves
# Column types TFDV computes statistics of; its DataFrame path leaves out dates and times too.
STATISTICS_TYPES = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_string,
    pa.types.is_binary,
    pa.types.is_null,
)

equal_width.install()  # the same histograms as TFDV's own, about six times faster


@dataclasses.dataclass(frozen=True)
class StatisticsResult:
    rows: int
    features: int
    engine: str


def compute_statistics(
    data_path: Path,
    out_path: Path,
    schema: schema_pb2.Schema | None = None,
    engine: str = MEMORY,
    beam_pipeline_args: Sequence[str] = (),
    beam_data: str = "",
    beam_output: str = "",
) -> StatisticsResult:
    """Computes TFDV statistics of one Parquet split and writes them as a binary proto.

    Args:
        data_path: A Parquet file, or a folder of Parquet shards (as ingest writes a split).
        out_path: Where to write the `DatasetFeatureStatisticsList`.
        schema: The dataset's schema; it tells TFDV which integer features are
            categorical, so their value distributions are counted too.
        engine: `memory` computes them in this process, a record batch at a time, with
            TFDV's own combiners: memory holds one batch and the statistics' sketches (its
            counts of distinct values, such as a key's, grow with the data); `beam` streams
            the shards' record batches through Beam with `beam_pipeline_args`
            (e.g. `--runner=DataflowRunner ...`), for data past one machine.
        beam_data: Where Beam's workers read the split (default `data_path`): a path, or a
            URI of object storage they reach (`s3://`, `gs://`) when they run elsewhere.
        beam_output: Where Beam's workers write the statistics before this process reads
            them back and removes them (a path or such a URI; default beside `out_path`).

    Raises:
        ValueError: an unknown engine.
        DataError: the data cannot be read.
    """
    if engine == MEMORY:
        statistics = _statistics_in_process(data_path, _options(schema))
    elif engine == BEAM:
        statistics = _statistics_on_beam(
            beam_data or str(data_path),
            beam_output or str(out_path.parent / f"{out_path.name}.beam-statistics"),  # inputs may be read-only
            _options(schema),
            beam_pipeline_args,
        )
    else:
        raise ValueError(f"statistics_engine={engine!r}: expected {MEMORY!r} or {BEAM!r}")
    out_path.write_bytes(statistics.SerializeToString())
    dataset = statistics.datasets[0]
    return StatisticsResult(rows=int(dataset.num_examples), features=len(dataset.features), engine=engine)


def beam_location(path: str, uri: str) -> str:
    """Where Beam's workers find an artifact: its URI when it is in object storage they can reach
    themselves (`s3://`, `gs://`), else its local path (workers in this pod, as the DirectRunner's)."""
    return uri if uri.startswith(REMOTE_SCHEMES) else path


def with_worker_image(beam_pipeline_args: Sequence[str], worker_image: str) -> list[str]:
    """The Beam options, plus the option that names `worker_image` as the workers' image where
    the runner would otherwise start Beam's default worker image, which has neither TFDV nor
    this code: `--sdk_container_image` for Dataflow (unless the options name an image), and
    `--environment_config` for a portable runner (Flink, Spark) whose environment, as the
    runner itself resolves it, is DOCKER with Beam's default image. Other runners' workers
    (the DirectRunner's, a LOOPBACK, EXTERNAL or PROCESS environment's) are not started from
    an image by the runner: their options are returned as they are.

    Raises:
        ConfigError: options Beam refuses (an unknown runner or environment type).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, WorkerOptions
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.portability.portable_runner import PortableRunner
    from apache_beam.runners.runner import create_runner
    from apache_beam.transforms.environments import DockerEnvironment

    options = PipelineOptions(list(beam_pipeline_args))
    try:
        runner = create_runner(options.view_as(StandardOptions).runner or "DirectRunner")
        if isinstance(runner, DataflowRunner):
            worker = options.view_as(WorkerOptions)
            if worker.sdk_container_image or worker.worker_harness_container_image:
                return list(beam_pipeline_args)
            return [*beam_pipeline_args, f"--sdk_container_image={worker_image}"]
        environment = runner.default_environment(options) if isinstance(runner, PortableRunner) else None
    except (ValueError, RuntimeError, ImportError) as error:
        raise ConfigError(f"beam_pipeline_args: {error}") from None
    if (
        isinstance(environment, DockerEnvironment)
        and environment.container_image == DockerEnvironment.default_docker_image()
    ):
        return [*beam_pipeline_args, f"--environment_config={worker_image}"]
    return list(beam_pipeline_args)


def statistics_of_dataframe(
    frame: pd.DataFrame, schema: schema_pb2.Schema | None = None
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of an in-memory DataFrame."""
    return tfdv.generate_statistics_from_dataframe(frame, _options(schema))


def _statistics_in_process(data_path: Path, options: tfdv.StatsOptions) -> statistics_pb2.DatasetFeatureStatisticsList:
    # TFDV's in-memory generators, as tfdv.generate_statistics_from_dataframe uses them, each
    # accumulator taking the record batches one after the other.
    from tensorflow_data_validation.statistics import stats_impl

    generators = stats_impl.get_generators(options, in_memory=True)
    accumulators = [generator.create_accumulator() for generator in generators]
    for batch in read_record_batches(data_path, BATCH_ROWS, empty=True):
        canonical = _canonical(batch)
        accumulators = [generator.add_input(a, canonical) for generator, a in zip(generators, accumulators)]
    return stats_impl.extract_statistics_output(accumulators, generators)


def _options(schema: schema_pb2.Schema | None) -> tfdv.StatsOptions:
    return tfdv.StatsOptions(schema=schema) if schema is not None else tfdv.StatsOptions()


def _statistics_on_beam(
    data: str, output: str, options: tfdv.StatsOptions, beam_pipeline_args: Sequence[str]
) -> statistics_pb2.DatasetFeatureStatisticsList:
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    pipeline_options = PipelineOptions(list(beam_pipeline_args))
    FileSystems.set_options(pipeline_options)  # so this process reads the output as the workers wrote it
    try:
        with beam.Pipeline(options=pipeline_options) as pipeline:
            _ = (
                pipeline
                | "Read" >> beam.io.ReadFromParquetBatched(parquet_pattern(data))
                | "ToRecordBatches" >> beam.FlatMap(_to_record_batches)
                | "Statistics" >> tfdv.GenerateStatistics(options)
                | "Write" >> tfdv.WriteStatisticsToBinaryFile(output)
            )
    except OSError as error:  # Beam's storage errors (BeamIOError) are OSErrors too
        raise DataError(f"cannot read parquet file: {error}", path=data) from None
    try:
        with FileSystems.open(output) as written:
            return statistics_pb2.DatasetFeatureStatisticsList.FromString(written.read())
    finally:
        if FileSystems.exists(output):
            FileSystems.delete([output])


def _to_record_batches(table: pa.Table) -> list[pa.RecordBatch]:
    return [_canonical(batch) for batch in table.to_batches()]


def _canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch as TFDV takes it: every column a list array (one list of values per row), as
    its DataFrame path builds them; dictionary columns decoded, large strings as strings; and,
    as that path leaves out the columns whose type it has no statistics for (dates, times,
    durations, nested values), so are they here."""
    from tfx_bsl.arrow import table_util

    names, columns = [], []
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type):
            column = column.cast(pa.string() if pa.types.is_large_string(column.type) else pa.binary())
        if any(check(column.type) for check in STATISTICS_TYPES):
            names.append(name)
            columns.append(column)
    return table_util.CanonicalizeRecordBatch(pa.RecordBatch.from_arrays(columns, names))


def statistics_html(
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    names: tuple[str, str] = ("train", "eval"),
) -> str:
    """TFDV's Facets view of the statistics (beside a baseline, if any), for the Kubeflow UI."""
    from tensorflow_data_validation.utils.display_util import get_statistics_html

    if baseline is None:
        return get_statistics_html(statistics, lhs_name=names[0])
    return get_statistics_html(statistics, baseline, lhs_name=names[0], rhs_name=names[1])


def keep_statistics(statistics_path: Path, statistics_root: Path, dataset: str, run_id: str, split: str) -> Path:
    """Copies a split's statistics to `<statistics_root>/<dataset>/<run_id>/<split>.pb`, where
    later runs (the drift baseline) and the distribution-shift trigger read them. The file
    appears whole or not at all (written under a temporary name, then renamed).
    """
    target = statistics_root / dataset / run_id / f"{split}.pb"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial")
    temporary.write_bytes(statistics_path.read_bytes())
    os.replace(temporary, target)
    return target
