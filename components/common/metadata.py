"""ML Metadata, behind one narrow interface.

Every stage records itself here: an execution per step (start and end time, status,
parameters, code version), its input and output artifacts, all attributed to one
context per pipeline run. Queries answer what the pipeline needs (the production model,
the previous span's statistics) and what people ask (the runs, a model's lineage).

Only this module imports `ml_metadata`, so the backend can be swapped without touching
the stages. A connection is one string: `sqlite:///abs/path.sqlite` on one machine,
`grpc://host:port` for the MLMD gRPC server in a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import random
import resource
import time
from pathlib import PurePosixPath
from typing import Callable, Iterator, Mapping, Sequence, Union
from urllib.parse import urlparse

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from components.common.errors import ConfigError, DataError, NotFoundError, UnavailableError
from components.common.process_lifetime import die_with_launcher
from components.common.version import code_version

Value = Union[str, int, float]

RUN_CONTEXT = "ct.PipelineRun"
RECORDS_CONTEXT = "ct.Records"  # one context, `records`: the version of what the records hold
RECORDS_VERSION = 2  # 2: run contexts carry `decision` from their start, span inputs their `span` id
STEP_EXECUTION = "ct.Step"

EXAMPLES = "ct.Examples"
STATISTICS = "ct.ExampleStatistics"
SCHEMA = "ct.Schema"
ANOMALIES = "ct.ExampleAnomalies"
DRIFT = "ct.DriftReport"
MODEL = "ct.Model"
EVALUATION = "ct.ModelEvaluation"
BLESSING = "ct.ModelBlessing"
INFRA_BLESSING = "ct.InfraBlessing"
PUSHED_MODEL = "ct.PushedModel"
SPAN = "ct.Span"
VOCABULARIES = "ct.Vocabularies"
FEATURES = "ct.MaterializedFeatures"  # one feature view loaded into the online store for a window

# Decisions a run ends with; `ct run` maps them to exit codes.
PUSHED = "pushed"
NOT_BLESSED = "not blessed"
STOPPED_BY_DATA = "stopped by data validation"
FAILED = "failed"
# Canary verdicts.
PROMOTED = "promoted"
ROLLED_BACK = "rolled back"


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An artifact as recorded: its type, where it lives and what is known of it."""

    id: int
    type: str
    uri: str
    properties: Mapping[str, Value]
    created: float


@dataclasses.dataclass(frozen=True)
class StepRecord:
    """One step of a run."""

    step: str
    status: str
    start: float
    end: float | None
    parameters: Mapping[str, object]
    error: str
    peak_memory_mib: float | None = None  # the step's process and its children, at most

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One pipeline run: why it started, what it decided, and its steps in order."""

    run_id: str
    properties: Mapping[str, Value]
    steps: tuple[StepRecord, ...]

    @property
    def start(self) -> float | None:
        return min((s.start for s in self.steps), default=None)

    @property
    def end(self) -> float | None:
        ends = [s.end for s in self.steps]
        return None if not ends or None in ends else max(ends)

    @property
    def decision(self) -> str:
        return str(self.properties.get("decision", ""))

    @property
    def parameters(self) -> dict[str, object]:
        merged: dict[str, object] = {}
        for step in self.steps:
            merged.update(step.parameters)
        return merged


@dataclasses.dataclass(frozen=True)
class LineageEntry:
    """An artifact in a model's lineage and the step that produced it (empty for sources)."""

    artifact: Artifact
    produced_by: str
    run_id: str


def _to_value(value: mlmd.Value) -> Value:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else ""


def _set(target, values: Mapping[str, Value]) -> None:
    for name, value in values.items():
        if isinstance(value, bool):
            target[name].int_value = int(value)
        elif isinstance(value, int):
            target[name].int_value = value
        elif isinstance(value, float):
            target[name].double_value = value
        else:
            target[name].string_value = str(value)


