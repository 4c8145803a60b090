"""`ct serve --workers N`: N serving processes answering on one port.

One process answers only as fast as one GIL lets its request threads run: past that its p99
climbs while a core is idle (README, "Prediction service"). As KServe's model server runs
several worker processes on one port, the supervisor binds the HTTP port (and claims the gRPC
one), then forks the workers before it has imported TensorFlow, which is not safe to fork once
it runs. Each worker imports, loads the models and accepts connections on the inherited socket;
the kernel hands each connection to one of them. gRPC's port is shared by `SO_REUSEPORT`; the
supervisor's claim keeps programs that do not set it from binding the port. The workers are
replicas sharing the home, as pods are: one token, logs per process, one canary verdict
(serving/canary/); their metrics add up (serving/metrics.py), and every limit of ServingConfig
is per worker: a worker at its connection limit leaves a new connection to a worker with room,
as their shared counts say (`SharedConnections`), and refuses it at once when none has.

The supervisor passes SIGTERM (and an interrupt) to every worker; each drains as one process
does (serving/app.py), and the supervisor exits when all have. A worker killed by a signal
after it began serving (the OOM killer, a crash in native code) is started again at once. One
killed before it served, or one that exits by itself (a setting it refuses, a home it cannot
open), stops the others, and the supervisor exits with a failure, as a single process would:
a worker that cannot start is not started again and again in a pod that still looks ready.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import mmap
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, NamedTuple

from components.common.process_lifetime import die_with_parent
from serving.config import LISTEN_BACKLOG, LOG_FORMAT
from serving.metrics import MetricsPeers

STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SharedConnections:
    """Every worker's count of open connections, in memory the supervisor mapped before it
    forked them, as one worker sees it: its own count to record, the others' to read. Each
    count is written by its worker alone; a reader may see one a connection old."""

    counts: memoryview  # of 8-byte integers, one a worker
    index: int  # this worker's

    NOT_ACCEPTING = 2**62  # the count of a worker not yet serving or ended: no room

    @classmethod
    def for_workers(cls, workers: int) -> list[SharedConnections]:
        """Every worker's view, each counted as not accepting until it serves."""
        counts = memoryview(mmap.mmap(-1, 8 * workers)).cast("q")  # anonymous and shared: kept across fork
        views = [cls(counts, index) for index in range(workers)]
        for view in views:
            view.record(cls.NOT_ACCEPTING)
        return views

    def record(self, count: int) -> None:
        self.counts[self.index] = count

    def room_elsewhere(self, limit: int) -> bool:
        """Whether another worker has fewer than `limit` connections open."""
        return any(count < limit for index, count in enumerate(self.counts) if index != self.index)


class WorkerSeat(NamedTuple):
    """What a worker is given: its number (from 1), its name (`worker-<number>-<start>`: never
    given twice, as a pid may be, so a worker started in a dead one's place does not overwrite
    the dead one's metrics), the listening HTTP socket the workers share, the folder where
    they publish their metrics, and the workers' connection counts."""

    number: int
    name: str
    listening: socket.socket
    metrics: Path
    connections: SharedConnections


def serve_workers(count: int, host: str, port: int, grpc_port: int, worker: Callable[[WorkerSeat], int]) -> int:
    """Runs `count` workers on host:port (and host:grpc_port, unless 0) until stopped; the exit status.

    Raises:
        OSError: a port is in use, or not an address of this host.
    """
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listening = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as error:
        # create_server's own message repeats the address: the system's words for the errno instead
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {os.strerror(error.errno)}") from None
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(listening.close)
        if grpc_port:
            claim = socket.socket(family, socket.SOCK_STREAM)
            cleanup.callback(claim.close)
            claim.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                claim.bind((host, grpc_port))  # bound, never listening: it takes no connections
            except OSError as error:
                raise OSError(error.errno, f"cannot listen for gRPC on {host}:{grpc_port}: {error.strerror}") from None
        metrics = Path(tempfile.mkdtemp(prefix="ct-serve-metrics-"))
        cleanup.callback(shutil.rmtree, metrics, ignore_errors=True)

        connections = SharedConnections.for_workers(count)

        def work(number: int, name: str) -> int:
            return worker(WorkerSeat(number, name, listening, metrics, connections[number - 1]))

        return _Supervisor(count, work, listening, metrics, connections).run()


class _Supervisor:
    def __init__(
        self,
        count: int,
        work: Callable[[int, str], int],
        listening: socket.socket,
        metrics: Path,
        connections: list[SharedConnections],
    ):
        self.count = count
        self.work = work
        self.listening = listening
        self.metrics = metrics
        self.connections = connections
        self.workers: dict[int, tuple[int, str]] = {}  # pid -> worker number and name
        self.started = 0
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        previous = {s: signal.getsignal(s) for s in STOPPING_SIGNALS}
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:  # an interrupt ignored (nohup) stays ignored
                signal.signal(signum, self._stop)
        try:
            for number in range(1, self.count + 1):
                if not self.stopping:
                    self._start(number)
            while self.workers:
                pid, wait_status = os.wait()
                if pid in self.workers:
                    self._ended(pid, self.workers.pop(pid), os.waitstatus_to_exitcode(wait_status))
        except BaseException:
            self._stop()
            for pid in list(self.workers):  # let them drain before the parent-death signal kills them
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.status

    def _ended(self, pid: int, worker: tuple[int, str], code: int) -> None:
        number, name = worker
        self.connections[number - 1].record(SharedConnections.NOT_ACCEPTING)  # until one serves in its place
        if self.stopping:
            self.status = self.status or max(code, 0)
        elif code < 0 and MetricsPeers.published(self.metrics, name):
            log.warning("worker %d (pid %d) was killed by signal %d; starting it again", number, pid, -code)
            self._start(number)
        else:
            how = f"was killed by signal {-code} before it served" if code < 0 else f"exited with status {code}"
            log.error("worker %d (pid %d) %s; stopping the others", number, pid, how)
            self.status = code if code > 0 else 1
            self._stop()

    def _stop(self, *_) -> None:
        self.stopping = True
        self.listening.close()  # with the workers' copies closed as they drain, new connections are refused
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _start(self, number: int) -> None:
        supervisor = os.getpid()
        self.started += 1
        name = f"worker-{number}-{self.started}"
        # A stop signal between the fork and the worker's own handlers would run the
        # supervisor's in the worker, or miss a worker not yet recorded: held until then.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING_SIGNALS)  # a stop can still reach the others
            raise
        if pid:
            self.workers[pid] = (number, name)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING_SIGNALS)
            return
        code = 1
        try:  # the worker: it never returns from here
            for signum in STOPPING_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING_SIGNALS)
            die_with_parent()  # a supervisor killed outright leaves no worker on the port
            if os.getppid() == supervisor:  # else it died before the request took effect
                code = self.work(number, name)
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # noqa: BLE001 (whatever it was, the worker says so and exits)
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
