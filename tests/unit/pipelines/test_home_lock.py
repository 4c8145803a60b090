"""One run at a time per home: the lock, who holds it, and what a holder that died leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from components.common.errors import HomeBusyError
from pipelines.home_lock import HomeLock, holding, read_holder
from tests.support.homes import appeared, gone, hold_home


def test_a_second_taker_is_refused_at_once_naming_the_holder(tmp_path):
    holder = hold_home(tmp_path / ".ct.lock", "run-a")
    try:
        with pytest.raises(
            HomeBusyError, match=rf"in use by `ct run` for run run-a \(host .*, pid {holder.pid}, since"
        ):
            HomeLock(tmp_path / ".ct.lock", "ct run").acquire("run-b")
        assert read_holder(tmp_path / ".ct.lock").run_id == "run-a"
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_frees_the_home_and_its_record_tells_the_next_taker(tmp_path):
    holder = hold_home(tmp_path / ".ct.lock", "run-killed")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = HomeLock(tmp_path / ".ct.lock", "ct run")
    stale = lock.acquire("run-next")
    assert (stale.run_id, stale.pid) == ("run-killed", holder.pid)
    lock.release()
    assert read_holder(tmp_path / ".ct.lock") is None  # a clean release empties the record
    with holding(HomeLock(tmp_path / ".ct.lock", "ct run"), "run-after") as previous:
        assert previous is None  # released cleanly: nothing to recover


def test_a_run_forked_from_the_host_holds_the_lock_it_was_handed_and_dies_with_the_controller(tmp_path):
    """The controller's `ct run`, forked from its step host: it takes the lock the controller hands
    it; a killed controller takes its host and run with it, and the next taker is told of the run."""
    lock_file = tmp_path / ".ct.lock"
    controller_script = f"""
import sys, time
from pathlib import Path
from pipelines.home_lock import HomeLock
from pipelines.step_host import StepHost
lock = HomeLock(Path({str(lock_file)!r}), "ct watch")
lock.acquire()
lock.record("run-child")
host = StepHost(Path({str(tmp_path / "host.log")!r}))
print(host.process.pid, flush=True)
with open({str(tmp_path / "run.log")!r}, "a") as output:
    run = host.start_run([sys.executable, "-m", "tests.support.home_holder", {str(lock_file)!r}], output, lock.fileno())
time.sleep(120)
"""
    controller = subprocess.Popen([sys.executable, "-c", controller_script], stdout=subprocess.PIPE, text=True)
    host_pid = int(controller.stdout.readline())
    assert appeared(tmp_path / "child-holds"), "the run could not take the lock it was handed"
    run_pid = int((tmp_path / "child-holds").read_text())
    with pytest.raises(HomeBusyError, match="for run run-child"):
        HomeLock(lock_file, "ct run").acquire("run-other")
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    assert gone(run_pid), "the run outlived the controller that started it"
    assert gone(host_pid), "the step host outlived the controller that started it"
    assert HomeLock(lock_file, "ct run").acquire("run-next").run_id == "run-child"


def test_a_descriptor_that_is_not_the_homes_lock_is_not_taken_as_handed_over(tmp_path, monkeypatch):
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)
    monkeypatch.setenv("CT_HOME_LOCK_FD", str(other))
    holder = hold_home(tmp_path / ".ct.lock", "run-a")
    try:
        with pytest.raises(HomeBusyError):
            HomeLock(tmp_path / ".ct.lock", "ct run").acquire("run-b")
    finally:
        holder.kill()
        holder.wait()
        os.close(other)
