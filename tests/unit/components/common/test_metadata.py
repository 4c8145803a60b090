import pytest
from ml_metadata import errors as mlmd_errors

from components.common import metadata
from components.common.errors import ConfigError, DataError, UnavailableError
from components.common.metadata import MetadataStore
from components.common.version import code_version


def test_a_step_records_status_times_parameters_and_artifacts(store):
    with store.step("run-1", "ingest", {"window_spans": 2}) as step:
        step.input(metadata.SPAN, "/data/span=2013-01", dataset="flights")
        step.output(metadata.EXAMPLES, "/root/train", split="train", rows=10)
    run = store.run("run-1")
    [record] = run.steps
    assert (record.step, record.status, record.parameters, record.error) == (
        "ingest",
        "complete",
        {"window_spans": 2},
        "",
    )
    assert record.end >= record.start > 0
    assert run.parameters == {"window_spans": 2}


def test_a_step_records_its_peak_memory_and_the_code_that_ran(store):
    with store.step("run-1", "train", {}):
        ballast = bytearray(64 * 1024 * 1024)  # the step's process grows by 64 MiB at least
    [record] = store.run("run-1").steps
    assert record.peak_memory_mib >= 64 and len(ballast) > 0
    [execution] = store._store.get_executions()
    assert execution.custom_properties["code_version"].string_value == code_version()


def test_bad_data_stops_the_run_and_other_errors_fail_it(store):
    with pytest.raises(DataError):
        with store.step("run-1", "validate_data", {}):
            raise DataError("unexpected values", path="span=2013-03", feature="carrier", value="ZZ")
    run = store.run("run-1")
    assert run.decision == metadata.STOPPED_BY_DATA
    assert run.properties["reasons"] == "validate_data: span=2013-03: feature 'carrier': unexpected values (value 'ZZ')"
    assert run.steps[0].status == "failed" and "DataError" in run.steps[0].error
    with pytest.raises(RuntimeError):
        with store.step("run-2", "train", {}):
            raise RuntimeError("out of memory")
    assert store.run("run-2").decision == metadata.FAILED


def test_run_properties_survive_later_steps(store):
    store.update_run("run-1", trigger="new data", reason="span 2013-02 arrived")
    with store.step("run-1", "push", {}):
        store.update_run("run-1", decision=metadata.PUSHED)
    properties = store.run("run-1").properties
    assert (properties["trigger"], properties["decision"]) == ("new data", metadata.PUSHED)


def test_production_model_is_the_highest_live_version(store):
    assert store.production_model("flight-delay") is None
    for version in (1, 2):
        with store.step(f"run-{version}", "push", {}) as step:
            step.pushed_model("flight-delay", version, f"/models/flight-delay/{version}", "digest")
    with store.step("run-3", "push", {}) as step:
        step.output(metadata.PUSHED_MODEL, "/models/other/9", model_name="other", version=9, state="live")
    assert store.production_model("flight-delay").uri == "/models/flight-delay/2"
    assert [p.properties["version"] for p in store.pushed_models("flight-delay")] == [1, 2]
    assert store.pushed_model("flight-delay", 1).uri == "/models/flight-delay/1"
    assert store.pushed_model("flight-delay", 9) is None and store.pushed_model("other", 9).uri == "/models/other/9"
    store.record_canary_decision("flight-delay", 2, metadata.ROLLED_BACK, "worse online", {"labels": 400})
    assert store.production_model("flight-delay").uri == "/models/flight-delay/1"
    assert store.rolled_back_versions("flight-delay") == {2} and store.rolled_back_versions("other") == set()


def test_production_model_is_the_highest_live_version_whatever_order_pushes_were_recorded_in(store):
    """Two runs published v5 and v6 at once, and v6's push was recorded first."""
    for run_id, version in [("run-a", 4), ("run-c", 6), ("run-b", 5)]:
        with store.step(run_id, "push", {}) as step:
            step.pushed_model("flight-delay", version, f"/models/flight-delay/{version}", "digest")
    assert store.production_model("flight-delay").properties["version"] == 6
    store.record_canary_decision("flight-delay", 6, metadata.ROLLED_BACK, "worse online", {"labels": 400})
    assert store.production_model("flight-delay").properties["version"] == 5


