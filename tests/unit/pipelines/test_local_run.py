"""Local runs: who launched them, so a run killed mid-way is closed at the next start."""

import socket
import subprocess
import sys

import pytest

from components.common.errors import ConfigError
from components.common.home import Home
from pipelines.local_run import claim_home, launcher_alive, this_launcher
from pipelines.pods import container_home


def test_a_launcher_is_alive_while_its_process_runs():
    assert launcher_alive(this_launcher())
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not launcher_alive(f"{socket.gethostname()}:{finished.stdout.strip()}")


def test_another_hosts_launcher_cannot_be_told_dead():
    assert launcher_alive("another-host:1")


def test_a_home_is_run_with_the_runner_it_was_run_with(tmp_path):
    """Its records name paths as the steps saw them: here, or at /var/lib/ct in containers."""
    home = Home(tmp_path / "home")
    claim_home(home, home)
    claim_home(home, home)  # again the same: fine
    with pytest.raises(ConfigError, match=r"at .*/home; this runner's steps see it at /var/lib/ct: use the same"):
        claim_home(home, container_home(home))
    other = Home(tmp_path / "other")
    claim_home(other, container_home(other))
    with pytest.raises(ConfigError, match="recorded paths as their steps saw the home, at /var/lib/ct"):
        claim_home(other, other)
