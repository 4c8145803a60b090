"""Finalize: a run ends decided, whatever happened to its steps."""

from components.common import metadata
from components.finalize.logic import UNDECIDED, finalize_run


def test_a_decided_run_keeps_its_decision_and_reports_it(store):
    store.update_run("run-1", decision=metadata.PUSHED, version=3, reasons="blessed: all 5 checks passed")
    assert finalize_run(store, "run-1") == "pushed version 3: blessed: all 5 checks passed"
    assert store.run("run-1").decision == metadata.PUSHED


def test_a_run_killed_before_deciding_is_decided_as_failed(store):
    killed_step = store.step("run-2", "train", {})
    killed_step.__enter__()  # its pod was evicted mid-step: the step never ends (kept referenced)
    assert finalize_run(store, "run-2") == f"failed: {UNDECIDED}"
    run = store.run("run-2")
    assert (run.decision, run.properties["reasons"]) == (metadata.FAILED, UNDECIDED) and killed_step is not None


def test_a_run_that_recorded_nothing_is_decided_as_failed(store):
    assert finalize_run(store, "run-3").startswith("failed: ")
    assert store.run("run-3").decision == metadata.FAILED
