"""Each trigger fires on its real condition and not otherwise; the controller runs one at a time."""

from __future__ import annotations

import datetime
import time

import numpy as np
import pytest

from components.common import metadata
from components.common.metadata import MetadataStore
from components.statistics.logic import compute_statistics
from components.validate_data.logic import load_schema
from pipelines.config import (ConfigError, PerformanceTrigger, ShiftTrigger, TriggerConfig, load_trigger_config)
from pipelines.triggers.controller import Controller
from pipelines.triggers.sources import (DISTRIBUTION_SHIFT, MANUAL, NEW_DATA, PERFORMANCE, DistributionShiftTrigger,
                                        Firing, ManualTrigger, NewDataTrigger, PerformanceDropTrigger, ScheduleTrigger,
                                        request_manual_run)
from serving.request_log import RequestLog
from tests.conftest import write_month
from tests.serving_helpers import MODEL, call


@pytest.fixture
def store(tmp_path):
    return MetadataStore(f"sqlite:///{tmp_path / 'metadata.sqlite'}")


def test_manual_requests_are_picked_up_once(tmp_path):
    trigger = ManualTrigger(tmp_path / "triggers")
    assert trigger.check(time.time()) == []
    request_manual_run(tmp_path / "triggers", "new features reviewed", force=True)
    [firing] = trigger.check(time.time())
    assert (firing.trigger, firing.reason, firing.force) == (MANUAL, "new features reviewed", True)
    assert trigger.check(time.time()) == []


def test_schedule_fires_once_in_a_matching_minute():
    trigger = ScheduleTrigger("30 6 * * *")
    six_thirty = datetime.datetime(2013, 3, 4, 6, 30, 5).timestamp()
    [firing] = trigger.check(six_thirty)
    assert firing.reason == "cron '30 6 * * *' at 2013-03-04 06:30"
    assert trigger.check(six_thirty + 20) == []
    assert trigger.check(six_thirty + 60) == []
    assert len(trigger.check(six_thirty + 86400)) == 1


def test_new_data_fires_for_complete_spans_no_run_has_read(tmp_path, store, flight_months):
    root = tmp_path / "data"
    with store.step("run-1", "ingest", {}) as step:
        step.output(metadata.EXAMPLES, "/e", dataset="flights", spans="2013-01", split="train")
    write_month(root, "2013-01", flight_months["2013-01"])
    trigger = NewDataTrigger(root, "flights", store, min_new_spans=1)
    assert trigger.check(time.time()) == []
    unfinished = write_month(root, "2013-02", flight_months["2013-02"])
    (unfinished / "_SUCCESS").unlink()
    assert trigger.check(time.time()) == []
    (unfinished / "_SUCCESS").touch()
    [firing] = trigger.check(time.time())
    assert (firing.trigger, firing.reason) == (NEW_DATA, "new complete span 2013-02")
    assert trigger.check(time.time()) == []


def test_new_data_can_wait_for_several_spans(tmp_path, store, flight_months):
    root = tmp_path / "data"
    trigger = NewDataTrigger(root, "flights", store, min_new_spans=2)
    write_month(root, "2013-01", flight_months["2013-01"])
    assert trigger.check(time.time()) == []
    write_month(root, "2013-02", flight_months["2013-02"])
    assert trigger.check(time.time())[0].reason == "new complete spans 2013-01, 2013-02"


def feedback(server, rows, agree: bool):
    """Real traffic, then labels that agree (or disagree) with the model's ranking."""
    answers = [call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})[1] for row in rows]
    scores = [a["predictions"][0] for a in answers]
    median = float(np.median(scores))
    labels = [{"request_id": a["request_ids"][0], "label": int((s > median) == agree)} for a, s in zip(answers, scores)]
    assert call(server, f"/v1/models/{MODEL}:feedback", {"feedback": labels})[0] == 200


