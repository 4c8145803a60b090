"""The controller: one run at a time, whatever fires; cooldown; no retraining on data trained on before."""

from __future__ import annotations

from components.common import metadata
from pipelines.triggers.config import TriggerConfig
from pipelines.triggers.controller import Controller
from pipelines.triggers.sources import (
    DISTRIBUTION_SHIFT,
    MANUAL,
    Firing,
)
from tests.support.spans import write_month


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
        step.output(
            metadata.EXAMPLES, "/e", dataset="flights", split="train", fingerprint=fingerprint(files), spans="2013-01"
        )
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
        step.output(
            metadata.EXAMPLES, "/e2", dataset="flights", split="train", fingerprint=fingerprint(files), spans="2013-02"
        )
    store.update_run("run-1", decision=metadata.PUSHED)
    manual.queue.append(Firing(MANUAL, "retrain anyway", 0, force=True))
    controller.tick()
    assert len(launcher.started) == 2


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


def test_runs_get_the_metadata_connection_and_parameters(tmp_path):
    from components.common.home import Home
    from pipelines.cli import _parser
    from pipelines.triggers.controller import LocalLauncher

    launcher = LocalLauncher(Home(tmp_path, "grpc://metadata-grpc-service:8080"), tmp_path / "data", {"epochs": 2})
    command = launcher.command("run-1", "manual", "because")
    args = _parser().parse_args(command[command.index("run") :])
    assert (args.metadata, args.run_id, args.trigger, args.reason, args.param) == (
        "grpc://metadata-grpc-service:8080",
        "run-1",
        "manual",
        "because",
        ["epochs=2"],
    )


def test_a_run_that_ended_before_deciding_is_recorded_as_failed(tmp_path, store, flight_months):
    """A killed `ct run`, or a KFP run whose pod was evicted: nothing stays "running"."""
    controller, manual, _, launcher, _ = make_controller(tmp_path, store, flight_months)
    manual.queue.append(Firing(MANUAL, "first", 0))
    controller.tick()
    [(killed, _, _)] = launcher.started
    store.update_run(killed, trigger=MANUAL)  # its first step started, then the run was killed
    launcher.exit_code = -9
    controller.tick()
    run = store.run(killed)
    assert (run.decision, run.properties["reasons"]) == (
        metadata.FAILED,
        "the run ended (exit code -9) before it decided",
    )


def test_a_decided_run_keeps_its_decision_whatever_its_exit_code(tmp_path, store, flight_months):
    controller, manual, _, launcher, _ = make_controller(tmp_path, store, flight_months)
    manual.queue.append(Firing(MANUAL, "first", 0))
    controller.tick()
    [(stopped, _, _)] = launcher.started
    store.update_run(stopped, decision=metadata.STOPPED_BY_DATA, reasons="feature 'carrier': ...")
    launcher.exit_code = 2
    controller.tick()
    assert store.run(stopped).decision == metadata.STOPPED_BY_DATA