def test_records_of_older_code_are_upgraded_once(store):
    """Run contexts made before they carried `decision`, span inputs before they carried `span`:
    the first holder of the home upgrades them, so they are closed and found like new ones."""
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    raw = store._store
    old_run = mlmd.Context(type_id=raw.put_context_type(mlmd.ContextType(name=metadata.RUN_CONTEXT)), name="run-old")
    old_run.custom_properties["launcher"].string_value = "gone:1"
    [old_run.id] = raw.put_contexts([old_run])
    span = mlmd.Artifact(type_id=raw.put_artifact_type(mlmd.ArtifactType(name=metadata.SPAN)), uri="/d/span=2013-01")
    span.custom_properties["dataset"].string_value = "flights"
    execution = mlmd.Execution(type_id=raw.put_execution_type(mlmd.ExecutionType(name=metadata.STEP_EXECUTION)))
    execution.custom_properties["run_id"].string_value = "run-old"
    raw.put_execution(execution, [(span, mlmd.Event(type=mlmd.Event.INPUT))], [old_run])
    assert store.span_readers("flights", ["2013-01"]) == {}  # not findable before the upgrade

    assert store.close_interrupted_runs(lambda launcher: False) == ["run-old"]
    assert store.run("run-old").decision == metadata.FAILED
    assert store.span_readers("flights", ["2013-01"]) == {"2013-01": {metadata.FAILED}}
    [marker] = raw.get_contexts_by_type(metadata.RECORDS_CONTEXT)
    assert marker.custom_properties["version"].int_value == metadata.RECORDS_VERSION
    store.upgrade_records()  # once only: the marker is read, nothing else
    assert len(raw.get_contexts_by_type(metadata.RECORDS_CONTEXT)) == 1


def test_previous_statistics_are_those_of_an_older_span(store):
    for span in ("2013-01", "2013-02"):
        with store.step(f"run-{span}", "statistics", {}) as step:
            for split in ("train", "eval"):
                step.output(
                    metadata.STATISTICS,
                    f"/stats/{span}/{split}",
                    dataset="flights",
                    split=split,
                    last_span=span,
                    spans=span,
                )
    assert store.previous_statistics("flights", before_span="2013-01") is None
    assert store.previous_statistics("flights", before_span="2013-02").uri == "/stats/2013-01/train"
    assert store.previous_statistics("flights", before_span="2013-03").uri == "/stats/2013-02/train"
    assert store.previous_statistics("penguins", before_span="2013-03") is None


def test_previous_statistics_are_those_of_the_latest_older_span_whenever_recorded(store):
    """A backfill records an older window after a newer one; of two windows ending in the same
    span, the one recorded last counts."""
    for run_id, span in [("run-1", "2013-05"), ("run-2", "2013-02"), ("run-3", "2013-04"), ("run-4", "2013-05")]:
        with store.step(run_id, "statistics", {}) as step:
            step.output(metadata.STATISTICS, f"/stats/{run_id}", dataset="flights", split="train", last_span=span)
    assert store.previous_statistics("flights", before_span="2013-06").uri == "/stats/run-4"
    assert store.previous_statistics("flights", before_span="2013-05").uri == "/stats/run-3"
    assert store.previous_statistics("flights", before_span="2013-03").uri == "/stats/run-2"


def test_lineage_walks_back_to_the_sources_but_not_into_older_models(store):
    with store.step("run-1", "push", {}) as step:
        step.input(metadata.MODEL, "/r1/model")
        step.output(metadata.PUSHED_MODEL, "/models/m/1", model_name="m", version=1)
    with store.step("run-2", "ingest", {}) as step:
        step.input(metadata.SPAN, "/data/span=2")
        step.output(metadata.EXAMPLES, "/r2/examples")
    with store.step("run-2", "train", {}) as step:
        step.input(metadata.EXAMPLES, "/r2/examples")
        step.output(metadata.MODEL, "/r2/model")
    with store.step("run-2", "evaluate", {}) as step:
        step.input(metadata.MODEL, "/r2/model")
        step.input(metadata.PUSHED_MODEL, "/models/m/1")
        step.output(metadata.EVALUATION, "/r2/evaluation")
    with store.step("run-2", "push", {}) as step:
        step.input(metadata.MODEL, "/r2/model")
        step.input(metadata.EVALUATION, "/r2/evaluation")
        pushed = step.output(metadata.PUSHED_MODEL, "/models/m/2", model_name="m", version=2)
    entries = store.lineage(pushed)
    assert entries[0].artifact.uri == "/models/m/2"
    assert {(e.produced_by, e.artifact.uri) for e in entries} == {
        ("push", "/models/m/2"),
        ("train", "/r2/model"),
        ("evaluate", "/r2/evaluation"),
        ("ingest", "/r2/examples"),
        ("push", "/models/m/1"),
        ("", "/data/span=2"),
    }  # the older model is named, its own inputs (/r1/model) are not
    assert {e.run_id for e in entries if e.produced_by} == {"run-1", "run-2"}


