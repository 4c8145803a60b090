"""The kustomize overlays as kubectl builds them."""

from __future__ import annotations

import subprocess

import yaml

from tests.support import PROJECT_ROOT

MANIFESTS = PROJECT_ROOT / "manifests"


def build(overlay: str) -> list[dict]:
    """The objects `kubectl kustomize manifests/overlays/<overlay>` renders."""
    output = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]
