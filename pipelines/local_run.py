"""Runs the pipeline on this machine through kfp.local, with all state under one home folder."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from components.common.datasets import DEFAULT_DATASET, load_dataset
from components.common.errors import ConfigError, NotFoundError
from components.common.home import Home, check_run_id
from components.common.metadata import FAILED, NOT_BLESSED, PUSHED, STOPPED_BY_DATA, MetadataStore, RunRecord
from components.common.process_lifetime import children_die_with_this_process
from components.common.spans import Location, complete_spans
from components.image import PIPELINE_IMAGE
from pipelines.compile import COMPILED_SPEC
from pipelines.config import check_parameter_values
from pipelines.home_lock import HomeLock, holding
from pipelines.pods import (
    DATA_MOUNT,
    PodVolumes,
    check_reachable,
    container_home,
    docker_client,
    steps_in_containers,
)
from pipelines.recovery import recover_home, this_launcher
from pipelines.step_host import STEP_HOST_LOG, StepConnection, StepHost, own_host, run_connection, steps_in_host

# Set by `ct run` itself, or (home_volume) meaningful on a cluster only.
WIRED_PARAMETERS = (
    "data_root",
    "metadata_connection",
    "model_repository",
    "feature_repo",
    "statistics_root",
    "run_id",
    "trigger",
    "reason",
    "home_volume",
)
KFP_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}

WARM, SUBPROCESS, DOCKER = "warm", "subprocess", "docker"
RUNNERS = (WARM, SUBPROCESS, DOCKER)

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_STOPPED_BY_DATA = 2


def pipeline_parameters(include_wired: bool = False) -> dict[str, tuple[type, Any]]:
    """The pipeline's parameters: name -> (type, default), read from the compiled spec that ships
    with the code (the one a cluster runs; a test keeps it fresh), not compiled anew.

    Args:
        include_wired: Also those `ct run` sets itself (data root, metadata, repository, run id,
            trigger, reason), which a cluster run is given by whoever submits it.
    """
    spec = compiled_spec()
    return {
        name: (
            KFP_TYPES[p["parameterType"]],
            KFP_TYPES[p["parameterType"]](p["defaultValue"]) if "defaultValue" in p else None,
        )
        for name, p in spec["root"]["inputDefinitions"]["parameters"].items()
        if include_wired or name not in WIRED_PARAMETERS
    }


@functools.lru_cache(maxsize=1)
def compiled_spec() -> dict[str, Any]:
    """The pipeline spec's document of pipelines/compiled/continuous_training.yaml."""
    import yaml

    with COMPILED_SPEC.open() as spec:
        return next(yaml.load_all(spec, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def new_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def exit_code(run: RunRecord) -> int:
    """0 when the run completed (pushed or not blessed), 2 when bad data stopped it, 1 otherwise."""
    if run.decision in (PUSHED, NOT_BLESSED):
        return EXIT_COMPLETED
    if run.decision == STOPPED_BY_DATA:
        return EXIT_STOPPED_BY_DATA
    return EXIT_FAILED


def run_locally(
    home: Home,
    data_root: Location,
    parameters: Mapping[str, Any],
    trigger: str = "manual",
    reason: str = "",
    log_path: Path | None = None,
    run_id: str | None = None,
    runner: str = WARM,
) -> RunRecord:
    """Runs the pipeline once through kfp.local and returns the run as ML Metadata recorded it.

    Args:
        home: Where the metadata store, pipeline root and model repository live.
        data_root: The folder of spans, or an s3:// URI (not with `docker`: the containers
            here have no network).
        parameters: Pipeline parameters to override (already type-checked).
        trigger, reason: Why this run happens; recorded with the run.
        log_path: Where kfp.local's and the steps' output goes (default: `home/logs/<run id>.log`).
        run_id: The run's id (default: a new one).
        runner: `warm` runs each step as a process of this environment forked from a host
            that imported the stack once (fast, pipelines/step_host.py); `subprocess` starts
            each step's process anew, as kfp.local's SubprocessRunner does; `docker` runs
            each in its own container of the project's image, given only what a KFP pod gets
            (pipelines/pods.py): the home at /var/lib/ct, as on a cluster.

    Raises:
        ConfigError: an unknown dataset or runner, a parameter out of its range, an unsafe run
            id, a home that cannot be made, or no image or Docker engine for `docker`.
        DataError: the data root does not exist (checked before anything is recorded).
    """
    if runner not in RUNNERS:
        raise ConfigError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    if run_id is not None:
        check_run_id(run_id)
    # The warm runner's host imports the stack (3-4 s) while the run is checked and set up.
    with _quiet_tensorflow(), own_host() if runner == WARM else contextlib.nullcontext() as host:
        load_dataset(str(parameters.get("dataset", DEFAULT_DATASET)))
        check_parameter_values(parameters, {name: default for name, (_, default) in pipeline_parameters().items()})
        if runner == DOCKER and not isinstance(data_root, Path):
            raise ConfigError(f"--data-root {data_root}: the docker runner's steps have no network; use a folder")
        complete_spans(data_root)
        # The home and the data root as the steps see them: here, or mounted as a cluster mounts
        # the claim. For containers, settings they cannot reach, no engine or no image of this
        # code are refused before anything of the run is recorded.
        if runner == DOCKER:
            check_reachable(home, parameters)
            client = docker_client(PIPELINE_IMAGE)
            seen_home, seen_data = container_home(home), Path(DATA_MOUNT)
        else:
            seen_home = Home(home.root.resolve(), home.metadata)
            seen_data = data_root.resolve() if isinstance(data_root, Path) else data_root
        claim_home(home, seen_home)
        home.create()
        run_id = run_id or new_run_id()
        log_path = log_path or home.logs / f"{run_id}.log"
        store = MetadataStore(home.metadata_connection)
        # One run at a time per home, held until the run ends; a run that died holding it is
        # closed as failed and its leftovers removed before this one records anything.
        with holding(HomeLock(home.lock_file, "ct run"), run_id):
            with _step_connection(runner, host, log_path, home) as connection:
                recover_home(home, store)
                store.update_run(run_id, launcher=this_launcher())
                arguments = {
                    "data_root": str(seen_data),
                    "metadata_connection": seen_home.metadata_connection,
                    "model_repository": str(seen_home.model_repository),
                    "feature_repo": str(seen_home.feature_repo),
                    "statistics_root": str(seen_home.statistics),
                    "run_id": run_id,
                    "trigger": trigger,
                    "reason": reason,
                    **parameters,
                }
                from kfp import local

                from pipelines.continuous_training import continuous_training  # compiled here, as the host imports

                # Each run's outputs in a folder of its own: what retention and recovery remove is one folder.
                pipeline_root = str((home.pipeline_root / run_id).resolve())
                if runner == DOCKER:
                    local.init(runner=local.DockerRunner(), pipeline_root=pipeline_root, raise_on_error=False)
                    steps = steps_in_containers(
                        client, PodVolumes(home.root.resolve(), data_root.resolve(), home.pipeline_root.resolve())
                    )
                else:
                    local.init(
                        runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root, raise_on_error=False
                    )
                    steps = steps_in_host(connection) if connection else contextlib.nullcontext()
                with output_to(log_path), warnings.catch_warnings(), steps:
                    # kfp.local warns that the steps' image is not this interpreter; running the image's
                    # Python environment here (installed from the same constraints) is the point.
                    warnings.filterwarnings(
                        "ignore", message="You may be attemping to run a task that uses custom", category=RuntimeWarning
                    )
                    with children_die_with_this_process():
                        continuous_training(**arguments)
    try:
        return store.run(run_id)
    except NotFoundError:
        raise ConfigError(f"the run recorded nothing in ML Metadata; see {log_path}") from None


@contextlib.contextmanager
def _step_connection(runner: str, host: StepHost | None, log_path: Path, home: Home) -> Iterator[StepConnection | None]:
    """The warm runner's connection to its host (its own `host`, or the one that forked the run:
    pipelines/step_host.py); none for the others."""
    if runner != WARM:
        yield None
        return
    with run_connection(host, log_path, home.logs / STEP_HOST_LOG) as connection:
        yield connection


SEEN_AS = ".steps-see-home-at"  # where a home's runs recorded their paths


def claim_home(home: Home, seen: Home) -> None:
    """A home keeps the paths its steps saw (in ML Metadata, Feast's config): a home run with
    steps in containers (/var/lib/ct) is not run with steps here, nor the other way round.

    Raises:
        ConfigError: the home was run with the other runner.
    """
    marker = home.root / SEEN_AS
    seen_at = str(seen.root)
    if marker.is_file() and marker.read_text() != seen_at:
        raise ConfigError(
            f"{home.root}: its runs recorded paths as their steps saw the home, at {marker.read_text()}; "
            f"this runner's steps see it at {seen_at}: use the same --runner, or a new --home"
        )
    home.create()
    marker.write_text(seen_at)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Sends this process's and its children's stdout and stderr to a file (file descriptors, not just sys.*)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _quiet_tensorflow() -> Iterator[None]:
    """TensorFlow's C++ start-up chatter drowns the steps' own logs."""
    previous = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = previous


def describe(run: RunRecord) -> str:
    """The run as people read it: id, steps with status and duration, decision with reasons."""
    lines = [
        f"run {run.run_id} (dataset {run.properties.get('dataset', '?')}, trigger {run.properties.get('trigger', '?')}"
        + (f": {run.properties['reason']}" if run.properties.get("reason") else "")
        + ")"
    ]
    for step in run.steps:
        seconds = f"{step.seconds:6.1f} s" if step.seconds is not None else "      -"
        memory = f"  peak {step.peak_memory_mib:6.0f} MiB" if step.peak_memory_mib is not None else ""
        lines.append(f"  {step.step:<15} {step.status:<9} {seconds}{memory}")
    total = (run.end - run.start) if run.start is not None and run.end is not None else None
    if total is not None:
        lines.append(
            f"  {'wall':<15} {'':<9} {total:6.1f} s  (steps' work above; the rest is process start and imports)"
        )
    decision = run.decision or FAILED
    lines.append(f"decision: {decision}")
    for reason in str(run.properties.get("reasons", "")).split("; "):
        if reason:
            lines.append(f"  - {reason}")
    return "\n".join(lines)