def test_runs_are_listed_oldest_first(store):
    for run_id in ("run-b", "run-a"):
        with store.step(run_id, "ingest", {}):
            pass
    assert [r.run_id for r in store.runs()] == ["run-b", "run-a"]
    assert [r.run_id for r in store.runs(last=1)] == ["run-a"]
    assert [s.step for s in store.runs(last=1)[0].steps] == ["ingest"]
    with pytest.raises(KeyError, match="no run 'run-c'"):
        store.run("run-c")


@pytest.mark.parametrize("connection", ["mysql://db/metadata", "grpc://metadata-grpc-service", "metadata.sqlite"])
def test_bad_connection_strings_are_rejected(connection):
    with pytest.raises(ValueError, match="metadata connection"):
        MetadataStore(connection)


def test_a_run_whose_launcher_is_gone_is_closed_as_interrupted(store):
    store.update_run("run-killed", launcher="here:1")
    store.update_run("run-elsewhere", launcher="there:2")
    store.update_run("run-done", launcher="here:3", decision=metadata.PUSHED)
    killed_step = store.step("run-killed", "train", {})
    killed_step.__enter__()  # started, and never to end: its process was killed (kept referenced till then)
    with store.step("run-elsewhere", "ingest", {}):
        pass

    def alive(launcher):
        return not launcher.startswith("here:")

    assert store.close_interrupted_runs(alive) == ["run-killed"]
    killed = store.run("run-killed")
    assert killed.decision == metadata.FAILED
    assert killed.properties["reasons"] == "interrupted during train: its launcher here:1 exited before the run decided"
    assert store.run("run-elsewhere").decision == ""  # another host's: cannot be told, left alone
    assert store.run("run-done").decision == metadata.PUSHED
    assert store.close_interrupted_runs(alive) == [] and killed_step is not None


def test_a_store_that_cannot_be_reached_or_opened_is_named(tmp_path):
    with pytest.raises(UnavailableError, match="metadata connection grpc://127.0.0.1:1: unreachable"):
        MetadataStore("grpc://127.0.0.1:1").runs()
    (tmp_path / "file").write_text("")
    connection = f"sqlite:///{tmp_path / 'file' / 'metadata.sqlite'}"
    with pytest.raises(UnavailableError, match=f"metadata connection {connection}: cannot be opened"):
        MetadataStore(connection)


def test_a_spans_readers_are_the_runs_that_read_it_with_their_decisions(store):
    """A killed or crashed run read its spans but trained on nothing: the new-data trigger reads them again."""
    for run_id, spans, decision in [
        ("run-1", ["2013-01"], metadata.PUSHED),
        ("run-2", ["2013-01", "2013-02"], metadata.STOPPED_BY_DATA),
        ("run-3", ["2013-03"], metadata.FAILED),
        ("run-4", ["2013-04"], ""),  # still going
    ]:
        with store.step(run_id, "ingest", {}) as step:
            for span in spans:
                step.input(metadata.SPAN, f"/data/span={span}", dataset="flights", span=span)
            step.output(metadata.EXAMPLES, f"/{run_id}/train", dataset="flights", split="train", spans=",".join(spans))
        if decision:
            store.update_run(run_id, decision=decision)
    assert store.span_readers("flights", ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]) == {
        "2013-01": {metadata.PUSHED, metadata.STOPPED_BY_DATA},
        "2013-02": {metadata.STOPPED_BY_DATA},
        "2013-03": {metadata.FAILED},
        "2013-04": {""},
    }
    assert store.span_readers("penguins", ["2013-01"]) == {} and store.span_readers("flights", []) == {}
    assert set(store.run_uris()) == {"run-1", "run-2", "run-3", "run-4"}
    assert store.run_uris()["run-3"] == {"/run-3/train", "/data/span=2013-03"}


