"""What a step in a container of the project's image may read: its own inputs, the home volume,
nothing else, as in a KFP pod. And the service and the controller run from the same image.

(No `from __future__ import annotations` here: kfp reads the components' annotations as types.)"""

import http.client
import json
import subprocess
import time

import pytest
from kfp import dsl, local

from components.common.errors import ConfigError
from components.common.home import HOME_MOUNT, Home
from components.common.version import code_version
from components.image import PIPELINE_IMAGE
from pipelines.demo.serving_process import free_port
from pipelines.pods import PodVolumes, container_user, docker_client, steps_in_containers
from tests.support.containers import require_the_image

pytestmark = pytest.mark.pipeline


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def read_text(path: str) -> str:
    from pathlib import Path

    return Path(path).read_text()


@dsl.pipeline(name="read-a-file")
def read_a_file(path: str) -> str:
    return read_text(path=path).output


@pytest.fixture
def pod_home(tmp_path):
    require_the_image()
    home = Home(tmp_path / "home").create()
    (tmp_path / "data").mkdir()
    local.init(runner=local.DockerRunner(), pipeline_root=str(home.pipeline_root), raise_on_error=True)
    volumes = PodVolumes(home.root, tmp_path / "data", home.pipeline_root)
    return home, lambda: steps_in_containers(docker_client(PIPELINE_IMAGE), volumes)


def test_a_step_reads_what_the_home_volume_holds(pod_home):
    home, pods = pod_home
    (home.root / "baseline.txt").write_text("kept on the volume")
    with pods():
        assert read_a_file(path=f"{HOME_MOUNT}/baseline.txt").output == "kept on the volume"


@pytest.mark.parametrize("where", ["its path here", "the home mount"])
def test_a_step_cannot_read_an_earlier_runs_artifact(pod_home, where):
    home, pods = pod_home
    earlier = home.pipeline_root / "continuous-training-earlier" / "statistics" / "train_statistics"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier run's artifact")
    path = (
        str(earlier)
        if where == "its path here"
        else f"{HOME_MOUNT}/pipeline_root/{earlier.relative_to(home.pipeline_root)}"
    )
    with pods(), pytest.raises(RuntimeError, match="read-a-file"):
        read_a_file(path=path)


def test_no_image_of_this_code_is_refused_before_anything_is_recorded(tmp_path):
    require_the_image()
    with pytest.raises(
        ConfigError, match=r"ct-pipeline:absent is not here: build it with `bash images/build.sh --local`"
    ):
        docker_client("ghcr.io/continuous-training/ct-pipeline:absent")


def docker(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *arguments], capture_output=True, text=True, check=check, timeout=300)


def test_the_image_knows_the_version_it_is_tagged_with():
    # The statistics step names its Beam workers' image from inside the image: by this version.
    require_the_image()
    python = ["run", "--rm", "--network", "none", "--entrypoint", "python3", PIPELINE_IMAGE, "-c"]
    inside = docker(*python, "from components.common.version import code_version; print(code_version())")
    assert inside.stdout.strip() == code_version()


def get(port: int, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_the_service_and_the_controller_run_from_the_image(tmp_path):
    require_the_image()
    home = Home(tmp_path / "home").create()
    (home.root / "triggers.yaml").write_text(f"home: {HOME_MOUNT}\ndata_root: {HOME_MOUNT}/data\n")
    user = container_user(home.root)
    common = ["--user", user, "--read-only", "--tmpfs", "/tmp", "-v", f"{home.root}:{HOME_MOUNT}"]
    port = free_port()
    served = docker(
        "run",
        "-d",
        *common,
        "-p",
        f"127.0.0.1:{port}:8501",
        PIPELINE_IMAGE,
        "serve",
        "--home",
        HOME_MOUNT,
        "--host",
        "0.0.0.0",
        "--dataset",
        "penguins",
    ).stdout.strip()
    watching = docker(
        "run",
        "-d",
        *common,
        "--network",
        "none",
        PIPELINE_IMAGE,
        "watch",
        "--config",
        f"{HOME_MOUNT}/triggers.yaml",
        "--heartbeat",
        "/tmp/alive",
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if get(port, "/v2/health/live") == (200, {"live": True}):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert get(port, "/v2/health/live") == (200, {"live": True})
        assert get(port, "/v2/health/ready")[0] == 503  # no model pushed yet: alive, not ready
        while time.monotonic() < deadline and "watching with triggers" not in docker("logs", watching).stdout:
            time.sleep(0.5)
        assert "watching with triggers: manual" in docker("logs", watching).stdout
        assert docker("exec", watching, "test", "-f", "/tmp/alive", check=False).returncode == 0  # its liveness probe
    finally:
        docker("rm", "-f", served, watching, check=False)
