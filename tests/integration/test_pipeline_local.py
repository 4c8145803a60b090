"""The compiled pipeline, run for real through kfp.local: each step as a process forked from the
warm host, and each step in its own container of the project's image, given only what a KFP
pod gets; penguins with kfp.local's own SubprocessRunner.

Three spans of real flights arrive in turn: the first trains and pushes; the second is
compared with the first model in production (read across runs from the home volume only);
the third arrives corrupted and is stopped by data validation, leaving production as it was.
"""

from __future__ import annotations

import re
import time

import pytest

from components.common import metadata
from components.common.home import Home
from components.common.metadata import MetadataStore
from components.common.version import code_version
from pipelines.cli import main
from pipelines.demo.sample_data import Span
from pipelines.local_run import (
    DOCKER,
    EXIT_COMPLETED,
    EXIT_STOPPED_BY_DATA,
    SUBPROCESS,
    WARM,
    exit_code,
    run_locally,
)
from pipelines.pods import container_home
from tests.support.containers import require_the_image
from tests.support.object_storage import s3_on_loopback
from tests.support.spans import write_month

pytestmark = pytest.mark.pipeline


def corrupt(span: Span) -> Span:
    """What an upstream change could do: distances arrive as text, a third of the rows carry
    a carrier code the schema has never seen, and a column the schema does not know appears."""
    frame = span.frame.copy()
    frame["distance"] = frame["distance"].map(lambda miles: f"{miles:.0f} mi")
    frame.loc[frame.index % 3 == 0, "carrier"] = "ZZ"
    frame["arr_delay"] = 12.0
    return Span(span.span_id, frame, span.dropped, span.dropped_reason)


SMALL_DATA = {"epochs": 3, "min_auc": 0.55, "min_slice_examples": 50}
STEPS = [
    "ingest",
    "materialize",
    "statistics",
    "validate_data",
    "data_gate",
    "train",
    "evaluate",
    "validate_model",
    "infra_validate",
    "push",
]


@pytest.fixture(scope="module", params=(WARM, DOCKER))
def runner(request):
    if request.param == DOCKER:
        require_the_image()
    return request.param


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, flight_months, runner):
    root = tmp_path_factory.mktemp("pipeline")
    home, data_root = Home(root / "home"), root / "data"
    runs, repository = [], []
    for month in ("2013-01", "2013-02", "2013-07"):
        frame = flight_months[month]
        if month == "2013-07":
            frame = corrupt(Span(month, frame, 0, "")).frame
        write_month(data_root, month, frame)
        runs.append(
            run_locally(home, data_root, SMALL_DATA, trigger="new data", reason=f"span {month} arrived", runner=runner)
        )
        repository.append(sorted(p.relative_to(home.model_repository) for p in home.model_repository.rglob("*")))
    return home, runs, repository


def test_first_run_pushes_version_1(three_runs):
    home, [first, *_], _ = three_runs
    assert [s.step for s in first.steps] == STEPS
    assert all(s.status == "complete" for s in first.steps)
    assert (first.decision, first.properties["version"], exit_code(first)) == (metadata.PUSHED, 1, EXIT_COMPLETED)
    assert first.properties["trigger"] == "new data" and first.properties["reason"] == "span 2013-01 arrived"
    assert first.parameters["epochs"] == 3
    # The features of January's flights are in the online store, recorded per feature view.
    windows = {
        a.properties["view"]: a
        for a in MetadataStore(home.metadata_connection).run_artifacts(first.run_id, metadata.FEATURES)
    }
    assert sorted(windows) == ["planes", "weather"] and windows["weather"].properties["rows"] > 2000
    assert windows["weather"].properties["start"].startswith("2013-01-01T")  # the first sampled departure hour
    assert first.properties["weather_missing"] < 0.05 * 3000 and first.properties["planes_missing"] > 0
    # Judged out of time: on the newest fifth of January's flights, the cut recorded with the examples.
    examples = MetadataStore(home.metadata_connection).run_artifacts(first.run_id, metadata.EXAMPLES)
    assert {(e.properties["split_rule"], e.properties["eval_cut"]) for e in examples} == {
        (first.properties["split_rule"], first.properties["eval_cut"])
    }
    assert first.properties["split_rule"] == "newest 20% by sched_dep"
    assert first.properties["eval_cut"] > "2013-01-2"  # the last days of the month
    assert (home.model_repository / "flight-delay" / "1" / "saved_model.pb").is_file()


