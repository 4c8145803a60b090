"""What a step's container is given (the containers themselves: tests/integration/test_pods.py)."""

from pathlib import Path

import pytest

from components.common.errors import ConfigError
from components.common.home import HOME_MOUNT, Home
from pipelines.pods import DATA_MOUNT, PodVolumes, check_reachable, container_home, executor_artifacts


def test_a_step_mounts_its_task_folder_its_inputs_read_only_the_home_and_the_data_read_only(tmp_path):
    volumes = PodVolumes(tmp_path / "home", tmp_path / "data", tmp_path / "home" / "pipeline_root")
    task, model = tmp_path / "home" / "pipeline_root" / "run" / "evaluate", tmp_path / "run" / "train" / "model"
    assert volumes.binds(task, [model]) == {
        str(task): {"bind": str(task), "mode": "rw"},
        str(model): {"bind": str(model), "mode": "ro"},
        str(tmp_path / "home"): {"bind": HOME_MOUNT, "mode": "rw"},
        str(tmp_path / "data"): {"bind": DATA_MOUNT, "mode": "ro"},
    }
    assert volumes.scratch() == {"/tmp": "", f"{HOME_MOUNT}/pipeline_root": ""}  # earlier runs hidden


def test_the_artifacts_are_read_from_the_executor_input():
    command = [
        "sh",
        "-c",
        "...",
        "--executor_input",
        '{"inputs": {"artifacts": {"model": {"artifacts": [{"uri": "/root/run/train/model"}]}}},'
        ' "outputs": {"outputFile": "/root/run/evaluate/executor_output.json"}}',
        "--function_to_execute",
        "evaluate",
    ]
    assert executor_artifacts(command) == (Path("/root/run/evaluate"), [Path("/root/run/train/model")])


def test_the_home_as_steps_in_containers_see_it():
    home = container_home(Home(Path("/anywhere")))
    assert (home.metadata_connection, str(home.model_repository)) == (
        f"sqlite:///{HOME_MOUNT}/metadata.sqlite",
        f"{HOME_MOUNT}/models",
    )


@pytest.mark.parametrize(
    "metadata, parameters, named",
    [
        ("grpc://metadata:8080", {}, "--metadata grpc://metadata:8080"),
        ("", {"feature_redis": "redis:6379"}, "--param feature_redis=redis:6379"),
        ("", {"feature_tables": "s3://bucket/tables"}, "--param feature_tables=s3://bucket/tables"),
    ],
)
def test_what_a_container_without_network_cannot_reach_is_refused_by_name(metadata, parameters, named):
    with pytest.raises(ConfigError, match=f"{named}: steps in containers have no network here"):
        check_reachable(Home(Path("h"), metadata), parameters)
    check_reachable(Home(Path("h")), {"feature_tables": "/data/features"})
