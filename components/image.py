"""The one image every pipeline component runs in; its tag is the package version."""

from components import __version__

IMAGE_REPOSITORY = "ghcr.io/continuous-training/ct-pipeline"
PIPELINE_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
