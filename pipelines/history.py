"""What ML Metadata recorded, as people read it: the runs, and a pushed model's lineage."""

from __future__ import annotations

import time

from components.common.errors import ConfigError, NotFoundError
from components.common.home import Home
from components.common.metadata import MetadataStore
from components.common.reports import markdown_table
from pipelines.local_run import pipeline_parameters


def open_store(home: Home) -> MetadataStore:
    """The home's store; a local home where nothing ran is an error, not an empty store made on the spot.

    Raises:
        ConfigError: no store in the home folder.
    """
    if not home.metadata and not home.metadata_path.is_file():
        raise ConfigError(f"{home.metadata_path}: no ML Metadata store (nothing has run with --home {home.root})")
    return MetadataStore(home.metadata_connection)


def runs_table(home: Home, last: int | None) -> str:
    """The `last` runs started last (None: every run), oldest first: start, end, trigger and reason,
    parameters that differ from the defaults, decision and why."""
    defaults = {name: default for name, (_, default) in pipeline_parameters().items()}
    rows = []
    for run in open_store(home).runs(last):
        changed = {k: v for k, v in run.parameters.items() if k in defaults and v != defaults[k]}
        rows.append(
            (
                run.run_id,
                _time(run.start),
                _time(run.end),
                run.properties.get("trigger", ""),
                run.properties.get("reason", ""),
                " ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "defaults",
                run.decision or "running",
                run.properties.get("reasons", ""),
            )
        )
    return markdown_table(("run", "start", "end", "trigger", "reason", "parameters", "decision", "why"), rows)


def lineage_table(home: Home, model_name: str, version: int | None) -> str:
    """A pushed version (default: the one in production) back to its spans, with URIs.

    Raises:
        NotFoundError: no such pushed version.
    """
    store = open_store(home)
    chosen = store.pushed_model(model_name, version) if version is not None else store.production_model(model_name)
    if chosen is None:
        raise NotFoundError(
            f"no pushed version {version if version is not None else '(none in production)'} of model {model_name!r}"
        )
    entries = store.lineage(chosen.id)
    rows = [
        (
            e.produced_by or "(source)",
            e.artifact.type,
            e.artifact.uri,
            " ".join(f"{k}={v}" for k, v in sorted(e.artifact.properties.items()) if k not in ("reasons",)),
        )
        for e in entries
    ]
    run = store.run(entries[0].run_id)
    trained_by = run.properties.get("code_version", "unknown")
    return (
        f"model {model_name} version {chosen.properties['version']} (run {entries[0].run_id}, "
        f"code {trained_by})\n" + markdown_table(("produced by", "artifact", "uri", "properties"), rows)
    )


def _time(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"
