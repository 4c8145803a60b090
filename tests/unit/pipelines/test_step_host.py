"""The warm runner: steps forked from one host, run through kfp.local exactly as KFP runs them.

(No `from __future__ import annotations` here: kfp reads the components' annotations as types.)
"""

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Output

from components.common.errors import ConfigError
from components.ingest.component import ingest
from pipelines.local_run import output_to
from pipelines.step_host import (
    FEATURE_STORE,
    HEADER,
    HOST_CONNECTION_ENV,
    StepConnection,
    StepHost,
    executor_arguments,
    own_host,
    run_connection,
    steps_in_host,
)
from tests.support import PROJECT_ROOT
from tests.support.homes import appeared, gone


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def describe_process(out: Output[Artifact]):
    import json
    import os
    import sys

    print("a line on stdout")
    print("a line on stderr", file=sys.stderr)
    facts = {
        "ppid": os.getppid(),
        "marker": os.environ.get("CT_TEST_MARKER"),
        "runtime": os.environ.get("_KFP_RUNTIME"),
        "cwd": os.getcwd(),
        "tensorflow_preloaded": "tensorflow" in sys.modules,
        "feast_preloaded": "feast" in sys.modules,
        "logic_preloaded": sorted(name for name in sys.modules if name.endswith(".logic")),
    }
    with open(out.path, "w") as file:
        json.dump(facts, file)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail(message: str):
    raise ValueError(message)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with StepHost(tmp_path_factory.mktemp("host") / "host.log") as started:
        yield started


