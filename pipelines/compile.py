"""Compiles the pipeline to one KFP IR YAML file; the committed copy must stay fresh (a test checks)."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

COMPILED_SPEC = Path(__file__).parent / "compiled" / "continuous_training.yaml"
# The manifests' one image pin, in a source checkout (an installed package has no manifests).
MANIFESTS_IMAGE_PIN = (
    Path(__file__).resolve().parent.parent / "manifests" / "components" / "identity" / "kustomization.yaml"
)


def compile_pipeline(out: Path = COMPILED_SPEC) -> Path:
    """Writes the pipeline spec to `out` and returns it."""
    from kfp import compiler

    from pipelines.continuous_training import continuous_training

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(continuous_training, str(out))
    return out


def pin_manifests_image(kustomization: Path = MANIFESTS_IMAGE_PIN) -> Path:
    """Sets the manifests' image tag to the code's version, the tag the compiled spec names."""
    from components.common.version import code_version

    text = kustomization.read_text()
    pinned = re.sub(r"(?m)^(\s*newTag:).*$", rf"\g<1> {code_version()}", text)
    if pinned != text:
        kustomization.write_text(pinned)
    return kustomization


def compile_release(out: Path = COMPILED_SPEC) -> list[Path]:
    """`ct compile`: the spec, and in a source checkout the manifests' image tag; what it wrote."""
    written = [compile_pipeline(out)]
    if MANIFESTS_IMAGE_PIN.is_file():
        written.append(pin_manifests_image())
    return written


@functools.lru_cache(maxsize=1)
def pipeline_version() -> str:
    """The code's version (components/common/version.py) and a fingerprint of the compiled spec that
    ships with it: the name of this pipeline version on a KFP cluster."""
    from components.common.version import code_version

    digest = hashlib.sha256(COMPILED_SPEC.read_bytes()).hexdigest()[:12] if COMPILED_SPEC.is_file() else "uncompiled"
    return f"{code_version()}+{digest}"
