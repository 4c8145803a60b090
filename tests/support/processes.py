"""Servers the tests start as processes of their own (Flink's job server, etcd, kube-apiserver)."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator

STOP_SECONDS = 20


@contextlib.contextmanager
def logged_process(log: Path, *command: object) -> Iterator[subprocess.Popen]:
    """Runs `command` with its output into `log`; stops it (SIGTERM, then SIGKILL) on leaving."""
    with open(log, "wb") as output:
        process = subprocess.Popen([str(c) for c in command], stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
