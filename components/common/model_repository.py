"""The versioned model repository: `<repository>/<model_name>/<version>/`, each version a
SavedModel with its manifest `ct-model.json`, written last. The manifest carries the
model's content digest, which push records in ML Metadata and the prediction service
checks before it serves a version: a folder dropped into the repository is not served.

Every writer (push, tests, benchmarks) calls `publish`, which copies the model into a
staging folder inside the repository, fsyncs every file and folder, then renames it into
place: a reader (the prediction service) sees the whole version or nothing.

A version number is never given twice: ML Metadata, the serving journal and the logs keep
naming a version after `retire` removed it (retention), so the repository remembers the
highest number it retired and `publish` numbers past it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from components.common.errors import ConfigError

MANIFEST = "ct-model.json"
STAGING_PREFIX = ".staging-"
HIGHEST_RETIRED = ".highest-retired-version"  # in a model's folder: the highest version `retire` removed


def published_versions(repository: Path, model_name: str) -> list[int]:
    """The versions of `model_name` whose manifest is in place, oldest first."""
    folder = repository / model_name
    if not folder.is_dir():
        return []
    return sorted(
        int(child.name) for child in folder.iterdir() if child.name.isdigit() and (child / MANIFEST).is_file()
    )


def version_path(repository: Path, model_name: str, version: int) -> Path:
    return repository / model_name / str(version)


@dataclasses.dataclass(frozen=True)
class PublishedVersion:
    version: int
    path: Path
    digest: str


def content_digest(folder: Path) -> str:
    """SHA-256 over every file of a model folder but the manifest: names and bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder) != Path(MANIFEST)):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def pushed_at(folder: Path) -> float:
    """When a published version was pushed (its manifest's time, the same for every reader)."""
    return float(json.loads((folder / MANIFEST).read_text())["pushed_at"])


def publish(model_dir: Path, repository: Path, model_name: str, manifest: Mapping[str, Any]) -> PublishedVersion:
    """Publishes `model_dir` as the next version of `model_name`, atomically.

    Args:
        model_dir: The SavedModel to publish.
        repository: The repository's root.
        model_name: Whose version it is.
        manifest: What to record beside the model (run id, blessings, ...); the name,
            version, source, time and content digest are added.

    Returns:
        The new version, its folder and its content digest (to record in ML Metadata).
    """
    target_root = repository / model_name
    target_root.mkdir(parents=True, exist_ok=True)
    staging = target_root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    shutil.copytree(model_dir, staging)
    digest = content_digest(staging)
    try:
        while True:
            version = _next_version(target_root)
            record = {
                "model_name": model_name,
                "version": version,
                "source": str(model_dir),
                "pushed_at": time.time(),
                "digest": digest,
                **manifest,
            }
            (staging / MANIFEST).write_text(json.dumps(record, indent=1))
            _fsync_tree(staging)
            try:
                os.rename(staging, target_root / str(version))
            except OSError:
                # Another publisher took this version between listing and renaming: take the next one.
                if (target_root / str(version)).exists():
                    continue
                raise
            _fsync_dir(target_root)
            return PublishedVersion(version, target_root / str(version), digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def retire(version_folder: Path) -> None:
    """Removes a published version (`<repository>/<model_name>/<version>`) for good; its number
    is remembered first, so no later publish takes it again."""
    folder, version = version_folder.parent, int(version_folder.name)
    if version > _highest_retired(folder):
        # Written whole in a staging folder first: a crash leaves a staging leftover (which
        # recovery and retention remove), never a half-written record.
        staging = folder / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        (staging / HIGHEST_RETIRED).write_text(str(version))
        _fsync_tree(staging)
        os.replace(staging / HIGHEST_RETIRED, folder / HIGHEST_RETIRED)
        staging.rmdir()
        _fsync_dir(folder)
    shutil.rmtree(version_folder)


def _highest_retired(folder: Path) -> int:
    """The highest version `retire` removed from a model's folder (0: none).

    Raises:
        ConfigError: the record is not a version number.
    """
    path = folder / HIGHEST_RETIRED
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    if not text.isdecimal():
        raise ConfigError(f"{path}: expected the highest retired version number, found {text[:40]!r}")
    return int(text)


def _next_version(folder: Path) -> int:
    # Any numbered folder counts, published or not, so a publish never lands on a foreign folder;
    # and no retired number is taken again.
    numbered = [int(child.name) for child in folder.iterdir() if child.name.isdigit()]
    return max([*numbered, _highest_retired(folder)]) + 1


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
