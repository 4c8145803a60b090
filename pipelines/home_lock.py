"""One run at a time per home: an exclusive lock on `HOME/.ct.lock`, held for a run's whole duration.

Whoever runs the pipeline on a home (`ct run`, `ct watch` while its run goes on, `ct gc`) holds
`flock(LOCK_EX)` on the home's lock file. The kernel releases it when the holder dies, however
it dies, so a crashed holder never keeps the home. A second taker fails at once with
`HomeBusyError`, which names the holder: the file says who holds it (host, pid, run id, since).

A holder that releases the lock empties the file; a taker that finds it not empty knows the
previous holder died holding it, and recovers what it left (pipelines/recovery.py).

The controller takes the lock before it checks its triggers and keeps it while the run it
started goes on: the `ct run` it starts (forked from its step host, pipelines/step_host.py) is
handed the lock's open file (its descriptor passed over a socket, named by `CT_HOME_LOCK_FD`),
which is the same lock, not a second one.

On NFS, Linux emulates `flock` with whole-file byte-range locks that the server arbitrates, so
exclusion holds across machines mounting the volume, provided the mount supports locking (NFSv4,
or NFSv3 with lockd) and is not mounted with `local_lock=flock` or `local_lock=all` (which would
make the lock local to each machine). A holder process that dies releases the lock at once; a
holder *machine* that dies (or loses the network) keeps the home busy until the server lets its
lease lapse (NFSv4: the server's lease time, 90 s by default), then the lock is free again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from components.common.errors import HomeBusyError

# The descriptor of a lock the launcher (the controller) holds for this run, handed to the run.
LOCK_FD_ENV = "CT_HOME_LOCK_FD"


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a home: the command, its process, and the run it holds it for (if any)."""

    command: str
    host: str
    pid: int
    run_id: str
    since: float

    def describe(self) -> str:
        run = f" for run {self.run_id}" if self.run_id else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"`{self.command}`{run} (host {self.host}, pid {self.pid}, since {since})"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file names; None for an empty or unreadable record (a holder mid-write)."""
        try:
            raw = json.loads(text)
            return cls(str(raw["command"]), str(raw["host"]), int(raw["pid"]), str(raw["run_id"]), float(raw["since"]))
        except (ValueError, KeyError, TypeError):
            return None


class HomeLock:
    """The lock of one home; `acquire` takes it or raises `HomeBusyError` naming who holds it."""

    def __init__(self, path: Path, command: str):
        self.path = path
        self.command = command
        self._fd: int | None = None
        self._inherited = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.path}: not held")
        return self._fd

    def acquire(self, run_id: str = "") -> Holder | None:
        """Takes the lock without waiting, and records this process as its holder.

        Args:
            run_id: The run it is taken for ("" when for none yet: a controller's check, `ct gc`).

        Returns:
            The holder recorded by a previous holder that died holding the lock (its run is to be
            recovered), or None.

        Raises:
            HomeBusyError: another process holds the home.
        """
        if self._fd is not None:
            return None
        fd = self._inherited_fd()
        if fd is not None:  # the launcher took the lock for this run: it stays the recorded holder
            self._fd, self._inherited = fd, True
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = Holder.parse(_read(fd))
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise HomeBusyError(
                f"{self.path.parent}: the home is in use by "
                + (holder.describe() if holder else "another process (it has not said which yet)")
                + "; one run at a time per home: wait for it, or use another --home"
            ) from None
        self._fd = fd
        stale = Holder.parse(_read(fd))
        self.record(run_id)
        return stale

    def record(self, run_id: str) -> None:
        """Records this process as the holder, for the run `run_id` (the lock must be held).

        A run's record is flushed to the volume, so other machines sharing it can read who holds it.
        """
        if self._inherited:
            return
        fd = self.fileno()
        record = Holder(self.command, socket.gethostname(), os.getpid(), run_id, time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dataclasses.asdict(record)).encode(), 0)
        if run_id:
            os.fsync(fd)

    def release(self) -> None:
        """Empties the record and releases the lock (a handed lock is only closed: the launcher holds it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if not self._inherited:
                os.ftruncate(fd, 0)
                os.fsync(fd)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._inherited = False

    def _inherited_fd(self) -> int | None:
        """The descriptor the launcher handed over, if it is this home's lock file and its lock is ours."""
        given = os.environ.pop(LOCK_FD_ENV, "")
        if not given.isdigit():
            return None
        fd = int(given)
        try:
            mine, theirs = os.fstat(fd), os.stat(self.path)
        except OSError:
            return None
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None
        try:
            # Locking an open file description that holds the lock again succeeds; any other holder refuses.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None
        os.set_inheritable(fd, False)
        return fd


def read_holder(path: Path) -> Holder | None:
    """Who holds a home's lock, as its file says (None: free, or a holder mid-write). Never call this
    in a process that holds the lock: on NFS, closing another descriptor of the file could drop it."""
    try:
        with open(path) as handle:
            return Holder.parse(handle.read())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def holding(lock: HomeLock, run_id: str) -> Iterator[Holder | None]:
    """Holds the lock while open; yields what `acquire` returns (a dead holder's record, or None)."""
    stale = lock.acquire(run_id)
    try:
        yield stale
    finally:
        lock.release()


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace")