def _literal(value: Value) -> str:
    """A value as a literal of ML Metadata's filter queries (SQL-like; strings single-quoted)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if not _can_be_looked_up(value):
        raise ConfigError(f"{value!r}: a backslash cannot be looked up in ML Metadata")
    return "'" + str(value).replace("'", "\\'") + "'"


def _can_be_looked_up(value: Value) -> bool:
    """ML Metadata's SQL for SQLite escapes a backslash once more: a value with one never matches."""
    return "\\" not in str(value)


def _property(name: str, value: Value) -> str:
    """A custom property's column in a filter query, for the kind of value compared with it."""
    kind = (
        "int_value"
        if isinstance(value, (bool, int))
        else "double_value"
        if isinstance(value, float)
        else "string_value"
    )
    return f"custom_properties.{name}.{kind}"


def _where(type_name: str, *conditions: str, **equal: Value) -> metadata_store.ListOptions:
    """Nodes of one type that meet `conditions` and whose custom properties have these values.

    Only for values that pick out a few nodes (a version, a fingerprint, a span, a run id, an
    undecided run): ML Metadata's SQLite queries find those through its property indexes
    (`idx_*_property_*`), at a cost that does not grow with the history. A value most nodes
    share (a dataset, a split, a model name) would have SQLite read every node that has it:
    those are compared in Python, on the few nodes found or on the newest a page at a time.
    """
    clauses = [f"type = {_literal(type_name)}", *conditions]
    clauses += [f"{_property(name, value)} = {_literal(value)}" for name, value in equal.items()]
    return metadata_store.ListOptions(filter_query=" AND ".join(clauses))


def _one_of(column: str, values: Sequence[Value]) -> str:
    return f"{column} IN ({', '.join(_literal(v) for v in values)})"


def _newest(options: metadata_store.ListOptions, limit: int | None) -> metadata_store.ListOptions:
    options.order_by, options.is_asc, options.limit = metadata_store.OrderByField.ID, False, limit
    return options


def _has(artifact: "Artifact", properties: Mapping[str, Value]) -> bool:
    return all(artifact.properties.get(name) == value for name, value in properties.items())


def _live(pushed: "Artifact") -> bool:
    return pushed.properties.get("state", "live") == "live"


def _decision(run: mlmd.Context) -> str:
    """A run context's decision; "" while undecided."""
    return str(_to_value(run.custom_properties["decision"])) if "decision" in run.custom_properties else ""


