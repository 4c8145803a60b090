"""Crash consistency: what the next holder of a home does about runs that died holding it.

A run killed (SIGKILL, a machine down, an OOM kill) decides nothing: its run stays undecided in
ML Metadata, a publish may have left a staging folder in the model repository, and its steps
left partial outputs in the pipeline root. Whoever next takes the home's lock (pipelines/home_lock.py)
calls `recover_home`: every undecided run launched here is decided as failed (so `ct runs` says
so, and the new-data trigger reads its spans again), and what it left half-written is removed.
Holding the lock is what makes this safe: no other run of the home can be going on.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
from pathlib import Path
from typing import Callable, Iterable, Mapping

from components.common.home import Home
from components.common.metadata import MetadataStore
from components.common.model_repository import STAGING_PREFIX


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What a recovery did: the runs it decided as failed and the paths it removed."""

    closed_runs: tuple[str, ...]
    removed: tuple[Path, ...]


def this_launcher() -> str:
    """Who runs a local run: this host and process (recorded, so a killed run can be told)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def launcher_alive(launcher: str) -> bool:
    """Whether a run's launcher still runs; True when it cannot be told (another host's)."""
    host, _, pid = launcher.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def launcher_check(home: Home) -> Callable[[str], bool]:
    """How a holder of the home tells whether an undecided run's launcher may still be running it.

    With the home's own store, none can: every local run holds the home's lock while it runs, and
    the caller holds it now. A store given by connection may be shared with other homes, whose
    runs are only judged when their launcher is a process of this host.
    """
    return launcher_alive if home.metadata else (lambda launcher: False)


def recover_home(home: Home, store: MetadataStore) -> Recovery:
    """Decides interrupted runs as failed and removes what they left half-written.

    Call it holding the home's lock. Removed: staging folders in the model repository (a publish
    that died before its rename), and the pipeline-root folders of the runs it closed.

    Returns:
        The runs closed and the paths removed.
    """
    closed = store.close_interrupted_runs(launcher_check(home))
    leftovers = list(staging_folders(home))
    if closed:
        owners = pipeline_root_owners(home, store.run_uris())
        leftovers += [folder for folder, runs in owners.items() if runs and runs <= set(closed)]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return Recovery(tuple(closed), tuple(leftovers))


def staging_folders(home: Home) -> Iterable[Path]:
    """Folders a publish stages a model in before renaming it into place (left by a publish that died)."""
    repository = home.model_repository
    if not repository.is_dir():
        return []
    return sorted(
        staging
        for model in repository.iterdir()
        if model.is_dir()
        for staging in model.iterdir()
        if staging.name.startswith(STAGING_PREFIX) and staging.is_dir()
    )


def pipeline_root_owners(home: Home, uris_by_run: Mapping[str, set[str]]) -> dict[Path, set[str]]:
    """Each folder at the top of the pipeline root, and the runs whose artifacts are in it.

    A local run's outputs are in `pipeline_root/<run id>/` (older runs': a folder kfp.local named
    by the time); a folder no recorded artifact is in maps to no run (a run that recorded nothing).
    """
    root = home.pipeline_root
    if not root.is_dir():
        return {}
    owners: dict[Path, set[str]] = {folder: set() for folder in root.iterdir() if folder.is_dir()}
    prefixes = {str(root.resolve()), str(root.absolute())}
    for run_id, uris in uris_by_run.items():
        if root / run_id in owners:
            owners[root / run_id].add(run_id)
        for uri in uris:
            for prefix in prefixes:
                if uri.startswith(prefix + "/"):
                    top = root / uri[len(prefix) + 1 :].split("/", 1)[0]
                    if top in owners:
                        owners[top].add(run_id)
    return owners
