"""The pipeline's steps as containers of the project's image, each given what a KFP pod gets.

A KFP v2 launcher hands a step only its own input artifacts (downloaded into an empty
scratch folder), a folder for its outputs, and what the pod spec mounts: here the home
volume at HOME_MOUNT, as every step mounts the `ct-home` claim on a cluster. kfp.local's
DockerRunner instead mounts the whole pipeline root, earlier runs included, which would hide
a step that reads another run's artifact. So each step runs here with exactly:

- its own input artifacts, read-only, at their paths;
- its own task folder (outputs and the executor's output file), writable;
- the home folder at HOME_MOUNT (the pipeline root inside it hidden) and the data root at
  DATA_MOUNT, read-only;
- a read-only root file system, a private /tmp, no network, a non-root user.

A step that reads anything else fails as it would in a pod.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from components.common.errors import ConfigError
from components.common.home import CLUSTER_HOME, HOME_MOUNT, Home
from pipelines.config import each_step_run_by

DATA_MOUNT = f"{HOME_MOUNT}/data"
IMAGE_USER = (10001, 10001)  # the image's user (images/Dockerfile)


def container_home(home: Home) -> Home:
    """The home as every step's container mounts it (its metadata connection too, if a file)."""
    return dataclasses.replace(CLUSTER_HOME, metadata=home.metadata)


@dataclasses.dataclass(frozen=True)
class PodVolumes:
    """What every step's container mounts besides its own artifacts (host paths)."""

    home: Path
    data_root: Path
    pipeline_root: Path

    def binds(self, task_root: Path, inputs: list[Path]) -> dict[str, dict[str, str]]:
        """A step's mounts: its task folder, its inputs (read-only), the home, the data root (read-only)."""
        return {
            str(task_root): {"bind": str(task_root), "mode": "rw"},
            **{str(path): {"bind": str(path), "mode": "ro"} for path in inputs},
            str(self.home): {"bind": HOME_MOUNT, "mode": "rw"},
            str(self.data_root): {"bind": DATA_MOUNT, "mode": "ro"},
        }

    def scratch(self) -> dict[str, str]:
        """Private, empty folders: /tmp, and the pipeline root where it sits inside the home
        (hidden, as KFP's artifact store is from a pod)."""
        hidden = {"/tmp": ""}
        if self.pipeline_root.is_relative_to(self.home):
            hidden[f"{HOME_MOUNT}/{self.pipeline_root.relative_to(self.home)}"] = ""
        return hidden


def executor_artifacts(command: list[str]) -> tuple[Path, list[Path]]:
    """The task folder (outputs) and the input artifacts' paths, from the step's executor input."""
    executor_input = json.loads(command[command.index("--executor_input") + 1])
    task_root = Path(executor_input["outputs"]["outputFile"]).parent
    inputs = [
        Path(artifact["uri"])
        for group in executor_input["inputs"].get("artifacts", {}).values()
        for artifact in group["artifacts"]
    ]
    return task_root, inputs


def docker_client(image: str):
    """The Docker engine, once it is known to have the image.

    Raises:
        ConfigError: no engine answers, or the image is not built.
    """
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env()
        client.images.get(image)
    except ImageNotFound:
        raise ConfigError(f"image {image} is not here: build it with `bash images/build.sh --local`") from None
    except DockerException as error:
        raise ConfigError(f"no Docker engine to run the steps in: {error}") from None
    return client


def run_step_container(client, image: str, command: list[str], volumes: PodVolumes) -> int:
    """Runs one step in its own container; streams its output; returns its exit code."""
    task_root, inputs = executor_artifacts(command)
    task_root.mkdir(parents=True, exist_ok=True)  # or Docker makes it, as root
    container = client.containers.run(
        image,
        entrypoint=command,
        user=container_user(task_root),
        volumes=volumes.binds(task_root, inputs),
        tmpfs=volumes.scratch(),
        read_only=True,
        network_mode="none",
        detach=True,
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


def container_user(*writable: Path) -> str:
    """The host user, so what a step writes stays theirs; as root, the image's own non-root
    user, given the folders it writes (never root inside the container)."""
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    for folder in writable:
        for root, folders, files in os.walk(folder):
            for name in (root, *(os.path.join(root, f) for f in folders + files)):
                os.lchown(name, *IMAGE_USER)
    return f"{IMAGE_USER[0]}:{IMAGE_USER[1]}"


def give_steps_the_home(home: Home) -> None:
    """As root, the image's user gets what the steps write in the home: the folder itself and
    ML Metadata's file (not all inside), the model repository, statistics and feature repository."""
    if os.getuid() != 0:
        return
    for path in (home.root, home.metadata_path):
        if path.exists():
            os.lchown(path, *IMAGE_USER)
    container_user(*(path for path in (home.model_repository, home.statistics, home.feature_repo) if path.exists()))


def check_reachable(home: Home, parameters: Mapping[str, Any]) -> None:
    """Steps in containers here have no network: what they use must be on the home volume.

    Raises:
        ConfigError: naming the setting that points elsewhere.
    """
    if home.metadata:
        raise ConfigError(
            f"--metadata {home.metadata}: steps in containers have no network here; use the home's own ML Metadata file"
        )
    if parameters.get("feature_redis"):
        raise ConfigError(
            f"--param feature_redis={parameters['feature_redis']}: steps in containers have no "
            "network here; the online store is SQLite in the home"
        )
    if "://" in str(parameters.get("feature_tables", "")):
        raise ConfigError(
            f"--param feature_tables={parameters['feature_tables']}: steps in containers have no "
            "network here; keep the feature tables under the data root"
        )


@contextlib.contextmanager
def steps_in_containers(client, volumes: PodVolumes) -> Iterator[None]:
    """kfp.local's DockerRunner, each step given only what a pod gets (see the module doc).

    Args:
        client: The engine (docker_client), checked before anything of the run was recorded;
            closed when the steps are done.

    Raises:
        ConfigError: another kfp than this was written against.
    """
    from kfp.local import docker_task_handler

    def in_a_container(image: str, command: list[str]) -> int:
        return run_step_container(client, image, command, volumes)

    try:
        with each_step_run_by(docker_task_handler, "DockerTaskHandler", in_a_container, "the container runner"):
            give_steps_the_home(Home(volumes.home))
            yield
    finally:
        client.close()
