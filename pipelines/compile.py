"""Compiles the pipeline to one KFP IR YAML file; the committed copy must stay fresh (a test checks)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

COMPILED_SPEC = Path(__file__).parent / "compiled" / "continuous_training.yaml"


def compile_pipeline(out: Path = COMPILED_SPEC) -> Path:
    """Writes the pipeline spec to `out` and returns it."""
    from kfp import compiler

    from pipelines.continuous_training import continuous_training

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(continuous_training, str(out))
    return out


@functools.lru_cache(maxsize=1)
def pipeline_version() -> str:
    """The package version and a fingerprint of the compiled spec that ships with it."""
    from components import __version__

    digest = hashlib.sha256(COMPILED_SPEC.read_bytes()).hexdigest()[:12] if COMPILED_SPEC.is_file() else "uncompiled"
    return f"{__version__}+{digest}"