def test_second_run_is_compared_with_the_production_model(three_runs):
    home, [_, second, _], _ = three_runs
    assert second.decision in (metadata.PUSHED, metadata.NOT_BLESSED)
    assert exit_code(second) == EXIT_COMPLETED
    store = MetadataStore(home.metadata_connection)
    [evaluation] = store.run_artifacts(second.run_id, metadata.EVALUATION)
    assert evaluation.properties["production_version"] == 1
    [compared_with] = store.run_artifacts(second.run_id, metadata.PUSHED_MODEL)[:1]
    assert compared_with.properties["version"] == 1
    assert "production" in second.properties["reasons"]  # pushed or not, the verdict is against production


def test_corrupted_span_stops_before_training_and_production_is_untouched(three_runs):
    home, runs, repository = three_runs
    stopped = runs[2]
    assert exit_code(stopped) == EXIT_STOPPED_BY_DATA
    assert [(s.step, s.status) for s in stopped.steps] == [
        ("ingest", "complete"),
        ("materialize", "complete"),
        ("statistics", "complete"),
        ("validate_data", "complete"),  # so its anomalies and drift views reach the UI
        ("data_gate", "failed"),
    ]
    reasons = stopped.properties["reasons"]
    assert "span=2013-07/part-0.parquet" in reasons
    assert "feature 'carrier': Unexpected string values" in reasons and "ZZ" in reasons
    assert "feature 'distance': Unexpected data type" in reasons and " mi'" in reasons
    assert "feature 'arr_delay': New column" in reasons and "(value 12.0 in " in reasons
    assert repository[2] == repository[1]
    store = MetadataStore(home.metadata_connection)
    production = store.production_model("flight-delay")
    assert production.properties["run_id"] in (runs[0].run_id, runs[1].run_id)
    [anomalies] = store.run_artifacts(stopped.run_id, metadata.ANOMALIES)
    assert anomalies.properties["count"] == 3
    assert store.run_artifacts(stopped.run_id, metadata.MODEL) == []


def test_drift_against_the_previous_span_is_recorded(three_runs, runner):
    """The baseline is the previous run's training statistics, read from the home volume
    (a pod of a later run cannot read another run's artifacts from KFP's artifact store)."""
    home, runs, _ = three_runs
    store = MetadataStore(home.metadata_connection)
    seen_home = container_home(home) if runner == DOCKER else home
    for run in runs:
        for statistics in store.run_artifacts(run.run_id, metadata.STATISTICS):
            assert statistics.uri.startswith(str(seen_home.statistics.resolve())), statistics.uri
    [first, second] = [store.run_artifacts(run.run_id, metadata.DRIFT)[0] for run in runs[:2]]
    assert first.properties["baseline"] == ""  # first span: nothing to compare with
    assert second.properties["baseline"] == "span 2013-01"
    assert "month" in second.properties["drifted"].split(",")


