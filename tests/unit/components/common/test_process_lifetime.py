"""A step started by `ct run` (through a shell, as kfp.local starts it) dies when `ct run` is killed."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.support.homes import gone

STEP = (
    "from components.common.process_lifetime import die_with_launcher; import time; "
    "die_with_launcher(); print('step', flush=True); time.sleep(120)"
)
LAUNCHER = f"""
import subprocess, sys, time
from components.common.process_lifetime import children_die_with_this_process
with children_die_with_this_process():
    # as kfp.local starts a step: through a shell that does not exec it
    shell = subprocess.Popen(
        ["sh", "-ec", 'x=1; "$0" -c "$1"', sys.executable, {STEP!r}], stdout=subprocess.PIPE, text=True
    )
assert shell.stdout.readline().strip() == "step"
print(shell.pid, flush=True)
time.sleep(120)
"""


def _step_pid(shell_pid: int) -> int:
    from pathlib import Path

    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == shell_pid:
                return int(stat.parent.name)
        except (OSError, ValueError):
            continue
    raise AssertionError("no step process under the shell")


def test_a_step_dies_with_the_ct_run_that_started_it():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True)
    shell = int(launcher.stdout.readline())
    step = _step_pid(shell)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    assert gone(step), "the step outlived its ct run"


def test_a_step_not_started_by_ct_run_is_left_alone(monkeypatch):
    from components.common.process_lifetime import LAUNCHER_PID_ENV, die_with_launcher

    monkeypatch.delenv(LAUNCHER_PID_ENV, raising=False)
    die_with_launcher()  # a pod on a cluster, a test: nothing to watch, and alive after
