"""Retention (`ct gc`): what a home keeps, and what it lets go.

Every run leaves its outputs in the pipeline root (about 1.4 MB a run on a month of flights),
its log, and a pushed model version (about 0.3 MB); a daily schedule grows a home by some
0.65 GB a year. The policy:

- Models: the production model (the highest live pushed version in ML Metadata) and its
  `keep_models` newest live predecessors (the versions a rollback goes to) are never collected,
  nor the newest version whose canary was promoted (what a restarting service serves as stable).
  Older versions go, and rolled-back ones (they never serve again). A model nothing was ever
  pushed for in ML Metadata is left alone, as are versions newer than production that ML Metadata
  does not know of.
- Runs: the pipeline-root outputs and log of the last `keep_runs` runs are kept, and those of
  every run in a kept model's lineage (its data, statistics, training and evaluation), and of any
  run not yet decided. The others go.
- Leftovers: staging folders of publishes that did not finish, and pipeline-root folders no
  recorded run wrote in (a run killed before it recorded anything).

ML Metadata itself is kept whole: the records of collected runs stay, their URIs then name
files that are gone. Statistics (statistics/<dataset>/<run id>/) are kept too: later runs
compare with them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from components.common.errors import ConfigError
from components.common.home import Home
from components.common.metadata import PROMOTED, PUSHED_MODEL, MetadataStore
from components.common.model_repository import published_versions, retire, version_path
from pipelines.home_lock import HomeLock, holding
from pipelines.recovery import launcher_check, pipeline_root_owners, staging_folders

MODEL_VERSION, RUN_OUTPUTS, RUN_LOG, STAGING = "model version", "run outputs", "run log", "staging"


@dataclasses.dataclass(frozen=True)
class RetentionSettings:
    """How much a home keeps (`ct gc`, and `retention:` in triggers.yaml to collect after each run).

    Attributes:
        keep_models: Live versions kept below the production model, newest first (rollback targets).
        keep_runs: Runs whose pipeline-root outputs and log are kept, newest first (beside those
            of every kept model's lineage).
    """

    keep_models: int = 3
    keep_runs: int = 10

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{field.name}={value!r}: expected a whole number, 0 or more")


@dataclasses.dataclass(frozen=True)
class Removal:
    """One path collected (or to be, in a dry run), what it is, why it goes, and its size."""

    path: Path
    kind: str
    reason: str
    size: int


@dataclasses.dataclass(frozen=True)
class RetentionReport:
    """What `ct gc` removed or, in a dry run, would remove; and what it kept."""

    removals: tuple[Removal, ...]
    kept_versions: tuple[tuple[str, tuple[int, ...]], ...]  # (model name, versions kept)
    kept_runs: tuple[str, ...]
    dry_run: bool

    @property
    def size(self) -> int:
        return sum(r.size for r in self.removals)

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} {len(self.removals)} paths, {_human(self.size)} ({self.size} bytes)"]
        for model, versions in self.kept_versions:
            lines.append(f"  kept {model} versions {', '.join(map(str, versions)) or '(all: none in production)'}")
        lines.append(f"  kept the outputs and logs of {len(self.kept_runs)} runs")
        lines += [f"  - {r.path}  ({r.kind}, {_human(r.size)}): {r.reason}" for r in self.removals]
        return "\n".join(lines)


def collect_home(home: Home, settings: RetentionSettings, dry_run: bool = False) -> RetentionReport:
    """What `ct gc` does: holds the home (no run may be going on while its files go), closes runs
    that died holding it, then collects. A dry run only reads, without the lock.

    Raises:
        ConfigError: no ML Metadata store in the home.
        HomeBusyError: a run holds the home (not for a dry run).
    """
    if not home.metadata and not home.metadata_path.is_file():
        raise ConfigError(f"{home.metadata_path}: no ML Metadata store (nothing has run with --home {home.root})")
    store = MetadataStore(home.metadata_connection)
    if dry_run:
        return collect_garbage(home, store, settings, dry_run=True)
    with holding(HomeLock(home.lock_file, "ct gc"), ""):
        store.close_interrupted_runs(launcher_check(home))  # their leftovers are collected (and reported) below
        return collect_garbage(home, store, settings)


def collect_garbage(
    home: Home, store: MetadataStore, settings: RetentionSettings, dry_run: bool = False
) -> RetentionReport:
    """Applies the policy (see the module doc) to a home; call it holding the home's lock.

    Args:
        home: The home to collect.
        store: Its ML Metadata.
        settings: How much to keep.
        dry_run: Only say what would go.

    Returns:
        What was (or would be) removed, with sizes, and what was kept.
    """
    removals: list[Removal] = []
    kept_versions: list[tuple[str, tuple[int, ...]]] = []
    lineage_runs: set[str] = set()
    for model_name in _model_names(home):
        kept, gone = _versions(home, store, model_name, settings.keep_models)
        kept_versions.append((model_name, tuple(sorted(kept))))
        removals += [
            Removal(version_path(home.model_repository, model_name, v), MODEL_VERSION, why, 0) for v, why in gone
        ]
        for pushed in store.pushed_models(model_name):
            if int(pushed.properties["version"]) in kept:
                lineage_runs.add(str(pushed.properties.get("run_id", "")))
                # The production model a candidate was compared with is named in its lineage;
                # that model's own run is kept (or not) for its own sake.
                lineage_runs.update(
                    entry.run_id
                    for entry in store.lineage(pushed.id)
                    if entry.run_id and (entry.artifact.type != PUSHED_MODEL or entry.artifact.id == pushed.id)
                )
    runs = store.runs()
    recent = {run.run_id for run in runs[len(runs) - settings.keep_runs :]} if settings.keep_runs else set()
    undecided = {run.run_id for run in runs if not run.decision}
    kept_runs = recent | (lineage_runs & {run.run_id for run in runs}) | undecided
    for folder, owners in sorted(pipeline_root_owners(home, store.run_uris()).items()):
        if not owners and folder.name not in kept_runs:
            removals.append(Removal(folder, RUN_OUTPUTS, "no recorded run's outputs (a run that recorded nothing)", 0))
        elif owners and not owners & kept_runs:
            removals.append(Removal(folder, RUN_OUTPUTS, f"outputs of {_runs_reason(owners, settings)}", 0))
    for run in runs:
        log = home.logs / f"{run.run_id}.log"
        if run.run_id not in kept_runs and log.is_file():
            removals.append(Removal(log, RUN_LOG, f"log of {_runs_reason({run.run_id}, settings)}", 0))
    removals += [
        Removal(path, STAGING, "staging of a publish that did not finish", 0) for path in staging_folders(home)
    ]
    removals = [dataclasses.replace(r, size=_size(r.path)) for r in removals]
    if not dry_run:
        for removal in removals:
            if removal.kind == MODEL_VERSION:
                retire(removal.path)  # its number is never given again: ML Metadata names it
            elif removal.path.is_dir():
                shutil.rmtree(removal.path)
            else:
                removal.path.unlink(missing_ok=True)
    return RetentionReport(tuple(removals), tuple(kept_versions), tuple(sorted(kept_runs)), dry_run)


def _model_names(home: Home) -> list[str]:
    repository = home.model_repository
    if not repository.is_dir():
        return []
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def _versions(
    home: Home, store: MetadataStore, model_name: str, keep_models: int
) -> tuple[set[int], list[tuple[int, str]]]:
    """The versions kept, and those that go with why."""
    versions = published_versions(home.model_repository, model_name)
    production = store.production_model(model_name)
    if production is None:
        return set(versions), []
    current = int(production.properties["version"])
    rolled_back = store.rolled_back_versions(model_name)
    predecessors = [v for v in versions if v < current and v not in rolled_back]
    kept = {current, *(predecessors[len(predecessors) - keep_models :] if keep_models else [])}
    promoted = [
        int(a.properties["version"]) for a in store.pushed_models(model_name) if a.properties.get("canary") == PROMOTED
    ]
    if promoted:
        kept.add(max(promoted))
    gone = []
    for version in versions:
        if version in kept:
            continue
        if version in rolled_back:
            gone.append((version, "rolled back: it never serves again"))
        elif version < current:
            gone.append((version, f"older than production (v{current}) and its {keep_models} kept predecessors"))
    return kept, gone


def _runs_reason(run_ids: set[str], settings: RetentionSettings) -> str:
    return f"{', '.join(sorted(run_ids))}: not among the last {settings.keep_runs} runs nor a kept model's lineage"


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(folder, name)).st_size for name in files)
    return total


def _human(size: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"
