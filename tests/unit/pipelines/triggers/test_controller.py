"""The controller: one run at a time, whatever fires; cooldown; no retraining on data trained on before."""

from __future__ import annotations

import dataclasses

import pytest

from components.common import metadata
from components.common.errors import HomeBusyError
from pipelines.home_lock import HomeLock, holding
from pipelines.triggers.config import TriggerConfig
from pipelines.triggers.controller import Controller
from pipelines.triggers.sources import (
    DISTRIBUTION_SHIFT,
    MANUAL,
    Firing,
)
from tests.support.homes import hold_home
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

    def close(self):
        pass


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


def test_a_trigger_waiting_on_data_trained_already_reads_the_window_again_only_once_it_changed(
    tmp_path, store, flight_months, monkeypatch
):
    from components.ingest.logic import fingerprint, latest_spans
    from pipelines.triggers import controller as controller_module

    controller, _, drift, launcher, _ = make_controller(tmp_path, store, flight_months)
    [path] = [p for s in latest_spans(tmp_path / "data", 1) for p in s.files]
    with store.step("run-0", "ingest", {}) as step:
        step.output(metadata.EXAMPLES, "/e", dataset="flights", split="train", fingerprint=fingerprint([path]))
    store.update_run("run-0", decision=metadata.PUSHED)
    read = []
    monkeypatch.setattr(controller_module, "fingerprint", lambda files: read.append(files) or fingerprint(files))
    drift.queue.append(Firing(DISTRIBUTION_SHIFT, "temp drifted", 0))
    for _ in range(3):
        controller.tick()
    assert launcher.started == [] and len(read) == 1  # three polls, one read
    flight_months["2013-01"].head(100).to_parquet(path, index=False)  # the span rewritten in place
    controller.tick()
    assert len(read) == 2 and len(launcher.started) == 1


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


def test_the_controller_skips_its_checks_while_another_process_holds_the_home(tmp_path, store, flight_months):
    """Two controllers, or a controller and a `ct run`, on one home: only the holder starts a run."""
    controller, manual, _, launcher, _ = make_controller(tmp_path, store, flight_months)
    holder = hold_home(tmp_path / ".ct.lock", "run-by-hand")
    try:
        manual.queue.append(Firing(MANUAL, "go", 0))
        controller.tick()
        assert launcher.started == [] and manual.queue  # not even checked: the request waits
    finally:
        holder.kill()
        holder.wait()
    controller.tick()
    assert len(launcher.started) == 1


def test_the_controller_holds_the_home_while_its_run_goes_on(tmp_path, store, flight_months):
    controller, manual, _, launcher, _ = make_controller(tmp_path, store, flight_months)
    controller.tick()
    with holding(HomeLock(tmp_path / ".ct.lock", "ct run"), "between-checks"):
        pass  # free between checks
    manual.queue.append(Firing(MANUAL, "go", 0))
    controller.tick()
    [(run_id, _, _)] = launcher.started
    with pytest.raises(HomeBusyError, match=f"`ct watch` for run {run_id}"):
        HomeLock(tmp_path / ".ct.lock", "ct run").acquire("run-by-hand")
    launcher.exit_code = 0
    controller.tick()
    with holding(HomeLock(tmp_path / ".ct.lock", "ct run"), "run-by-hand") as stale:
        assert stale is None


def test_a_controller_taking_the_home_from_a_dead_holder_closes_its_run_and_trains_its_span(
    tmp_path, store, flight_months
):
    """A killed controller (or `ct run`): its run stays undecided until the next holder closes it;
    then its span counts as new again."""
    from pipelines.triggers.sources import NewDataTrigger

    write_month(tmp_path / "data", "2013-01", flight_months["2013-01"])
    holder = hold_home(tmp_path / ".ct.lock", "run-killed")
    store.update_run("run-killed", launcher=f"host:{holder.pid}")
    with store.step("run-killed", "ingest", {}) as step:
        step.output(metadata.EXAMPLES, "/e", dataset="flights", split="train", fingerprint="f", spans="2013-01")
    holder.kill()
    holder.wait()
    config = TriggerConfig(home=tmp_path, data_root=tmp_path / "data", cooldown_seconds=0)
    launcher = FakeLauncher()
    new_data = NewDataTrigger(tmp_path / "data", "flights", store, 1)
    controller = Controller(config, [new_data], launcher, store, clock=lambda: 1000.0)
    controller.tick()
    assert store.run("run-killed").decision == metadata.FAILED
    assert [reason for _, _, reason in launcher.started] == ["new data: new complete span 2013-01"]


def test_retention_runs_after_a_successful_run_when_set(tmp_path, store, flight_months):
    from components.common.home import Home
    from pipelines.retention import RetentionSettings
    from tests.support.homes import record_run

    home = Home(tmp_path)
    for number in range(3):
        record_run(home, store, f"run-old-{number}")
    controller, manual, _, launcher, _ = make_controller(tmp_path, store, flight_months)
    controller.config = dataclasses.replace(controller.config, retention=RetentionSettings(keep_runs=1))
    manual.queue.append(Firing(MANUAL, "go", 0))
    controller.tick()
    [(run_id, _, _)] = launcher.started
    record_run(home, store, run_id)
    launcher.exit_code = 0
    controller.tick()
    assert sorted(p.name for p in home.pipeline_root.iterdir()) == [run_id]
    assert controller.events[-1].kind == "collected" and "removed 6 paths" in controller.events[-1].reason
