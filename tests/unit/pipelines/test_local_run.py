"""Local runs: who launched them, so a run killed mid-way is closed at the next start."""

import socket
import subprocess
import sys

from pipelines.local_run import launcher_alive, this_launcher


def test_a_launcher_is_alive_while_its_process_runs():
    assert launcher_alive(this_launcher())
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not launcher_alive(f"{socket.gethostname()}:{finished.stdout.strip()}")


def test_another_hosts_launcher_cannot_be_told_dead():
    assert launcher_alive("another-host:1")