@pytest.fixture
def steps(host, tmp_path, monkeypatch):
    """kfp.local with each step forked from the host; a log file for the steps' output."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    with StepConnection(host.connect(), tmp_path / "host.log") as connection, steps_in_host(connection):
        yield tmp_path / "steps.log"


def test_a_step_runs_in_a_child_of_the_warm_host_with_the_callers_environment(host, steps, tmp_path, monkeypatch):
    monkeypatch.setenv("CT_TEST_MARKER", "set after the host started")
    with output_to(steps):
        task = describe_process()
    facts = json.loads(Path(task.outputs["out"].path).read_text())
    assert facts["ppid"] == host.process.pid
    assert facts["tensorflow_preloaded"]  # imported once by the host, not by the step
    assert not facts["feast_preloaded"]  # a run's own host: a run without a feature store does not wait for it
    every_step = sorted(
        f"components.{path.parent.name}.logic" for path in (PROJECT_ROOT / "components").glob("*/logic.py")
    )
    assert len(every_step) > 9 and facts["logic_preloaded"] == every_step  # nor its own logic
    assert facts["marker"] == "set after the host started"
    assert facts["runtime"] == "true"  # as KFP's command sets it
    assert facts["cwd"] == str(tmp_path)
    log = steps.read_text()
    assert "a line on stdout" in log and "a line on stderr" in log


def test_a_host_serving_many_runs_has_the_feature_store_loaded_too(tmp_path, monkeypatch):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    with StepHost(tmp_path / "host.log", also_import=FEATURE_STORE) as watching:  # as `ct watch` starts it
        with StepConnection(watching.connect(), tmp_path / "host.log") as connection, steps_in_host(connection):
            with output_to(tmp_path / "steps.log"):
                task = describe_process()
    facts = json.loads(Path(task.outputs["out"].path).read_text())
    assert facts["ppid"] == watching.process.pid and facts["feast_preloaded"]


def test_a_runs_own_host_holds_its_output_until_the_runs_log_is_named(tmp_path, monkeypatch):
    """`ct run` starts its host before the run is checked and its home made: what the host writes
    meanwhile lands in the run's log once it is named, and only once."""
    (tmp_path / "noisy_import.py").write_text(
        "import sys\nprint('on stdout at import')\nprint('on stderr', file=sys.stderr)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    log = tmp_path / "home" / "logs" / "run.log"
    with StepHost(None, also_import=("noisy_import",)) as started:
        started.write_output_to(log)
        with StepConnection(started.connect(), log) as connection, steps_in_host(connection):
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
            with output_to(tmp_path / "steps.log"):
                describe_process()  # the host has read the log's name before this step
        assert "on stdout at import" in log.read_text()  # moved there by the host itself
    written = log.read_text()
    assert written.count("on stdout at import") == 1 and written.count("on stderr") == 1


def test_a_host_that_dies_before_the_runs_log_is_named_leaves_its_last_words_there(tmp_path):
    log = tmp_path / "run.log"
    with pytest.raises(ConfigError, match=f"the step host died .*its output is in {log}"):
        with StepHost(None, also_import=("no_module_of_this_name",)) as doomed:
            doomed.process.wait()  # it cannot import what it was asked to
            doomed.write_output_to(log)
            doomed.connect()
    assert "ModuleNotFoundError: No module named 'no_module_of_this_name'" in log.read_text()


def test_a_host_is_given_its_log_once_and_only_when_started_without_one(tmp_path):
    with StepHost(tmp_path / "host.log") as logged, pytest.raises(ValueError, match="only once"):
        logged.write_output_to(tmp_path / "other.log")
    with StepHost(None) as held:
        held.write_output_to(tmp_path / "run.log")
        with pytest.raises(ValueError, match="only once"):
            held.write_output_to(tmp_path / "other.log")
    assert not (tmp_path / "other.log").exists()


def test_a_host_given_up_on_is_killed_not_waited_for():
    with pytest.raises(ConfigError, match="refused"), StepHost(None) as given_up:
        raise ConfigError("refused before the run's log was named")
    assert given_up.process.returncode == -signal.SIGKILL  # in its imports: not worth waiting for


def test_a_failing_step_fails_its_task_with_its_traceback_and_the_host_goes_on(host, steps):
    with output_to(steps), pytest.raises(RuntimeError, match="finished with status .*FAILURE"):
        fail(message="this step cannot go on")
    assert "ValueError: this step cannot go on" in steps.read_text()
    with output_to(steps):
        assert describe_process().outputs["out"]  # the next step runs


def test_the_executor_runs_the_components_own_source_and_arguments(tmp_path):
    spec = ingest.component_spec.implementation.container
    command = [*spec.command, *spec.args]
    source, arguments = executor_arguments(command, tmp_path / "ephemeral_component.py")
    assert "def ingest(" in source and source == command[3]
    assert arguments[:2] == ["--component_module_path", str(tmp_path / "ephemeral_component.py")]
    assert arguments[arguments.index("--function_to_execute") + 1] == "ingest"


def test_a_command_that_is_not_a_lightweight_components_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a KFP lightweight component's command"):
        executor_arguments(["python3", "-m", "kfp.dsl.executor_main", "--executor_input", "{}"], tmp_path / "m.py")


def test_a_run_handed_a_connection_uses_that_host_and_the_next_run_too(host, tmp_path, monkeypatch):
    """A run started with a connection to a host (HOST_CONNECTION_ENV, as a run the host forks is)
    uses that host, and starts none of its own; another run the same host after it."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    for _ in range(2):  # the second run uses the same host
        with host.connect() as handed:
            monkeypatch.setenv(HOST_CONNECTION_ENV, str(os.dup(handed.fileno())))
        with (
            own_host() as own,
            run_connection(own, tmp_path / "unused.log", tmp_path / "handed-host.log") as connection,
            steps_in_host(connection),
            output_to(tmp_path / "steps.log"),
        ):
            task = describe_process()
        assert own is None and json.loads(Path(task.outputs["out"].path).read_text())["ppid"] == host.process.pid
        assert HOST_CONNECTION_ENV not in os.environ  # the steps are not handed it
    assert not (tmp_path / "unused.log").exists()  # no host of the run's own was started


def test_a_dead_host_is_an_error_that_says_so(tmp_path):
    with (
        StepHost(tmp_path / "host.log") as doomed,
        StepConnection(doomed.connect(), tmp_path / "host.log") as connection,
    ):
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        with pytest.raises(ConfigError, match=f"the step host died .*its output is in {tmp_path / 'host.log'}"):
            connection.run(["sh", "-ec", "python3 -m kfp.dsl.executor_main", "source"])


def test_a_run_that_dies_in_the_middle_of_a_request_leaves_the_host_serving_the_next(host, tmp_path, monkeypatch):
    broken = host.connect()
    socket.send_fds(broken, [HEADER.pack(1000)], [1, 2])
    broken.sendall(b'{"command": ')  # and then the run dies
    broken.close()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    with StepConnection(host.connect(), tmp_path / "host.log") as connection, steps_in_host(connection):
        with output_to(tmp_path / "steps.log"):
            task = describe_process()
    assert json.loads(Path(task.outputs["out"].path).read_text())["ppid"] == host.process.pid


def _finished(run, seconds=60.0):
    deadline = time.monotonic() + seconds
    while (code := run.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return code


def _probe(tmp_path, exit, *go_file):
    return [sys.executable, "-m", "tests.support.hosted_probe", str(tmp_path / "facts.json"), exit, *map(str, go_file)]


def _open_files(pid):
    files = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            found = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed while listed
        files.add((found.st_dev, found.st_ino))
    return files


def test_a_command_started_in_the_host_is_forked_from_it_as_a_subprocess_handed_the_lock_would_run(
    host, tmp_path, monkeypatch
):
    """As `ct watch` starts `ct run`: the caller's environment, working folder and output, the
    home's lock handed over and held by the command alone (no step, not the host), its steps
    forked from the host too, its exit status back."""
    monkeypatch.setenv("CT_TEST_MARKER", "set after the host started")
    (tmp_path / ".ct.lock").touch()
    lock_file = [os.stat(tmp_path / ".ct.lock").st_dev, os.stat(tmp_path / ".ct.lock").st_ino]
    work = tmp_path / "work"
    work.mkdir()
    with open(tmp_path / ".ct.lock") as lock, open(tmp_path / "run.log", "a") as output:
        monkeypatch.chdir(work)
        run = host.start_run(_probe(tmp_path, "3"), output, lock.fileno())
    assert _finished(run) == 3 and run.poll() == 3
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["ppid"] == host.process.pid and facts["tensorflow_preloaded"]
    assert facts["argv"] == [str(tmp_path / "facts.json"), "3"] and facts["marker"] == "set after the host started"
    assert facts["cwd"] == str(work) and facts["connection_handed"]
    assert facts["lock_file"] == lock_file
    assert facts["step"]["ppid"] == host.process.pid  # the host forks the command's steps, not the command
    assert lock_file not in facts["step"]["open_files"]  # a step never holds the home
    assert tuple(lock_file) not in _open_files(host.process.pid)
    log = (tmp_path / "run.log").read_text()
    assert "a line on stdout" in log and "a line on stderr" in log


def test_a_command_that_raises_fails_with_its_traceback_and_the_host_goes_on(host, tmp_path):
    (tmp_path / ".ct.lock").touch()
    with open(tmp_path / ".ct.lock") as lock, open(tmp_path / "run.log", "a") as output:
        assert _finished(host.start_run(_probe(tmp_path, "raise"), output, lock.fileno())) == 1
        assert "ValueError: the probe was asked to fail" in (tmp_path / "run.log").read_text()
        assert _finished(host.start_run(_probe(tmp_path, "0"), output, lock.fileno())) == 0


def test_a_command_that_is_not_python_m_is_refused(host, tmp_path):
    with open(tmp_path / "run.log", "a") as output, pytest.raises(ConfigError, match="not a .* -m MODULE. command"):
        host.start_run(["ct", "run"], output, output.fileno())


def test_a_command_and_its_step_die_when_its_launcher_closes_it_and_the_host_goes_on(host, tmp_path):
    (tmp_path / ".ct.lock").touch()
    with open(tmp_path / ".ct.lock") as lock, open(tmp_path / "run.log", "a") as output:
        run = host.start_run(_probe(tmp_path, "hold"), output, lock.fileno())
        assert appeared(tmp_path / "facts.step"), "the command's step did not start"
        assert run.poll() is None
        run.close()
        assert run.poll() == -signal.SIGKILL
        assert gone(int((tmp_path / "facts.started").read_text())), "the command outlived its launcher's close"
        assert gone(int((tmp_path / "facts.step").read_text())), "the command's step outlived it"
        assert _finished(host.start_run(_probe(tmp_path, "0"), output, lock.fileno())) == 0


def test_a_command_whose_host_dies_fails_its_next_step_saying_so(tmp_path):
    """As a `ct run` started anew whose host died: the run goes on to fail its next step, and
    records why; its end names the host's log."""
    (tmp_path / ".ct.lock").touch()
    with (
        StepHost(tmp_path / "host.log") as doomed,
        open(tmp_path / ".ct.lock") as lock,
        open(tmp_path / "run.log", "a") as output,
    ):
        run = doomed.start_run(_probe(tmp_path, "0", tmp_path / "go"), output, lock.fileno())
        assert appeared(tmp_path / "facts.started"), "the command did not start"
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        assert run.poll() is None  # the command outlives its host
        (tmp_path / "go").touch()
        assert _finished(run) == 1
    log = (tmp_path / "run.log").read_text()
    assert "ConfigError: the step host died or closed the connection" in log  # its step
    assert f"the step host died while it ran this; its output is in {tmp_path / 'host.log'}" in log  # the end
