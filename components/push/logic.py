"""Push: publish a blessed model into the versioned model repository, atomically.

The pusher checks both blessings itself (the pipeline cannot branch on kfp.local, and a
pusher that trusts its caller can be wired wrong). Publishing copies the model into a
temporary folder inside the repository, fsyncs every file and folder, then renames it
to `<repository>/<model_name>/<version>/`: a reader sees the whole model or nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from components.infra_validate.logic import InfraBlessing
from components.validate_model.logic import ModelBlessing

MANIFEST = "ct-model.json"


@dataclasses.dataclass(frozen=True)
class PushResult:
    pushed: bool
    version: int | None
    path: str
    reasons: tuple[str, ...]


def published_versions(repository: Path, model_name: str) -> list[int]:
    folder = repository / model_name
    if not folder.is_dir():
        return []
    return sorted(int(child.name) for child in folder.iterdir() if child.name.isdigit() and (child / MANIFEST).is_file())


def push(model_dir: Path, blessing: ModelBlessing, infra_blessing: InfraBlessing, repository: Path, model_name: str,
         run_id: str = "") -> PushResult:
    """Publishes the model as the next version, or refuses and says why.

    Returns:
        What happened: the new version and its folder, or `pushed=False` with the reasons.
    """
    refusals = []
    if not blessing.blessed:
        refusals += [f"not blessed: {reason}" for reason in blessing.reasons]
    if not infra_blessing.blessed:
        refusals += [f"not infra-blessed: {reason}" for reason in infra_blessing.reasons]
    if refusals:
        return PushResult(False, None, "", tuple(refusals))
    target_root = repository / model_name
    target_root.mkdir(parents=True, exist_ok=True)
    staging = target_root / f".staging-{uuid.uuid4().hex}"
    shutil.copytree(model_dir, staging)
    try:
        while True:
            version = _next_version(target_root)
            manifest = {"model_name": model_name, "version": version, "source": str(model_dir), "run_id": run_id,
                        "pushed_at": time.time(), "blessing": blessing.reasons, "infra_blessing": infra_blessing.reasons}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
            _fsync_tree(staging)
            try:
                os.rename(staging, target_root / str(version))
            except OSError:
                # Another pusher took this version between listing and renaming: take the next one.
                if (target_root / str(version)).exists():
                    continue
                raise
            _fsync_dir(target_root)
            reasons = [f"blessed: {r}" for r in blessing.reasons] + [f"infra-blessed: {r}" for r in infra_blessing.reasons]
            return PushResult(True, version, str(target_root / str(version)), tuple(reasons))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _next_version(folder: Path) -> int:
    # Any numbered folder counts, published or not, so a push never lands on a foreign folder.
    return max((int(child.name) for child in folder.iterdir() if child.name.isdigit()), default=0) + 1


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