def test_performance_fires_when_online_auc_falls_below_the_floor(serve, rows):
    server, *_ = serve()
    trigger = PerformanceDropTrigger(PerformanceTrigger(server.url, min_auc=0.6, window=500, min_samples=50), MODEL)
    feedback(server, rows[:40], agree=False)
    assert trigger.check(time.time()) == []  # 40 labels: not enough to judge
    feedback(server, rows[40:100], agree=False)
    [firing] = trigger.check(time.time())
    assert firing.trigger == PERFORMANCE and "of version 1 below 0.6 over its last 100 labelled" in firing.reason
    assert trigger.check(time.time()) == []  # once per production version


def test_performance_does_not_fire_on_a_good_model_or_without_a_server(serve, rows):
    server, *_ = serve()
    feedback(server, rows[:100], agree=True)
    assert PerformanceDropTrigger(PerformanceTrigger(server.url, 0.6, 500, 50), MODEL).check(time.time()) == []
    assert PerformanceDropTrigger(PerformanceTrigger("http://127.0.0.1:9", 0.6, 500, 50), MODEL).check(time.time()) == []


@pytest.fixture
def production_trained_on_january(tmp_path, store, splits, flights):
    """A pushed model whose run computed training statistics of the January sample."""
    statistics = tmp_path / "train_statistics"
    compute_statistics(splits[0], statistics, load_schema(flights.schema_path))
    with store.step("run-1", "statistics", {}) as step:
        step.output(metadata.STATISTICS, str(statistics), dataset="flights", split="train", spans="2013-01",
                    last_span="2013-01")
    with store.step("run-1", "push", {}) as step:
        step.output(metadata.PUSHED_MODEL, "/models/flight-delay/1", model_name=MODEL, version=1, run_id="run-1")
    return store


def log_traffic(folder, frame, features):
    log = RequestLog(folder, 1.0, 10_000, 10**9)
    records = frame[list(features)].to_dict(orient="records")
    log.append(records, [0.5] * len(records), 1, [f"id-{i}" for i in range(len(records))])
    log.flush()


def test_distribution_shift_fires_on_skew_from_training_data(tmp_path, production_trained_on_january, flights,
                                                            flight_examples):
    trigger = DistributionShiftTrigger(ShiftTrigger(window_rows=1000, check_seconds=0), tmp_path / "log", flights,
                                       production_trained_on_january)
    log_traffic(tmp_path / "log", flight_examples["2013-01"].head(1500), flights.features)
    assert trigger.check(time.time()) == []  # January traffic, January training data
    log_traffic(tmp_path / "log", flight_examples["2013-07"].head(1500), flights.features)
    [firing] = trigger.check(time.time())
    assert firing.trigger == DISTRIBUTION_SHIFT
    assert "skewed from version 1's training data" in firing.reason and "temp Jensen-Shannon" in firing.reason
    assert "recent traffic drifted" in firing.reason  # July against the January window before it


def test_distribution_shift_needs_a_full_window(tmp_path, production_trained_on_january, flights, flight_examples):
    trigger = DistributionShiftTrigger(ShiftTrigger(window_rows=1000, check_seconds=0), tmp_path / "log", flights,
                                       production_trained_on_january)
    log_traffic(tmp_path / "log", flight_examples["2013-07"].head(999), flights.features)
    assert trigger.check(time.time()) == []


class FakeLauncher:
    """Stands in for `ct run` so the controller's rules are tested alone (real runs: tests/integration)."""

    def __init__(self):
        self.started = []
        self.exit_code = None

    def start(self, run_id, trigger, reason):
        self.started.append((run_id, trigger, reason))
        self.exit_code = None

    def finished(self):
        return self.exit_code


class Scripted:
    def __init__(self, name):
        self.name = name
        self.queue = []

    def check(self, now):
        firings, self.queue = self.queue, []
        return firings


def make_controller(tmp_path, store, flight_months, cooldown=0.0):
    write_month(tmp_path / "data", "2013-01", flight_months["2013-01"])
    config = TriggerConfig(home=tmp_path, data_root=tmp_path / "data", cooldown_seconds=cooldown)
    manual, drift, launcher = Scripted(MANUAL), Scripted(DISTRIBUTION_SHIFT), FakeLauncher()
    clock = [1000.0]
    controller = Controller(config, [manual, drift], launcher, store, clock=lambda: clock[0])
    return controller, manual, drift, launcher, clock


