"""Processes that die with the process that started them.

A run's work happens in child processes: `ct run` (through kfp.local) starts a process per
step. Killed with SIGKILL, a parent cannot stop its children, and an orphaned step would go on
writing the home, or push a model, after the run was closed as interrupted and the home's lock
released. So a process asks the kernel to kill it when the one that started it dies
(`PR_SET_PDEATHSIG`, Linux: the warm runner's step host, a calibration's statistics workers), and
each step kfp.local starts watches its `ct run` and kills itself when it exits (a pidfd, Linux
5.3+). Elsewhere nothing is done. (The warm runner's children, forked from its host, watch their
connection instead: pipelines/step_host.py.)

The kernel watches the *thread* that started the child: start such children from a thread that
lives as long as the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

# Set by `ct run` for its steps' processes: the pid they are to die with.
LAUNCHER_PID_ENV = "CT_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Asks the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere).

    Safe between fork and exec (a `preexec_fn`): one system call, no allocation of note.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def die_with_launcher() -> None:
    """What a step does first: dies with the `ct run` that started it, if one did.

    kfp.local starts a step through a shell, so the kernel's parent-death signal would watch the
    shell, which outlives `ct run`: the step watches `ct run` itself (a pidfd, polled by a daemon
    thread) and kills itself when it exits. A step whose launcher is already gone dies at once.
    """
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if not launcher.isdigit():
        return  # not started by `ct run` (a pod on a cluster, a test)
    pid = int(launcher)
    if pid not in _ancestors():
        _kill_this_process()
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        _kill_this_process()
    threading.Thread(target=_die_when_exits, args=(handle,), name="die-with-launcher", daemon=True).start()


def _die_when_exits(handle: int) -> None:
    poller = select.poll()
    poller.register(handle, select.POLLIN)  # a pidfd is readable once its process has exited
    poller.poll()
    _kill_this_process()


def _kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _ancestors() -> list[int]:
    """This process's parent, its parent, and so on up to init (from /proc)."""
    found, pid = [], os.getppid()
    while pid > 1:
        found.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])  # after the command name: state, ppid
    return found


@contextlib.contextmanager
def children_die_with_this_process() -> Iterator[None]:
    """While open, the steps this process starts die with it (see `die_with_launcher`)."""
    previous = os.environ.get(LAUNCHER_PID_ENV)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LAUNCHER_PID_ENV, None)
        else:
            os.environ[LAUNCHER_PID_ENV] = previous
