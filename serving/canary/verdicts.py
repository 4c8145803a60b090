"""Canary verdicts on the shared home volume: each made once, by the first replica to reach
it, and followed by every replica, restarted ones included.

`<folder>/<model>/<version>.json` is created exclusively (a hard link: it appears whole, and
not at all when it exists already): of replicas judging the same canary at once, one writes
the verdict and records it in ML Metadata; the others find it there and follow it. A replica
that starts later reads which versions were promoted, so an undecided canary is still the
canary after a restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from components.common.metadata import PROMOTED
from serving.canary.judge import CanaryVerdict


class VerdictBook:
    def __init__(self, folder: Path, model_name: str):
        self.folder = folder / model_name
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, version: int) -> Path:
        return self.folder / f"{version}.json"

    def read(self, version: int) -> dict[str, Any] | None:
        """The verdict on a version, or None while it has none."""
        try:
            return json.loads(self._path(version).read_text())
        except FileNotFoundError:
            return None

    def write_once(self, version: int, verdict: CanaryVerdict) -> bool:
        """Writes the verdict unless one is there already; True when this call wrote it."""
        record = {
            "version": version,
            "decision": verdict.decision,
            "reason": verdict.reason,
            "numbers": verdict.numbers,
        }
        temporary = self.folder / f".{version}.{os.getpid()}.partial"
        temporary.write_text(json.dumps(record))
        try:
            os.link(temporary, self._path(version))  # atomic, and fails if the verdict exists
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def promoted(self, version: int) -> bool:
        verdict = self.read(version)
        return verdict is not None and verdict["decision"] == PROMOTED
