"""Whether the project's image can run here: a Docker engine and the image built for this code.

Where they are missing, container tests are skipped, except in CI, whose script installs
Docker and builds the image first (.ci/run): there a missing engine or image fails them.
"""

from __future__ import annotations

import os

import pytest

from components.image import PIPELINE_IMAGE


def require_the_image() -> None:
    """Skips (or, in CI, fails) the calling test unless the engine answers and the image is built."""
    import docker
    from docker.errors import DockerException, ImageNotFound

    give_up = pytest.fail if os.environ.get("CI") else pytest.skip
    try:
        client = docker.from_env()
        client.images.get(PIPELINE_IMAGE)
    except ImageNotFound:
        give_up(f"image {PIPELINE_IMAGE} is not built: bash images/build.sh --local")
    except DockerException as error:
        give_up(f"no Docker engine: {error}")
    else:
        client.close()
