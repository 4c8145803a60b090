"""One run at a time per home: the lock, who holds it, and what a holder that died leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from components.common.errors import HomeBusyError
from pipelines.home_lock import HomeLock, holding, read_holder
from tests.support.homes import gone, hold_home


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


def test_a_child_handed_the_lock_holds_the_same_lock_and_dies_with_its_parent(tmp_path):
    """The controller's `ct run`: it takes the lock it inherits; a killed controller takes its run with it."""
    parent_script = f"""
import sys, time
from pathlib import Path
from pipelines.home_lock import HomeLock
from pipelines.triggers.controller import start_holding_home
lock = HomeLock(Path({str(tmp_path / ".ct.lock")!r}), "ct watch")
lock.acquire()
lock.record("run-child")
child = start_holding_home([sys.executable, "-c", {CHILD_SCRIPT!r}, {str(tmp_path / ".ct.lock")!r}], lock)
print(child.pid, flush=True)
time.sleep(120)
"""
    parent = subprocess.Popen([sys.executable, "-c", parent_script], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert _wait_for(tmp_path / "child-holds"), "the child could not take the lock its parent handed it"
    with pytest.raises(HomeBusyError, match="for run run-child"):
        HomeLock(tmp_path / ".ct.lock", "ct run").acquire("run-other")
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert gone(child_pid), "the child outlived the controller that started it"
    assert HomeLock(tmp_path / ".ct.lock", "ct run").acquire("run-next").run_id == "run-child"


CHILD_SCRIPT = """
import sys, time
from pathlib import Path
from pipelines.home_lock import HomeLock
HomeLock(Path(sys.argv[1]), "ct run").acquire("run-child")
Path(sys.argv[1]).with_name("child-holds").write_text("yes")
time.sleep(120)
"""


def _wait_for(path, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.05)
    return path.exists()


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
