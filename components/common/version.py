"""Which code this is: the package version and a fingerprint of the code's content.

The fingerprint is a SHA-256 of every Python source file of the four packages, of the
dataset catalogue (configs and schemas) and of the dependencies' lock, by path relative to
the project root, so the same code gives the same version on a laptop, in CI and inside the
image (which keeps the lock at the same place relative to its packages: images/Dockerfile),
and any change to the logic or to a pinned dependency gives a new one: a node that holds an
image built before a new pin cannot run it under the same tag. The image tag, the pipeline
version uploaded to KFP and the `code_version` every step records in ML Metadata all come
from here.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from components import __version__

PACKAGES = ("components", "features", "pipelines", "serving")
CATALOGUE_SUFFIXES = (".yaml", ".pbtxt")
LOCK = Path("images", "requirements.lock")
FINGERPRINT_LENGTH = 12


def source_files(root: Path) -> list[Path]:
    """The files whose content defines the code's version, sorted by relative path."""
    files = [path for package in PACKAGES for path in (root / package).rglob("*.py")]
    files += [
        path for path in (root / "components" / "common" / "datasets").iterdir() if path.suffix in CATALOGUE_SUFFIXES
    ]
    files.append(root / LOCK)
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def fingerprint(root: Path) -> str:
    """SHA-256 (first 12 hex digits) of the relative paths and bytes of `source_files`.

    Raises:
        FileNotFoundError: no lock beside the packages (installed other than from a checkout,
            editable, or by the image's Dockerfile).
    """
    if not (root / LOCK).is_file():
        raise FileNotFoundError(
            f"{root / LOCK}: not beside the packages, and the code's version includes the dependencies' lock "
            "(install the project editable from a checkout, or use the image)"
        )
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`<package version>-<fingerprint>` of the code that is running, e.g. `0.1.0-3f2a9c1e0b7d`
    (a `-`, not a `+`: it is also an image tag)."""
    return code_version_on_disk()


def code_version_on_disk() -> str:
    """The same, read anew: the code a process starting now would run (a long-lived process
    may have imported an earlier one)."""
    return f"{__version__}-{fingerprint(Path(__file__).resolve().parents[2])}"
