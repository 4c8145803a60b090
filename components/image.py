"""The one image every pipeline component runs in; its tag is the code's version, so a
change to the code is a new image (components/common/version.py). Beam's runners start
their workers from the same image with Beam's boot program as its entrypoint
(images/Dockerfile's beam-worker target)."""

from components.common.version import code_version

IMAGE_REPOSITORY = "ghcr.io/continuous-training/ct-pipeline"
PIPELINE_IMAGE = f"{IMAGE_REPOSITORY}:{code_version()}"
BEAM_WORKER_IMAGE = f"{PIPELINE_IMAGE}-beam"