def test_lineage_runs_from_the_model_back_to_its_span(three_runs, capsys):
    home, runs, _ = three_runs
    assert main(["lineage", "1", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    for artifact_type in (
        metadata.PUSHED_MODEL,
        metadata.MODEL,
        metadata.EXAMPLES,
        metadata.SCHEMA,
        metadata.ANOMALIES,
        metadata.STATISTICS,
        metadata.EVALUATION,
        metadata.BLESSING,
        metadata.INFRA_BLESSING,
        metadata.SPAN,
    ):
        assert f"| {artifact_type} |" in out, artifact_type
    assert "span=2013-01" in out and "span=2013-02" not in out
    assert f"code {code_version()})" in out.splitlines()[0]  # which code trained it


def test_runs_table_shows_every_run_with_its_decision(three_runs, capsys):
    home, runs, _ = three_runs
    assert main(["runs", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    for run in runs:
        assert run.run_id in out
    assert "stopped by data validation" in out and "epochs=3" in out and "span 2013-07 arrived" in out
    assert main(["runs", "--home", str(home.root), "--last", "1"]) == 0
    out = capsys.readouterr().out
    assert runs[-1].run_id in out and not any(run.run_id in out for run in runs[:-1])


def test_penguins_run_through_the_same_pipeline_with_kfp_locals_own_subprocess_runner(tmp_path):
    assert main(["data", "penguins", "--dest", str(tmp_path / "data")]) == 0
    run = run_locally(
        Home(tmp_path / "home"), tmp_path / "data", {"dataset": "penguins", "window_spans": 3}, runner=SUBPROCESS
    )
    assert run.decision == metadata.PUSHED, run.properties
    assert (tmp_path / "home" / "models" / "penguin-adelie" / "1").is_dir()


def test_a_run_reads_its_spans_from_object_storage(tmp_path, capsys):
    """`ct run` with its data root in a bucket (moto's S3 server on loopback, configured as a
    pod is): ingest reads the spans there and ML Metadata records their URIs."""
    from s3fs import S3FileSystem

    assert main(["data", "penguins", "--dest", str(tmp_path / "local")]) == 0
    with s3_on_loopback(tmp_path / "aws", ("ct-data",)):
        S3FileSystem().put(f"{tmp_path / 'local'}/", "ct-data/penguins", recursive=True)
        home = tmp_path / "home"
        arguments = ["--data-root", "s3://ct-data/penguins", "--home", str(home), "--param", "dataset=penguins"]
        assert main(["run", *arguments, "--param", "window_spans=3"]) == 0
    [run] = MetadataStore(Home(home).metadata_connection).runs()
    assert run.decision == metadata.PUSHED, run.properties
    spans = MetadataStore(Home(home).metadata_connection).run_artifacts(run.run_id, metadata.SPAN)
    assert sorted(span.uri for span in spans) == [
        f"s3://ct-data/penguins/span={year}" for year in ("2007", "2008", "2009")
    ]


def test_controller_retrains_on_new_data_and_not_twice_on_the_same_data(tmp_path, flight_months, monkeypatch):
    from pipelines.triggers.config import NewDataSettings, TriggerConfig
    from pipelines.triggers.controller import build_controller
    from pipelines.triggers.sources import request_manual_run

    config = TriggerConfig(
        home=tmp_path / "home",
        data_root=tmp_path / "data",
        parameters=SMALL_DATA,
        cooldown_seconds=0,
        new_data=NewDataSettings(),
    )
    controller = build_controller(config)
    controller.tick()
    assert controller.running is None and controller.events == []
    write_month(config.data_root, "2013-01", flight_months["2013-01"])
    controller.tick()
    run_id = controller.running
    assert run_id is not None
    while controller.running is not None:
        time.sleep(0.5)
        controller.tick()
    assert controller.events[-1].reason == "exit code 0"
    log = (Home(config.home).logs / f"{run_id}.log").read_text()
    # nothing before kfp's first line
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} - INFO - Running pipeline", log), log[:500]
    run = MetadataStore(Home(config.home).metadata_connection).run(run_id)
    assert run.decision == metadata.PUSHED
    assert (run.properties["trigger"], run.properties["reason"]) == ("new data", "new data: new complete span 2013-01")
    request_manual_run(Home(config.home).triggers, "just because")
    controller.tick()
    assert controller.running is None and controller.events[-1].kind == "waiting"
    assert "trained on already" in controller.events[-1].reason and controller.pending
    host = controller.launcher._warm_host()  # kept for the next run, which forks its steps at once
    assert host.alive() and (Home(config.home).logs / "step-host.log").is_file()
    monkeypatch.setattr("pipelines.triggers.controller.code_version_on_disk", lambda: "edited since")
    renewed = controller.launcher._warm_host()  # the old host imported code that changed
    assert renewed is not host and not host.alive() and renewed.alive()
    controller.close()
    assert not renewed.alive()


def test_demo_replays_months_with_serving_feedback_and_triggers(tmp_path, capfd):
    code = main(["demo", "--home", str(tmp_path / "demo"), "--months", "2013-01..2013-02", "--rows-per-month", "600"])
    out, err = capfd.readouterr()
    assert code == 0, out
    # The terminal has the timeline alone; the libraries' output (Feast, TensorFlow, TFDV) is in the log.
    assert err == "" and "Materializing" not in out and "cuda" not in out.lower(), out
    assert "Materializing" in (tmp_path / "demo" / "logs" / "demo.log").read_text()
    store = MetadataStore(Home(tmp_path / "demo").metadata_connection)
    first = store.runs()[0]
    assert first.properties["trigger"] == "manual" and first.decision == metadata.PUSHED
    assert "2013-02  v1 " in out  # February's traffic was answered by version 1, and scored
    assert all(run.decision in (metadata.PUSHED, metadata.NOT_BLESSED) for run in store.runs())
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "<svg" in report and "Which trigger fired when" in report and "Lineage of the newest live model" in report
