"""Retention (`ct gc`): production and its predecessors are never collected, nor the runs a kept
model derives from; old runs' outputs and logs go; a dry run says the same and deletes nothing."""

from __future__ import annotations

import pytest

from components.common import metadata
from components.common.errors import ConfigError, HomeBusyError
from components.common.home import Home
from components.common.model_repository import HIGHEST_RETIRED
from pipelines.cli import main
from pipelines.retention import MODEL_VERSION, RUN_LOG, RUN_OUTPUTS, STAGING, RetentionSettings, collect_home
from tests.support.homes import MODEL, hold_home, record_run


@pytest.fixture
def home(tmp_path, store):
    """Six runs: 1-4 pushed versions 1-4, 5 not blessed, 6 pushed version 5 (production)."""
    home = Home(tmp_path)
    for number in range(1, 7):
        record_run(
            home,
            store,
            f"run-{number}",
            push=number != 5,
            decision=metadata.NOT_BLESSED if number == 5 else metadata.PUSHED,
        )
    (home.model_repository / MODEL / ".staging-dead").mkdir()
    return home


def test_production_its_predecessors_and_their_runs_are_kept_the_rest_goes(home, store):
    report = collect_home(home, RetentionSettings(keep_models=2, keep_runs=1))
    assert dict(report.kept_versions) == {MODEL: (3, 4, 5)}
    assert sorted(p.name for p in (home.model_repository / MODEL).iterdir()) == [HIGHEST_RETIRED, "3", "4", "5"]
    # run-6 (the last; production's), run-3 and run-4 (the predecessors' lineage)
    assert sorted(p.name for p in home.pipeline_root.iterdir()) == ["run-3", "run-4", "run-6"]
    assert sorted(p.name for p in home.logs.iterdir()) == ["run-3.log", "run-4.log", "run-6.log"]
    kinds = sorted(r.kind for r in report.removals)
    assert kinds == sorted([MODEL_VERSION] * 2 + [RUN_OUTPUTS] * 3 + [RUN_LOG] * 3 + [STAGING])
    assert report.size == sum(r.size for r in report.removals) > 3 * 1000
    assert store.production_model(MODEL).properties["version"] == 5


def test_a_dry_run_lists_the_same_and_deletes_nothing(home, store):
    before = sorted(str(p) for p in home.root.rglob("*"))
    planned = collect_home(home, RetentionSettings(keep_models=1, keep_runs=2), dry_run=True)
    assert sorted(str(p) for p in home.root.rglob("*")) == before
    done = collect_home(home, RetentionSettings(keep_models=1, keep_runs=2))
    assert [(r.path, r.size) for r in planned.removals] == [(r.path, r.size) for r in done.removals]
    assert planned.dry_run and "would remove" in planned.describe() and "removed" in done.describe()


def test_a_rolled_back_version_goes_and_the_promoted_stable_stays(home, store):
    store.record_canary_decision(MODEL, 1, metadata.PROMOTED, "good", {})
    store.record_canary_decision(MODEL, 5, metadata.ROLLED_BACK, "worse", {})  # production is 4 now
    report = collect_home(home, RetentionSettings(keep_models=0, keep_runs=0))
    assert dict(report.kept_versions) == {MODEL: (1, 4)}
    assert sorted(p.name for p in (home.model_repository / MODEL).iterdir()) == [HIGHEST_RETIRED, "1", "4"]
    # Version 5 is gone from the repository, not from ML Metadata (its rollback, its lineage):
    # the next push is version 6, never a second version 5.
    assert record_run(home, store, "run-7", push=True) == 6
    assert store.production_model(MODEL).properties["version"] == 6


def test_nothing_in_production_keeps_every_model(tmp_path, store):
    home = Home(tmp_path)
    record_run(home, store, "run-1")
    report = collect_home(home, RetentionSettings(keep_runs=0))
    assert [r.kind for r in report.removals] == [RUN_OUTPUTS, RUN_LOG]


def test_gc_waits_for_no_run_it_refuses_a_held_home(home):
    holder = hold_home(home.lock_file, "run-7")
    try:
        with pytest.raises(HomeBusyError, match="for run run-7"):
            collect_home(home, RetentionSettings())
        assert collect_home(home, RetentionSettings(), dry_run=True).removals  # a dry run only reads
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("keep_models, keep_runs, key", [(-1, 10, "keep_models=-1"), (3, 1.5, "keep_runs=1.5")])
def test_settings_are_checked(keep_models, keep_runs, key):
    with pytest.raises(ConfigError, match=f"{key}: expected a whole number, 0 or more"):
        RetentionSettings(keep_models=keep_models, keep_runs=keep_runs)


def test_ct_gc_dry_run_says_what_would_go_and_how_much(home, capsys):
    assert main(["gc", "--home", str(home.root), "--keep-runs", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would remove 4 paths") and f"{MODEL}/1  (model version" in out
    assert main(["gc", "--home", str(home.root), "--keep-runs", "-2"]) == 1
    assert "ct gc: keep_runs=-2: expected a whole number" in capsys.readouterr().err