def _peak_memory_mib() -> float:
    """The largest resident size this process or any of its waited-for children reached (Linux: KiB)."""
    own, children = (resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return max(own, children) / 1024


def connect(connection: str) -> metadata_store.MetadataStore:
    """Opens the store named by a connection string (see the module doc)."""
    parsed = urlparse(connection)
    if parsed.scheme == "sqlite":
        config = mlmd.ConnectionConfig()
        config.sqlite.filename_uri = parsed.path
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return metadata_store.MetadataStore(config)
    if parsed.scheme == "grpc":
        if not parsed.hostname or not parsed.port:
            raise ConfigError(f"metadata connection {connection!r}: expected grpc://host:port")
        return metadata_store.MetadataStore(mlmd.MetadataStoreClientConfig(host=parsed.hostname, port=parsed.port))
    raise ConfigError(f"metadata connection {connection!r}: expected sqlite:///path or grpc://host:port")


class _Reachable:
    """The MLMD client, with a store it cannot reach (a server down, a wrong port) or open
    (a folder it cannot write) reported as an error naming the connection.

    Several processes write one SQLite store (a run's steps, `ct serve`'s canary, the
    controller): MLMD waits for the file's lock (ml_metadata/metadata_store/
    sqlite_metadata_source.cc, `WaitThenRetry`), its Python client tries an aborted call five
    times with random pauses (metadata_store.py, `_call`), then raises AbortedError; busy
    writers can starve one process that long. An aborted call changed nothing (its transaction
    was rolled back), so it is made again, with growing pauses, for up to BUSY_SECONDS; so is
    opening a new store while another process creates its tables.
    """

    BUSY_SECONDS = 60.0

    def __init__(self, connection: str):
        self._connection = connection
        self._store = self._call(self._open)

    def _open(self) -> metadata_store.MetadataStore:
        try:
            return connect(self._connection)
        except RuntimeError as error:  # how the MLMD client says it cannot open a SQLite file
            # Another process is creating the tables or writing: the file is locked (aborted), or
            # the tables are only partly there yet (seen: "no such table: TypeProperty").
            if "aborted" in str(error).lower() or "no such table" in str(error).lower():
                raise mlmd_errors.AbortedError(str(error)) from None
            raise UnavailableError(f"metadata connection {self._connection}: cannot be opened: {error}") from None

    def _call(self, method: Callable, *args, **kwargs):
        deadline, pause = time.monotonic() + self.BUSY_SECONDS, 0.05
        while True:
            try:
                return method(*args, **kwargs)
            except mlmd_errors.AbortedError as error:
                if time.monotonic() + pause > deadline:
                    raise UnavailableError(
                        f"metadata connection {self._connection}: busy for {self.BUSY_SECONDS:.0f} s: {error}"
                    ) from None
                # writers that collided do not collide again; never past the deadline
                time.sleep(min(pause * random.uniform(0.5, 1.5), max(deadline - time.monotonic(), 0)))
                pause = min(2 * pause, 1.0)
            except (mlmd_errors.UnavailableError, mlmd_errors.DeadlineExceededError) as error:
                raise UnavailableError(f"metadata connection {self._connection}: unreachable: {error}") from None
            except (mlmd_errors.InternalError, mlmd_errors.PermissionDeniedError) as error:
                raise UnavailableError(f"metadata connection {self._connection}: cannot be opened: {error}") from None

    def __getattr__(self, name: str):
        method = getattr(self._store, name)
        return functools.partial(self._call, method) if callable(method) else method


class MetadataStore:
    """The project's view of ML Metadata."""

    BATCH = 200  # values in one query's IN list
    PAGE = 20  # nodes read at a time, newest first

    def __init__(self, connection: str):
        self._store = _Reachable(connection)
        self._type_ids: dict[str, int] = {}

    # --- types and contexts -------------------------------------------------

    def _artifact_type_id(self, name: str) -> int:
        if name not in self._type_ids:
            self._type_ids[name] = self._store.put_artifact_type(mlmd.ArtifactType(name=name))
        return self._type_ids[name]

    def _execution_type_id(self) -> int:
        if STEP_EXECUTION not in self._type_ids:
            self._type_ids[STEP_EXECUTION] = self._store.put_execution_type(mlmd.ExecutionType(name=STEP_EXECUTION))
        return self._type_ids[STEP_EXECUTION]

    def _run_context(self, run_id: str) -> mlmd.Context:
        context = self._store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
        if context is None:
            if RUN_CONTEXT not in self._type_ids:
                self._type_ids[RUN_CONTEXT] = self._store.put_context_type(mlmd.ContextType(name=RUN_CONTEXT))
            context = mlmd.Context(type_id=self._type_ids[RUN_CONTEXT], name=run_id)
            _set(context.custom_properties, {"decision": ""})  # undecided: what close_interrupted_runs looks for
            [context.id] = self._store.put_contexts([context])
        return context

    def update_run(self, run_id: str, **properties: Value) -> None:
        """Sets properties of a run's context (trigger, reason, decision, ...)."""
        context = self._run_context(run_id)
        _set(context.custom_properties, properties)
        self._store.put_contexts([context])

    def close_interrupted_runs(self, is_alive: Callable[[str], bool]) -> list[str]:
        """Decides, as failed, every run with no decision whose launcher is gone.

        A run records its launcher (`launcher`: host and process) when it starts; a run killed
        before it decided would otherwise stay "running" forever.

        Args:
            is_alive: Whether a launcher still runs; it answers False only for launchers it
                can check (this host's processes), so runs launched elsewhere are left alone.

        Returns:
            The runs closed.
        """
        self.upgrade_records()
        closed = []
        for context in self._store.get_contexts(list_options=_where(RUN_CONTEXT, decision="")):
            run = self.run(context.name)
            launcher = str(run.properties.get("launcher", ""))
            if not launcher or is_alive(launcher):
                continue
            unfinished = [step.step for step in run.steps if step.end is None]
            where = f" during {', '.join(unfinished)}" if unfinished else ""
            self.update_run(
                run.run_id,
                decision=FAILED,
                reasons=f"interrupted{where}: its launcher {launcher} exited before the run decided",
            )
            closed.append(run.run_id)
        return closed

    def upgrade_records(self) -> None:
        """Brings what older code recorded up to RECORDS_VERSION, once per store: a run context
        with no `decision` gets an empty one (undecided), a span input with no `span` id gets the
        one its folder names (`…/span=<id>`). Reads the whole history the first time only; after
        that, one lookup."""
        from components.common.spans import SPAN_PREFIX  # pandas, for this once only

        if RECORDS_CONTEXT not in self._type_ids:
            self._type_ids[RECORDS_CONTEXT] = self._store.put_context_type(mlmd.ContextType(name=RECORDS_CONTEXT))
        marker = self._store.get_context_by_type_and_name(RECORDS_CONTEXT, "records")
        if marker is not None and _to_value(marker.custom_properties["version"]) == RECORDS_VERSION:
            return
        undecided = [c for c in self._store.get_contexts_by_type(RUN_CONTEXT) if "decision" not in c.custom_properties]
        for context in undecided:
            _set(context.custom_properties, {"decision": ""})
        if undecided:
            self._store.put_contexts(undecided)
        unnamed = [a for a in self._store.get_artifacts_by_type(SPAN) if "span" not in a.custom_properties]
        for artifact in unnamed:
            _set(artifact.custom_properties, {"span": PurePosixPath(artifact.uri).name.removeprefix(SPAN_PREFIX)})
        if unnamed:
            self._store.put_artifacts(unnamed)
        marker = marker or mlmd.Context(type_id=self._type_ids[RECORDS_CONTEXT], name="records")
        _set(marker.custom_properties, {"version": RECORDS_VERSION})
        self._store.put_contexts([marker])

    # --- recording steps ----------------------------------------------------

    @contextlib.contextmanager
    def step(self, run_id: str, step: str, parameters: Mapping[str, object]) -> Iterator["StepRecorder"]:
        """Records one step: RUNNING on entry, then COMPLETE, or FAILED with the error.

        Inputs and outputs recorded through the yielded recorder are written at once,
        so a step that fails still shows what it read and what it wrote before failing.
        A failure also decides the run: bad data (`DataError`) stops it as "stopped by
        data validation", anything else as "failed"; the reason is the error message.
        """
        execution = mlmd.Execution(type_id=self._execution_type_id(), last_known_state=mlmd.Execution.RUNNING)
        _set(
            execution.custom_properties,
            {
                "step": step,
                "run_id": run_id,
                "code_version": code_version(),
                "parameters": json.dumps(dict(parameters), sort_keys=True, default=str),
                "start_time": time.time(),
            },
        )
        execution.id, _, _ = self._store.put_execution(execution, [], [self._run_context(run_id)])
        recorder = StepRecorder(self, execution, run_id)
        try:
            yield recorder
        except BaseException as error:
            self._finish(execution, run_id, mlmd.Execution.FAILED, f"{type(error).__name__}: {error}")
            decision = STOPPED_BY_DATA if isinstance(error, DataError) else FAILED
            self.update_run(run_id, decision=decision, reasons=f"{step}: {error}")
            raise
        self._finish(execution, run_id, mlmd.Execution.COMPLETE, "")

    # put_execution also writes the contexts it is given: always pass a fresh copy of the
    # run's context, or properties set meanwhile (the decision) would be overwritten.

    def _finish(self, execution: mlmd.Execution, run_id: str, state: int, error: str) -> None:
        execution.last_known_state = state
        _set(
            execution.custom_properties,
            {"end_time": time.time(), "error": error, "peak_memory_mib": round(_peak_memory_mib(), 1)},
        )
        self._store.put_execution(execution, [], [self._run_context(run_id)])

    def _record(
        self,
        execution: mlmd.Execution,
        run_id: str,
        event_type: int,
        type_name: str,
        uri: str,
        properties: Mapping[str, Value],
    ) -> int:
        artifact = mlmd.Artifact(type_id=self._artifact_type_id(type_name), uri=uri, state=mlmd.Artifact.LIVE)
        if event_type == mlmd.Event.INPUT:
            existing = [a for a in self._store.get_artifacts_by_uri(uri) if a.type_id == artifact.type_id]
            if existing:
                artifact = existing[-1]
        _set(artifact.custom_properties, properties)
        _, [artifact_id], _ = self._store.put_execution(
            execution, [(artifact, mlmd.Event(type=event_type))], [self._run_context(run_id)]
        )
        return artifact_id

    # --- queries ------------------------------------------------------------

    def _artifacts(self, type_name: str, options: metadata_store.ListOptions, **properties: Value) -> list[Artifact]:
        """The artifacts the query finds that also have these properties."""
        found = [self._artifact(a, type_name) for a in self._store.get_artifacts(list_options=options)]
        return [a for a in found if _has(a, properties)]

    def _newest_first(self, type_name: str, **properties: Value) -> Iterator[Artifact]:
        """Artifacts of a type with these properties, newest first, read a page at a time: the
        newest match costs the pages down to it, not the whole history."""
        older_than: list[str] = []
        while True:
            page = self._artifacts(type_name, _newest(_where(type_name, *older_than), self.PAGE))
            yield from (a for a in page if _has(a, properties))
            if len(page) < self.PAGE:
                return
            older_than = [f"id < {page[-1].id}"]

    @staticmethod
    def _artifact(artifact: mlmd.Artifact, type_name: str) -> Artifact:
        properties = {name: _to_value(value) for name, value in artifact.custom_properties.items()}
        return Artifact(artifact.id, type_name, artifact.uri, properties, artifact.create_time_since_epoch / 1000)

    def production_model(self, model_name: str) -> Artifact | None:
        """The live pushed model of that name with the highest version, or None before the first push.

        Versions are numbered upwards as they are published, so it is the newest live one,
        unless runs published at once recorded their pushes out of order: one query for higher
        versions finds those.
        """
        pushed = self._newest_first(PUSHED_MODEL, model_name=model_name)
        newest = next(filter(_live, pushed), None)
        if newest is None:
            return None
        higher = f"{_property('version', 0)} > {int(newest.properties['version'])}"  # pushes recorded out of order
        later = self._artifacts(PUSHED_MODEL, _where(PUSHED_MODEL, higher), model_name=model_name)
        return max([newest, *filter(_live, later)], key=lambda a: (int(a.properties["version"]), a.id))

    def previous_statistics(self, dataset: str, before_span: str) -> Artifact | None:
        """The newest training statistics of the dataset whose last span is older than `before_span`.

        Of the statistics with the latest such last span, the newest: the newest recorded
        older than `before_span`, unless statistics of a later span were recorded before it
        (a backfill came after them), which one query between the two spans finds.
        """
        train = {"dataset": dataset, "split": "train"}
        recorded = self._newest_first(STATISTICS, **train)
        found = next((a for a in recorded if str(a.properties.get("last_span", "")) < before_span), None)
        if found is None:
            return None
        last_span = _property("last_span", "")
        between = f"{last_span} > {_literal(found.properties['last_span'])} AND {last_span} < {_literal(before_span)}"
        later = self._artifacts(STATISTICS, _where(STATISTICS, between), **train)
        return max([found, *later], key=lambda a: (str(a.properties["last_span"]), a.id))

    def runs(self, last: int | None = None) -> list[RunRecord]:
        """The `last` runs started last (default: every run), oldest first."""
        contexts = self._store.get_contexts(list_options=_newest(_where(RUN_CONTEXT), last))
        names = [context.name for context in contexts]
        steps = (
            _where(STEP_EXECUTION, _one_of(_property("run_id", ""), names))
            if last is not None
            else _where(STEP_EXECUTION)
        )
        by_run: dict[str, list[StepRecord]] = {name: [] for name in names}
        for execution in self._store.get_executions(list_options=steps) if names else []:
            run_id = str(_to_value(execution.custom_properties["run_id"]))
            if run_id in by_run:
                by_run[run_id].append(self._step_record(execution))
        records = [self._run_record(context, by_run[context.name]) for context in contexts]
        return sorted(records, key=lambda r: (r.start or 0.0, r.run_id))

    def run(self, run_id: str) -> RunRecord:
        """One run with its steps in the order they started."""
        context = self._store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
        if context is None:
            raise NotFoundError(f"no run {run_id!r} in ML Metadata")
        return self._run_record(
            context, [self._step_record(e) for e in self._store.get_executions_by_context(context.id)]
        )

    @staticmethod
    def _run_record(context: mlmd.Context, steps: list[StepRecord]) -> RunRecord:
        properties = {name: _to_value(value) for name, value in context.custom_properties.items()}
        return RunRecord(context.name, properties, tuple(sorted(steps, key=lambda s: s.start)))

    def run_artifacts(self, run_id: str, type_name: str) -> list[Artifact]:
        """Artifacts of one type that a run read or wrote."""
        context = self._store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
        type_id = self._artifact_type_id(type_name)
        found = self._store.get_artifacts_by_context(context.id) if context else []
        return [self._artifact(a, type_name) for a in found if a.type_id == type_id]

    @staticmethod
    def _step_record(execution: mlmd.Execution) -> StepRecord:
        props = {name: _to_value(value) for name, value in execution.custom_properties.items()}
        status = {
            mlmd.Execution.RUNNING: "running",
            mlmd.Execution.COMPLETE: "complete",
            mlmd.Execution.FAILED: "failed",
        }.get(execution.last_known_state, "unknown")
        return StepRecord(
            step=str(props.get("step", "")),
            status=status,
            start=float(props.get("start_time", 0.0)),
            end=float(props["end_time"]) if "end_time" in props else None,
            parameters=json.loads(str(props.get("parameters", "{}"))),
            error=str(props.get("error", "")),
            peak_memory_mib=float(props["peak_memory_mib"]) if "peak_memory_mib" in props else None,
        )

    def pushed_models(self, model_name: str) -> list[Artifact]:
        """All pushed versions of a model, oldest first."""
        pushed = self._artifacts(PUSHED_MODEL, _where(PUSHED_MODEL), model_name=model_name)
        return sorted(pushed, key=lambda a: int(a.properties["version"]))

    def pushed_model(self, model_name: str, version: int) -> Artifact | None:
        """One pushed version of a model, or None when no push of it is recorded."""
        found = self._artifacts(
            PUSHED_MODEL, _newest(_where(PUSHED_MODEL, version=version), None), model_name=model_name
        )
        return next(iter(found), None)

    def trained_on(self, dataset: str, fingerprint: str) -> bool:
        """Whether a run that completed (pushed or not blessed) trained on data of that fingerprint."""
        examples = _where(EXAMPLES, fingerprint=fingerprint)
        return any(
            _decision(context) in (PUSHED, NOT_BLESSED)
            for artifact in self._artifacts(EXAMPLES, examples, dataset=dataset, split="train")
            for context in self._store.get_contexts_by_artifact(artifact.id)
            if context.type == RUN_CONTEXT
        )

    def span_readers(self, dataset: str, spans: Sequence[str]) -> dict[str, set[str]]:
        """For each of these span ids some run read, the decisions of the runs that read it: ""
        for a run still going. Spans no run read are left out.

        Asks about the given spans only, a batch at a time, never the whole history.
        """
        readers: dict[str, set[str]] = {}
        spans = [span for span in spans if _can_be_looked_up(span)]  # the others are taken as unread
        for start in range(0, len(spans), self.BATCH):
            batch = spans[start : start + self.BATCH]
            read = _where(SPAN, _one_of(_property("span", ""), batch))
            span_of = {a.id: str(a.properties["span"]) for a in self._artifacts(SPAN, read, dataset=dataset)}
            events = self._store.get_events_by_artifact_ids(list(span_of)) if span_of else []
            reads = [(span_of[e.artifact_id], e.execution_id) for e in events if e.type == mlmd.Event.INPUT]
            run_of = {
                e.id: str(_to_value(e.custom_properties["run_id"]))
                for e in (
                    self._store.get_executions_by_id(list({execution for _, execution in reads})) if reads else []
                )
            }
            runs = _where(RUN_CONTEXT, _one_of("name", sorted(set(run_of.values()))))
            decision_of = {
                c.name: _decision(c) for c in (self._store.get_contexts(list_options=runs) if run_of else [])
            }
            for span, execution in reads:
                readers.setdefault(span, set()).add(decision_of.get(run_of[execution], ""))
        return readers

    def run_uris(self) -> dict[str, set[str]]:
        """Every URI each run read or wrote, by run id (what retention may and may not delete)."""
        return {
            context.name: {a.uri for a in self._store.get_artifacts_by_context(context.id)}
            for context in self._store.get_contexts_by_type(RUN_CONTEXT)
        }

    def training_statistics(self, pushed: Artifact) -> Artifact | None:
        """The training-split statistics of the run that produced a pushed model."""
        run_id = pushed.properties.get("run_id")
        return next(
            (
                a
                for a in self.run_artifacts(str(run_id), STATISTICS)
                if a.properties.get("split") == "train"
                and a.properties.get("spans")
                and self._produced_in(a, str(run_id))
            ),
            None,
        )

    def _produced_in(self, artifact: Artifact, run_id: str) -> bool:
        events = self._store.get_events_by_artifact_ids([artifact.id])
        producers = [e.execution_id for e in events if e.type == mlmd.Event.OUTPUT]
        return any(
            _to_value(e.custom_properties["run_id"]) == run_id for e in self._store.get_executions_by_id(producers)
        )

    def pushed_digest(self, model_name: str, version: int) -> str | None:
        """The content digest recorded when the version was pushed: None when no push of it is
        recorded, "" when it was recorded without one (before digests were recorded)."""
        found = self.pushed_model(model_name, version)
        return str(found.properties.get("digest", "")) if found else None

    def rolled_back_versions(self, model_name: str) -> set[int]:
        """Pushed versions whose canary was rolled back: they never serve again."""
        rolled_back = self._artifacts(PUSHED_MODEL, _where(PUSHED_MODEL, state=ROLLED_BACK), model_name=model_name)
        return {int(a.properties["version"]) for a in rolled_back}

    def record_canary_decision(
        self, model_name: str, version: int, decision: str, reason: str, numbers: Mapping[str, float]
    ) -> None:
        """Records a canary verdict as a `canary` step of the run that pushed the version.

        A rolled-back version's pushed-model artifact is marked, so it is no longer the
        production model (the pipeline's baseline) and is never loaded again.
        """
        pushed = self.pushed_model(model_name, version)
        if pushed is None:
            raise NotFoundError(f"no pushed model {model_name} version {version} in ML Metadata")
        run_id = str(pushed.properties["run_id"])
        with self.step(run_id, "canary", {"decision": decision, **numbers}) as step:
            step.input(
                PUSHED_MODEL,
                pushed.uri,
                canary=decision,
                canary_reason=reason,
                **({"state": ROLLED_BACK} if decision == ROLLED_BACK else {}),
            )
        self.update_run(run_id, canary=decision, canary_reason=reason)

    def lineage(self, artifact_id: int) -> list[LineageEntry]:
        """The artifact and everything it was derived from, walking producer steps back to the sources."""
        entries: list[LineageEntry] = []
        seen: set[int] = set()
        frontier = [artifact_id]
        while frontier:
            frontier = [i for i in dict.fromkeys(frontier) if i not in seen]
            if not frontier:
                break
            seen.update(frontier)
            artifacts = self._store.get_artifacts_by_id(frontier)
            type_names = {
                t.id: t.name for t in self._store.get_artifact_types_by_id(list({a.type_id for a in artifacts}))
            }
            producers = {
                event.artifact_id: event.execution_id
                for event in self._store.get_events_by_artifact_ids(frontier)
                if event.type == mlmd.Event.OUTPUT
            }
            executions = {e.id: e for e in self._store.get_executions_by_id(list(set(producers.values())))}
            expand = []
            for artifact in artifacts:
                type_name = type_names[artifact.type_id]
                execution = executions.get(producers.get(artifact.id, -1))
                step = str(_to_value(execution.custom_properties["step"])) if execution else ""
                run_id = str(_to_value(execution.custom_properties["run_id"])) if execution else ""
                entries.append(LineageEntry(self._artifact(artifact, type_name), step, run_id))
                # Another pushed model (the production model a candidate was compared with)
                # is named, but its own lineage is its own.
                if execution and (type_name != PUSHED_MODEL or artifact.id == artifact_id):
                    expand.append(execution.id)
            frontier = [
                event.artifact_id
                for event in self._store.get_events_by_execution_ids(expand)
                if event.type == mlmd.Event.INPUT
            ]
        return entries


class StepRecorder:
    """Records the artifacts of one running step; `store` answers its queries."""

    def __init__(self, store: MetadataStore, execution: mlmd.Execution, run_id: str):
        self.store = store
        self.run_id = run_id
        self._execution = execution

    def update_run(self, **properties: Value) -> None:
        """Sets properties of the step's run (see MetadataStore.update_run)."""
        self.store.update_run(self.run_id, **properties)

    def input(self, type_name: str, uri: str, **properties: Value) -> int:
        """Records an artifact the step read; an artifact already recorded at that URI is reused."""
        return self.store._record(self._execution, self.run_id, mlmd.Event.INPUT, type_name, uri, properties)

    def output(self, type_name: str, uri: str, **properties: Value) -> int:
        """Records an artifact the step wrote."""
        return self.store._record(self._execution, self.run_id, mlmd.Event.OUTPUT, type_name, uri, properties)

    def pushed_model(self, model_name: str, version: int, path: str, digest: str) -> int:
        """Records a version published to the model repository as this run's pushed model."""
        return self.output(
            PUSHED_MODEL, path, model_name=model_name, version=version, run_id=self.run_id, state="live", digest=digest
        )

    def inputs(self, type_name: str, uris: Sequence[str], **properties: Value) -> list[int]:
        return [self.input(type_name, uri, **properties) for uri in uris]


@contextlib.contextmanager
def pipeline_step(
    connection: str, run_id: str, job_id: str, step: str, parameters: Mapping[str, object]
) -> Iterator[StepRecorder]:
    """What every component adapter opens with: the store, and the step recorded in it.

    A recurring run has no run id of its own: KFP's job id stands in, so each scheduled
    run is still one context in ML Metadata.
    """
    die_with_launcher()  # a step `ct run` started must not outlive it (killed, its run is closed)
    store = MetadataStore(connection)
    with store.step(run_id or job_id, step, parameters) as recorder:
        yield recorder