def test_triggers_during_a_run_are_coalesced_into_one_next_run(tmp_path, store, flight_months):
    controller, manual, drift, launcher, clock = make_controller(tmp_path, store, flight_months)
    manual.queue.append(Firing(MANUAL, "first", 0))
    controller.tick()
    assert len(launcher.started) == 1 and launcher.started[0][1] == MANUAL
    drift.queue.append(Firing(DISTRIBUTION_SHIFT, "temp drifted", 0))
    manual.queue.append(Firing(MANUAL, "again", 0, force=True))
    controller.tick()
    assert len(launcher.started) == 1  # one run at a time
    launcher.exit_code = 0
    controller.tick()
    assert len(launcher.started) == 2
    _, triggers, reason = launcher.started[1]
    assert triggers == "manual, distribution shift"
    assert reason == "manual: again; distribution shift: temp drifted"


def test_cooldown_delays_but_keeps_what_fired(tmp_path, store, flight_months):
    controller, manual, drift, launcher, clock = make_controller(tmp_path, store, flight_months, cooldown=60)
    manual.queue.append(Firing(MANUAL, "first", 0))
    controller.tick()
    launcher.exit_code = 0
    controller.tick()
    drift.queue.append(Firing(DISTRIBUTION_SHIFT, "temp drifted", 0))
    clock[0] += 30
    controller.tick()
    assert len(launcher.started) == 1
    clock[0] += 31
    controller.tick()
    assert len(launcher.started) == 2 and launcher.started[1][1] == DISTRIBUTION_SHIFT


def test_data_trained_on_before_waits_for_new_data_unless_forced(tmp_path, store, flight_months):
    from components.ingest.logic import fingerprint, latest_spans

    controller, manual, drift, launcher, clock = make_controller(tmp_path, store, flight_months)
    files = [p for s in latest_spans(tmp_path / "data", 1) for p in s.files]
    with store.step("run-0", "ingest", {}) as step:
        step.output(metadata.EXAMPLES, "/e", dataset="flights", split="train", fingerprint=fingerprint(files), spans="2013-01")
    store.update_run("run-0", decision=metadata.PUSHED)
    drift.queue.append(Firing(DISTRIBUTION_SHIFT, "temp drifted", 0))
    controller.tick()
    controller.tick()
    assert launcher.started == []
    assert [e.kind for e in controller.events] == ["waiting"] and "trained on already" in controller.events[0].reason
    write_month(tmp_path / "data", "2013-02", flight_months["2013-02"])
    controller.tick()
    assert launcher.started[0][1:] == (DISTRIBUTION_SHIFT, "distribution shift: temp drifted")
    launcher.exit_code = 0
    controller.tick()
    with store.step("run-1", "ingest", {}) as step:
        files = [p for s in latest_spans(tmp_path / "data", 1) for p in s.files]
        step.output(metadata.EXAMPLES, "/e2", dataset="flights", split="train", fingerprint=fingerprint(files), spans="2013-02")
    store.update_run("run-1", decision=metadata.PUSHED)
    manual.queue.append(Firing(MANUAL, "retrain anyway", 0, force=True))
    controller.tick()
    assert len(launcher.started) == 2


