"""The warm runner: steps forked from one host, run through kfp.local exactly as KFP runs them.

(No `from __future__ import annotations` here: kfp reads the components' annotations as types.)
"""

import json
import os
import signal
import socket
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
    run_connection,
    steps_in_host,
)


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
    """As `ct watch` does: one host, a connection handed to each run by an inherited descriptor."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    for _ in range(2):  # the second run uses the same host
        with host.connect() as handed:
            monkeypatch.setenv(HOST_CONNECTION_ENV, str(os.dup(handed.fileno())))
        with (
            run_connection(tmp_path / "unused.log", tmp_path / "handed-host.log") as connection,
            steps_in_host(connection),
            output_to(tmp_path / "steps.log"),
        ):
            task = describe_process()
        assert json.loads(Path(task.outputs["out"].path).read_text())["ppid"] == host.process.pid
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
