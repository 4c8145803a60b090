"""Whether the project's image can run here: a Docker engine and the image built for this code.

Where they are missing, container tests are skipped, except in CI, whose script installs
Docker and builds the image first (.ci/run): there a missing engine or image fails them.
"""

from __future__ import annotations

import os

import pytest

from components.common.errors import ConfigError
from components.image import PIPELINE_IMAGE
from pipelines.pods import docker_client


def require_the_image(image: str = PIPELINE_IMAGE) -> None:
    """Skips (or, in CI, fails) the calling test unless the engine answers and the image is built."""
    try:
        docker_client(image).close()
    except ConfigError as error:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(error))
