"""Crash consistency: a run killed mid-way is closed by the next holder of the home, its
leftovers removed, and its span read again by the new-data trigger."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from components.common import metadata
from components.common.errors import NotFoundError
from components.common.home import Home
from components.common.metadata import MetadataStore
from pipelines.home_lock import HomeLock, holding
from pipelines.recovery import launcher_alive, recover_home, this_launcher
from pipelines.triggers.sources import NewDataTrigger
from tests.support.homes import gone


def test_a_launcher_is_alive_while_its_process_runs():
    assert launcher_alive(this_launcher())
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not launcher_alive(f"{socket.gethostname()}:{finished.stdout.strip()}")


def test_another_hosts_launcher_cannot_be_told_dead():
    assert launcher_alive("another-host:1")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = set(), [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        found.update(frontier)
    return found


def test_a_killed_ct_run_is_closed_at_the_next_start_with_its_leftovers_and_its_span_is_new_again(tmp_path, data_root):
    """SIGKILL on `ct run` mid-step: its steps die with it, the home is free at once, and whoever
    takes it next decides the run as failed, removes its partial outputs and a staging folder."""
    home = Home(tmp_path / "home")
    command = [sys.executable, "-m", "pipelines.cli", "run", "--data-root", str(data_root), "--home", str(home.root)]
    run = subprocess.Popen([*command, "--run-id", "run-killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = _after_step(home, "run-killed", "ingest")
    steps = _descendants(run.pid)
    while not steps:  # between two steps: until the next one started
        steps = _descendants(run.pid)
    run.send_signal(signal.SIGKILL)
    run.wait()
    killed_at = time.monotonic()
    assert all(gone(pid) for pid in steps), "a step outlived the ct run that started it"
    staging = home.model_repository / "flight-delay" / ".staging-0123"
    staging.mkdir(parents=True)
    assert store.run("run-killed").decision == ""  # "running" in `ct runs`, until someone takes the home
    assert store.span_readers("flights", ["2013-01"]) == {"2013-01": {""}}

    with holding(HomeLock(home.lock_file, "ct run"), "run-next") as stale:
        recovery = recover_home(home, store)
    took = time.monotonic() - killed_at

    assert stale is not None and stale.run_id == "run-killed"
    assert recovery.closed_runs == ("run-killed",)
    killed = store.run("run-killed")
    assert killed.decision == metadata.FAILED and killed.properties["reasons"].startswith("interrupted")
    assert not (home.pipeline_root / "run-killed").exists() and not staging.exists()
    assert (home.logs / "run-killed.log").is_file()  # kept: it says how far the run got
    assert store.span_readers("flights", ["2013-01"]) == {"2013-01": {metadata.FAILED}}
    fired = NewDataTrigger(data_root, "flights", store, 1).check(time.time())
    assert [f.reason for f in fired] == ["new complete span 2013-01"]
    assert took < 15, f"recovering the home took {took:.1f} s after the kill"


def _after_step(home: Home, run_id: str, step: str, seconds: float = 120) -> MetadataStore:
    """The home's store, once `step` of the run has ended (its outputs are in the pipeline root)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if home.metadata_path.is_file():
            store = MetadataStore(home.metadata_connection)
            try:
                steps = store.run(run_id).steps
            except NotFoundError:
                steps = ()
            if any(s.step == step and s.end is not None for s in steps):
                return store
        time.sleep(0.2)
    raise AssertionError(f"{run_id}: {step} did not end within {seconds} s")
