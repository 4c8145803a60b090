"""The warm runner: each step a fresh process forked from a host that imported the stack once.

kfp.local's SubprocessRunner starts a new interpreter per step, and most of a small run's
time is each step importing TensorFlow and TFDV again (3-4 s a step). Here a host process
imports them once, before anything of TensorFlow runs (no graph, no session, none of its
thread pools: those do not survive a fork; the threads the imports do start, OpenBLAS's and
Arrow's allocator's, re-create themselves after one), and forks a child per step. The
child runs exactly what the step's KFP command runs: the component's source written to a
file, then KFP's executor (`python -m kfp.dsl.executor_main --component_module_path FILE
--executor_input … --function_to_execute …`), with the environment, working folder,
stdout and stderr of the kfp.local task that asked for it. What a step does is the
component code a pod runs; only the interpreter start and the imports are shared. Steps
run one at a time, in kfp.local's order.

The host dies with the process that started it (`PR_SET_PDEATHSIG`), and a step's child with
its run (its run's end of the connection closing): killing `ct run` leaves nothing behind.

`ct watch` keeps one host for all its runs (started when it starts, about 600 MiB resident
while it waits; started anew when the code changed) and forks each `ct run` from it too
(`StepHost.start_run`: `python -m pipelines.cli run …` as a child of the host, with the
launcher's output file, home lock, environment and working folder), so a run starts without
an interpreter's start or imports (about 2 s) and forks its steps at once; a `ct run` on its
own starts a host of its own. Such a run dies with its launcher (the launcher's end of its
connection closing), not with the host: a host that dies under it fails the run's next step,
and the run records why, as a `ct run` started anew would. What the host fixed at its start
stays fixed for the runs and steps it forks: the modules it imported, `sys.path`, and the
environment the interpreter and TensorFlow read at start (PYTHONPATH, TF_CPP_MIN_LOG_LEVEL,
CUDA_VISIBLE_DEVICES).

A step's peak memory (ML Metadata's `peak_memory_mib`) is its resident size, and so counts the
pages of the host's libraries it touches, shared with the host and the other steps (about
320 MiB for a step that loads nothing more).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import os
import pkgutil
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import IO, Callable, Iterator

from components.common.errors import ConfigError
from components.common.process_lifetime import LAUNCHER_PID_ENV, die_with_parent
from pipelines.config import each_step_run_by
from pipelines.home_lock import LOCK_FD_ENV

# What the steps import, loaded once by the host: the executor, the data and ML stack, and
# then each step's own logic (`step_logic`).
PRELOADED = (
    "kfp.dsl.executor_main",
    "pandas",
    "pyarrow.parquet",
    "ml_metadata",
    "tensorflow",
    "tensorflow_data_validation",
    "components.common.metadata",
    "components.common.model_io",
)
# Also loaded by a host that serves many runs (`ct watch`'s): the feature store's libraries
# (about 2.3 s), which only a dataset with a feature store uses (its materialize step). A
# run's own host leaves them out, so a run without a feature store does not wait for them.
FEATURE_STORE = ("feast", "feast.infra.offline_stores.dask", "feast.infra.online_stores.sqlite")
# Also loaded, first, by a host that runs `ct run` itself (`start_run`): what the command imports,
# and the pipeline, whose definition kfp builds at import: its resource setters each scan every
# loaded module (`inspect.stack()`), 1 s in all before TensorFlow and the feature store are
# loaded, 5 s after. Not `pipelines.cli` itself: the child runs it as `__main__`, as
# `python -m` does, and a copy already imported would be a second one.
RUNS = ("pipelines.local_run", "pipelines.continuous_training")
EXECUTOR_MODULE = "kfp.dsl.executor_main"
HEADER = struct.Struct("!Q")  # the length of the request that follows
STREAMS = 2  # a request carries the task's stdout and stderr
STEPS, RUN = b"c", b"r"  # what a connection handed to the host is for: a run's steps, or a run to start
LOG = b"l"  # handed to the host with a file: its own output goes there from now on
RUN_DESCRIPTORS = 3  # a run to start comes with its connection, its output and the home's lock
# Set for a `ct run` whose steps a host forks (`start_run`): the descriptor of its connection to it.
HOST_CONNECTION_ENV = "CT_STEP_HOST_FD"
STEP_HOST_LOG = "step-host.log"  # a launcher's host's output, in the home's logs


class StepHost:
    """A running host. Its steps come through connections (`connect`), or with the run it forks
    (`start_run`): a run's connection is served to its end, then the next one's; one run's
    steps at a time, in order."""

    def __init__(self, log_path: Path | None, also_import: tuple[str, ...] = ()) -> None:
        """Starts the host; it imports the stack while the caller goes on.

        Args:
            log_path: Where the host's own output goes (its imports' messages); steps write
                where their request says. None: held in a temporary file until
                `write_output_to` names the log (a run's own host starts before the run is
                checked and its home made), and dropped if it never does.
            also_import: Modules to import before PRELOADED (RUNS, FEATURE_STORE), in order.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._held = tempfile.TemporaryFile() if log_path is None else None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") if log_path else contextlib.nullcontext(self._held) as output, theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipelines.step_host", str(theirs.fileno()), *also_import],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env={"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ},  # TensorFlow reads it once, at import
                preexec_fn=die_with_parent,
            )
        self._handoff = ours
        self.log_path = log_path

    def write_output_to(self, log_path: Path) -> None:
        """The host's own output goes to `log_path` from now on, after what it held there
        (`StepHost(None)`; once). The host moves it when it next reads its handoff, once its
        imports are done; should it die before, `close` moves what it wrote."""
        if self._held is None or self.log_path is not None:
            raise ValueError("only a host started without its log is given one, and only once")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            self.log_path = log_path
            with contextlib.suppress(OSError):  # a host already gone: `close` moves its output
                socket.send_fds(self._handoff, [LOG], [log.fileno()])

    def connect(self) -> socket.socket:
        """A new connection to the host, for this process's steps (`StepConnection`); a socket
        pair, so no socket path another user could reach.

        Raises:
            ConfigError: the host is gone (its output is in `log_path`, or will be once it is
                closed: `close`).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs:
                socket.send_fds(self._handoff, [STEPS], [theirs.fileno()])
        except OSError:
            ours.close()
            raise ConfigError(
                f"the step host died before the run's first step; its output is in {self.log_path}"
            ) from None
        return ours

    def start_run(self, command: list[str], output: IO, lock_fd: int) -> HostedRun:
        """Starts `command` (`python -m MODULE ARGS…`, as `ct watch` starts `ct run`) in a child
        forked from the host, and serves its steps; the host serves nothing else until it ends.

        The child gets this process's environment and working folder as they are now, `output`
        as its stdout and stderr, and `lock_fd` (this process's descriptor of the home's lock)
        as the lock it holds (LOCK_FD_ENV), as a subprocess handed them would. It dies when this
        process dies or closes the run (`HostedRun.close`). Unlike a new interpreter's, its
        `sys.path` and interpreter settings are the host's, and it ends without running `atexit`
        handlers (a step's `os._exit`).

        Raises:
            ConfigError: the command is not of that form.
        """
        module, arguments = module_arguments(command)
        request = json.dumps(
            {"module": module, "arguments": arguments, "environment": dict(os.environ), "cwd": os.getcwd()}
        ).encode()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs:
                socket.send_fds(self._handoff, [RUN], [theirs.fileno(), output.fileno(), lock_fd])
            ours.sendall(HEADER.pack(len(request)) + request)
        except OSError:
            ours.close()
            raise
        return HostedRun(ours, Path(output.name), self.log_path)

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Stops the host (it exits once its connections are closed) and waits for it; moves
        to its log what a host that died before it was named one still held (`StepHost(None)`)."""
        self._handoff.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._held is not None:
            with self._held:  # what a host that died before moving it still holds (nothing once moved)
                self._held.seek(0)
                held = self._held.read()
                if held and self.log_path is not None:
                    with open(self.log_path, "ab") as log:
                        log.write(held)

    def __enter__(self) -> StepHost:
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is not None:  # the caller gave up: the host's imports are not worth waiting for
            self.process.kill()
        self.close()


class HostedRun:
    """A command the host forked (`StepHost.start_run`); `poll` is `subprocess.Popen.poll`'s."""

    def __init__(self, connection: socket.socket, output: Path, host_log: Path) -> None:
        self._socket = connection
        self._output = output
        self._host_log = host_log
        self._code: int | None = None

    def poll(self) -> int | None:
        """None while the command runs, then its exit code (negative: the signal that killed it),
        or 1 when the host died (said at the end of the command's output)."""
        if self._code is None and _readable(self._socket):
            with self._socket.makefile("r") as replies:
                reply = replies.readline()
            self._socket.close()
            if not reply:
                with open(self._output, "a") as output:
                    print(f"the step host died while it ran this; its output is in {self._host_log}", file=output)
            self._code = int(reply) if reply else 1
        return self._code

    def close(self) -> None:
        """Ends the command if it still runs (it dies when this end of its connection closes);
        `poll` then says it was killed."""
        if self._code is None:
            self._socket.close()
            self._code = -signal.SIGKILL


def _readable(connection: socket.socket) -> bool:
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class StepConnection:
    """One run's connection to a host; `run` forks one step from it."""

    def __init__(self, connection: socket.socket, host_log: Path) -> None:
        """
        Args:
            connection: This end of a connection to the host (`StepHost.connect`, or the one
                `StepHost.start_run` set up for the run it forked).
            host_log: Where the host's own output goes, named when the host fails.
        """
        self._socket = connection
        self._replies = connection.makefile("r")
        self._host_log = host_log

    def run(self, command: list[str]) -> int:
        """Runs one step's KFP command in a child forked from the host; returns its exit code.

        The child gets this process's environment, working folder, stdout and stderr as they
        are now, as a subprocess started here would.

        Raises:
            ConfigError: the host died (its own output is in `host_log`).
        """
        request = json.dumps({"command": command, "environment": dict(os.environ), "cwd": os.getcwd()}).encode()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            socket.send_fds(self._socket, [HEADER.pack(len(request))], [1, 2])
            self._socket.sendall(request)
            reply = self._replies.readline()
        except OSError:
            reply = ""
        if not reply:
            raise ConfigError(f"the step host died or closed the connection; its output is in {self._host_log}")
        return int(reply)

    def close(self) -> None:
        self._replies.close()
        self._socket.close()

    def __enter__(self) -> StepConnection:
        return self

    def __exit__(self, *_) -> None:
        self.close()


@contextlib.contextmanager
def own_host() -> Iterator[StepHost | None]:
    """A run's own host, started now and stopped when the run ends: it imports the stack while
    the run is checked and set up, its output held until the run's log is named
    (`run_connection`). None when the host that forked the run serves its steps
    (HOST_CONNECTION_ENV)."""
    if os.environ.get(HOST_CONNECTION_ENV, "").isdigit():
        yield None
        return
    with StepHost(None) as host:
        yield host


@contextlib.contextmanager
def run_connection(host: StepHost | None, log_path: Path, handed_host_log: Path) -> Iterator[StepConnection]:
    """This run's connection: to its own `host` (`own_host`), whose output goes to `log_path` from
    now on; or, with none, the one the host that forked this run set up (HOST_CONNECTION_ENV,
    `StepHost.start_run`: `ct watch` keeps one host for all its runs, its output in
    `handed_host_log`)."""
    if host is None:
        handed = os.environ.pop(HOST_CONNECTION_ENV)
        with StepConnection(socket.socket(fileno=int(handed)), handed_host_log) as connection:
            yield connection
        return
    host.write_output_to(log_path)
    with StepConnection(host.connect(), log_path) as connection:
        yield connection


@contextlib.contextmanager
def steps_in_host(host: StepConnection) -> Iterator[None]:
    """kfp.local's SubprocessRunner, each step forked from the warm host instead of started anew.

    Raises:
        ConfigError: another kfp than this was written against.
    """
    from kfp.local import subprocess_task_handler

    def forked(image: str, command: list[str]) -> int:
        return host.run(command)

    with each_step_run_by(subprocess_task_handler, "SubprocessTaskHandler", forked, "the warm runner"):
        yield


def executor_arguments(command: list[str], module_path: Path) -> tuple[str, list[str]]:
    """The component's source and the executor's arguments, from a lightweight component's command.

    KFP (kfp/dsl/component_factory.py) runs such a step as `sh -ec SCRIPT SOURCE ARGS…`, where
    SCRIPT writes SOURCE ($0) to a file and runs `python3 -m kfp.dsl.executor_main
    --component_module_path FILE "$@"`.

    Raises:
        ConfigError: the command is not of that form.
    """
    if len(command) < 4 or command[:2] != ["sh", "-ec"] or f"-m {EXECUTOR_MODULE}" not in command[2]:
        raise ConfigError(f"not a KFP lightweight component's command: {command[:3]}")
    return command[3], ["--component_module_path", str(module_path), *command[4:]]


def module_arguments(command: list[str]) -> tuple[str, list[str]]:
    """The module and its arguments, from a `python -m MODULE ARGS…` command of this interpreter.

    Raises:
        ConfigError: the command is not of that form.
    """
    if len(command) < 3 or command[0] != sys.executable or command[1] != "-m":
        raise ConfigError(f"not a `{sys.executable} -m MODULE` command: {command[:3]}")
    return command[2], command[3:]


def step_logic() -> list[str]:
    """Each step's logic module (components/<step>/logic.py). Loaded once by the host, as the
    stack is: a step forked without them imports them anew every time (universal_pathlib and
    fsspec's entry points among them), about 0.1 s a step."""
    import components

    return [
        f"components.{package.name}.logic"
        for package in pkgutil.iter_modules(components.__path__)
        if package.ispkg and importlib.util.find_spec(f"components.{package.name}.logic")
    ]


def _serve(connections: socket.socket, also_import: list[str]) -> None:
    """The host's loop: each connection handed over, served to its end; then the next. A log
    handed over (LOG) is where the host's own output goes from then on."""
    for name in (*also_import, *PRELOADED, *step_logic()):  # the caller's first: RUNS is quicker before the rest
        importlib.import_module(name)
    while True:
        try:
            kind, descriptors, _, _ = socket.recv_fds(connections, 1, RUN_DESCRIPTORS)
        except ConnectionResetError:
            return
        if not descriptors:
            return  # the owner closed its socket: no more runs
        for descriptor in descriptors:
            os.set_inheritable(descriptor, False)  # received descriptors are; the lock must reach no exec
        if kind == LOG:
            _move_output_to(descriptors[0])
            continue
        with socket.socket(fileno=descriptors[0]) as connection:
            if kind == RUN:
                _serve_run(connection, descriptors[1:], connections)
            else:
                _serve_steps(connection, (connections,))


def _move_output_to(log: int) -> None:
    """The host's output, held in a temporary file so far, moved to the end of `log`, where it
    goes from now on."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.lseek(1, 0, os.SEEK_SET)
    while held := os.read(1, 1 << 16):
        os.write(log, held)
    os.ftruncate(1, 0)  # moved: the launcher's `close` finds nothing left to move
    os.lseek(1, 0, os.SEEK_SET)  # (killed between the copy and this, the launcher moves it again)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def _serve_run(launcher: socket.socket, descriptors: list[int], connections: socket.socket) -> None:
    """Forks the command a launcher asked for, serves its steps, then answers its exit code."""
    output, lock = descriptors
    try:
        header = _receive(launcher, HEADER.size)
        request = json.loads(_receive(launcher, HEADER.unpack(header)[0]))
    except (EOFError, OSError, ValueError) as error:  # the launcher died mid-request: the host goes on
        print(f"step host: a run's request broke off: {error}", file=sys.stderr, flush=True)
        os.close(output)
        os.close(lock)
        return
    steps_there, steps_here = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    run = functools.partial(_run_command, request, output, lock, steps_there)
    # It dies when the launcher exits, is killed or closes the run.
    child = _forked(launcher, run, (connections, steps_here))
    os.close(output)
    os.close(lock)  # no step the host forks may hold the home
    steps_there.close()
    with steps_here:
        # To the command's end, when its end of the connection closes; its steps keep none of the
        # host's sockets, so the launcher sees the host's end close when the host dies.
        _serve_steps(steps_here, (connections, launcher))
    _answer_exit(launcher, child)


def _serve_steps(connection: socket.socket, host_sockets: tuple[socket.socket, ...]) -> None:
    """One connection's requests, one at a time: one forked child each (which closes the host's
    other sockets, `host_sockets`), its exit code answered."""
    while True:
        try:
            header, descriptors, _, _ = socket.recv_fds(connection, HEADER.size, STREAMS)
        except ConnectionResetError:
            return
        if not header:
            return  # the run is over
        try:
            request = json.loads(_receive(connection, HEADER.unpack(header)[0]))
        except (EOFError, struct.error, ValueError) as error:  # the run died mid-request: the host goes on
            print(f"step host: a request broke off: {error}", file=sys.stderr, flush=True)
            for descriptor in descriptors:
                os.close(descriptor)
            return
        step = functools.partial(_run_step, request, descriptors)
        child = _forked(connection, step, host_sockets)  # dies with its run
        for descriptor in descriptors:
            os.close(descriptor)
        if not _answer_exit(connection, child):
            return  # the run went away while its step ran


def _forked(watched: socket.socket, work: Callable[[], int], host_sockets: tuple[socket.socket, ...]) -> int:
    """Forks a child that closes the host's `host_sockets`, then exits with what `work` returns,
    or dies when the other end of `watched` closes; its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            for host_socket in host_sockets:
                host_socket.close()
            _die_when_closed(watched)
            code = work()
        finally:
            os._exit(code)  # never back into the host's loop
    return child