def test_a_window_counts_as_trained_on_once_a_run_that_read_it_completed(store):
    for run_id, fingerprint, decision in [
        ("run-1", "aaa", metadata.PUSHED),
        ("run-2", "bbb", metadata.NOT_BLESSED),
        ("run-3", "ccc", metadata.FAILED),
        ("run-4", "ddd", ""),
    ]:
        with store.step(run_id, "ingest", {}) as step:
            step.output(
                metadata.EXAMPLES, f"/{run_id}/train", dataset="flights", split="train", fingerprint=fingerprint
            )
            step.output(metadata.EXAMPLES, f"/{run_id}/eval", dataset="flights", split="eval", fingerprint="eee")
        if decision:
            store.update_run(run_id, decision=decision)
    assert store.trained_on("flights", "aaa") and store.trained_on("flights", "bbb")
    assert not any(store.trained_on("flights", f) for f in ("ccc", "ddd", "eee", "fff"))
    assert not store.trained_on("penguins", "aaa")


def test_filter_values_are_quoted(store):
    """A value with quotes is compared as written, never read as query syntax; one with a
    backslash, which ML Metadata's SQLite queries cannot match, is refused by name."""
    with store.step("run-1", "ingest", {}) as step:
        for span in ("it's", "x' OR '1' = '1"):
            step.input(metadata.SPAN, f"/data/{len(span)}", dataset="flights", span=span)
    assert store.span_readers("flights", ["it's"]) == {"it's": {""}}
    assert store.span_readers("flights", ["x' OR '1' = '1"]) == {"x' OR '1' = '1": {""}}
    assert store.span_readers("flights", ["x"]) == {}
    with pytest.raises(ConfigError, match=r"'a\\\\b': a backslash cannot be looked up in ML Metadata"):
        store.trained_on("flights", "a\\b")
    assert store.span_readers("flights", ["2013\\01", "it's"]) == {"it's": {""}}  # a folder so named: unread


class _AbortingFirst:
    """The MLMD client, with its first `aborts` calls of one method aborted as MLMD aborts a
    call that found SQLite's lock held past its own retries (AbortedError, nothing written)."""

    def __init__(self, client, method: str, aborts: int):
        self._client, self._method, self.aborts = client, method, aborts

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if name != self._method:
            return method

        def aborting_first(*args, **kwargs):
            if self.aborts:
                self.aborts -= 1
                raise mlmd_errors.AbortedError("Concurrent writes aborted after max number of retries.")
            return method(*args, **kwargs)

        return aborting_first


def test_a_call_aborted_by_a_busy_store_is_made_again(store):
    store.update_run("run-1", launcher="0")
    store._store._store = _AbortingFirst(store._store._store, "put_contexts", aborts=3)
    store.update_run("run-1", launcher="1")
    assert store._store._store.aborts == 0
    assert store.run("run-1").properties["launcher"] == "1"


def test_a_store_busy_past_the_limit_is_named(store, monkeypatch):
    monkeypatch.setattr(metadata._Reachable, "BUSY_SECONDS", 0.3)
    store.update_run("run-1", launcher="0")
    store._store._store = _AbortingFirst(store._store._store, "put_contexts", aborts=1000)
    with pytest.raises(UnavailableError, match="metadata connection sqlite:///.*: busy for 0 s: Concurrent writes"):
        store.update_run("run-1", launcher="1")
    assert store.run("run-1").properties["launcher"] == "0"


WRITER = """
import sys
from components.common.metadata import MetadataStore
store, name, calls = MetadataStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for call in range(calls):
    if name.startswith("reader"):
        store.runs()
    else:
        store.update_run(f"run-{name}-{call % 5}", launcher=str(call))
"""


def test_processes_writing_one_sqlite_store_at_once_all_get_through(tmp_path):
    """Real processes on one real SQLite store, as a run's steps, `ct serve` and the controller:
    no call fails and none is lost. Each makes a fixed number of calls, so a slow machine takes
    longer but never counts fewer (one process can be starved for seconds while others write)."""
    import subprocess
    import sys

    connection = f"sqlite://{tmp_path / 'metadata.sqlite'}"  # created by the first to open it, as in a new home
    names, calls = ["writer-1", "writer-2", "writer-3", "reader-1"], 300
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, connection, name, str(calls)], stderr=subprocess.PIPE, text=True
        )
        for name in names
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * len(names), errors
    runs = {run.run_id: run.properties["launcher"] for run in MetadataStore(connection).runs()}
    last_calls = {f"run-{name}-{run}": str(calls - 5 + run) for name in names[:3] for run in range(5)}
    assert runs == last_calls  # every writer's every call got through, the last one last