def test_trigger_config_is_checked(tmp_path):
    path = tmp_path / "triggers.yaml"
    path.write_text("home: h\ndata_root: d\nschedule: '0 3 * * *'\nnew_data: {min_new_spans: 2}\n"
                    "performance: {min_auc: 0.7}\ndistribution_shift: {}\n")
    config = load_trigger_config(path)
    assert config.new_data.min_new_spans == 2 and config.performance.min_auc == 0.7 and config.distribution_shift
    for text, message in [("home: h\n", "missing key 'data_root'"),
                          ("home: h\ndata_root: d\nevery: 3\n", "unknown key 'every'"),
                          ("home: h\ndata_root: d\nperformance: {min_auc: high}\n", "performance.min_auc='high': expected float"),
                          ("home: h\ndata_root: d\nnew_data: {spans: 2}\n", "new_data.spans: unknown key"),
                          ("home: h\ndata_root: d\nschedule: 'every day'\n", "schedule: cron 'every day': expected 5 fields")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_trigger_config(path)


def test_trigger_config_can_come_from_several_files_without_overrides(tmp_path):
    (tmp_path / "triggers.yaml").write_text("home: h\ndata_root: d\n")
    (tmp_path / "kserve.yaml").write_text("kserve_rollout: {canary_percent: 5}\n")
    config = load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "kserve.yaml")
    assert config.kserve_rollout.canary_percent == 5 and config.kserve_rollout.name == "ct-predictor"
    (tmp_path / "again.yaml").write_text("data_root: elsewhere\n")
    with pytest.raises(ConfigError, match=r"again.yaml: 'data_root' is set in .*triggers.yaml already"):
        load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "again.yaml")
    # Pipeline parameters add up across files; the same parameter twice is refused.
    (tmp_path / "triggers.yaml").write_text("home: h\ndata_root: d\nparameters: {epochs: 3}\n")
    (tmp_path / "storage.yaml").write_text("parameters: {feature_tables: 's3://b/t'}\n")
    config = load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "storage.yaml")
    assert config.parameters == {"epochs": 3, "feature_tables": "s3://b/t"}
    (tmp_path / "storage.yaml").write_text("parameters: {epochs: 4}\n")
    with pytest.raises(ConfigError, match=r"storage.yaml: parameter 'epochs' is set in .*triggers.yaml already"):
        load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "storage.yaml")


def test_controller_deploys_what_a_finished_run_pushed(tmp_path, store, flight_months):
    controller, manual, _, launcher, clock = make_controller(tmp_path, store, flight_months)
    deployed = []

    class Canary:  # the KServe side is tested in test_rollout.py; here only the controller's calls
        def run_finished(self, run_id, now):
            deployed.append(run_id)
            return f"deployed {run_id}"

        def tick(self, now):
            return None

    controller.canary = Canary()
    manual.queue.append(Firing(MANUAL, "go", 0))
    controller.tick()
    launcher.exit_code = 0
    controller.tick()
    assert deployed == [launcher.started[0][0]]
    assert controller.events[-1].kind == "rollout" and controller.events[-1].reason == f"deployed {deployed[0]}"


def test_distribution_shift_can_ignore_calendar_features(tmp_path, production_trained_on_january, flights, flight_examples):
    config = ShiftTrigger(window_rows=1000, check_seconds=0, numeric_threshold=0.5, ignore_features=("month",))
    trigger = DistributionShiftTrigger(config, tmp_path / "log", flights, production_trained_on_january)
    february = flight_examples["2013-02"].head(1500)
    log_traffic(tmp_path / "log", february, flights.features)
    assert trigger.check(time.time()) == []  # only month moves that much from January to February
    noisy = DistributionShiftTrigger(ShiftTrigger(window_rows=1000, check_seconds=0, numeric_threshold=0.5), tmp_path / "log",
                                     flights, production_trained_on_january)
    [firing] = noisy.check(time.time())
    assert "month Jensen-Shannon" in firing.reason


def test_runs_get_the_metadata_connection_and_parameters(tmp_path):
    from pipelines.cli import _parser
    from pipelines.config import Home
    from pipelines.triggers.controller import LocalLauncher

    launcher = LocalLauncher(Home(tmp_path, "grpc://metadata-grpc-service:8080"), tmp_path / "data", {"epochs": 2})
    command = launcher.command("run-1", "manual", "because")
    args = _parser().parse_args(command[command.index("run"):])
    assert (args.metadata, args.run_id, args.trigger, args.reason, args.param) == (
        "grpc://metadata-grpc-service:8080", "run-1", "manual", "because", ["epochs=2"])