def _answer_exit(connection: socket.socket, child: int) -> bool:
    """Waits for the child and sends its exit status; False when the other end went away."""
    _, status = os.waitpid(child, 0)
    try:
        connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except OSError:
        return False
    return True


def _receive(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the runner closed the socket in the middle of a request")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _die_when_closed(connection: socket.socket) -> None:
    """In a forked child: dies when the other end of the connection closes (nothing else is sent
    on it while the child runs): a step with its run, a run with its launcher, as a process
    dies with the one that started it (components/common/process_lifetime.py)."""

    poller = select.poll()
    poller.register(connection.fileno(), select.POLLRDHUP)  # and POLLHUP, always reported
    if poller.poll(0):
        os.kill(os.getpid(), signal.SIGKILL)  # gone already: before the child does anything

    def watch() -> None:
        poller.poll()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-when-closed", daemon=True).start()


def _run_command(request: dict, output: int, lock: int, steps: socket.socket) -> int:
    """In the forked child: `python -m MODULE ARGS…` as the launcher asked, holding the lock it
    handed over and forking its steps from the host; its exit code."""
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    environment = {**request["environment"], LOCK_FD_ENV: str(lock), HOST_CONNECTION_ENV: str(steps.detach())}

    def main() -> None:
        sys.argv = [request["module"], *request["arguments"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)

    return _as_python_would(main, environment, request["cwd"])


def _run_step(request: dict, descriptors: list[int]) -> int:
    """In the forked child: the step's KFP executor, as `python -m` would run it; its exit code."""
    for target, descriptor in enumerate(descriptors, start=1):
        os.dup2(descriptor, target)
        os.close(descriptor)
    environment = {**request["environment"], "_KFP_RUNTIME": "true"}
    # A run the host forked (`start_run`) is the step's sibling, not its ancestor: for every run
    # alike, the connection says when the run is gone (_die_when_closed), not its pid.
    environment.pop(LAUNCHER_PID_ENV, None)
    return _as_python_would(lambda: _execute(request["command"]), environment, request["cwd"])


def _as_python_would(main: Callable[[], object], environment: dict[str, str], cwd: str) -> int:
    """In a forked child: runs `main` in that environment and working folder; its exit code as
    `python` would give it (SystemExit's; 1 and the traceback on stderr for any other exception)."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(environment)
        os.chdir(cwd)
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        code = code if 0 <= code <= 255 else 1  # as an exit status: 256 must not read as success
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _execute(command: list[str]) -> None:
    """The KFP executor of a lightweight component's command."""
    with tempfile.TemporaryDirectory() as folder:
        module_path = Path(folder) / "ephemeral_component.py"
        source, arguments = executor_arguments(command, module_path)
        module_path.write_text(source)
        sys.argv = [EXECUTOR_MODULE, *arguments]
        from kfp.dsl import executor_main

        executor_main.executor_main()


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])), sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # tearing the preloaded stack down takes a second and saves nothing
