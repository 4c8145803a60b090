"""`ct demo --home X` deletes only a home it made: absent, empty, or marked as a previous demo's;
it goes on from a month's traffic once the service has seen it."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from components.common.home import Home
from pipelines.cli import main
from pipelines.demo.replay import DEMO_MARKER, FeedbackWeighed, fresh_demo_home
from serving.canary.judge import SequentialTest
from serving.config import ServingConfig
from serving.request_log import ParquetLog
from tests.support.homes import hold_home
from tests.support.serving_helpers import canary_checks, metrics_text, publish, traffic_with_feedback, wait_for


def test_the_demo_refuses_a_folder_it_did_not_make_and_deletes_nothing(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "models" / "flight-delay" / "1").mkdir(parents=True)
    (home / "metadata.sqlite").write_text("records")
    assert main(["demo", "--home", str(home), "--months", "2013-01"]) == 1
    assert f"{home}: not empty and not a demo's home (no {DEMO_MARKER})" in capsys.readouterr().err
    assert (home / "metadata.sqlite").read_text() == "records" and (home / "models" / "flight-delay" / "1").is_dir()
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--home", str(tmp_path / "file"), "--months", "2013-01"]) == 1
    assert (tmp_path / "file").read_text() == "x"


def test_the_demo_starts_its_own_home_afresh_and_takes_an_empty_or_absent_one(tmp_path):
    absent = fresh_demo_home(tmp_path / "absent")
    assert (absent.root / DEMO_MARKER).is_file()
    (absent.root / "metadata.sqlite").write_text("last replay")
    again = fresh_demo_home(absent.root)
    assert not (again.root / "metadata.sqlite").exists() and (again.root / DEMO_MARKER).is_file()
    (tmp_path / "empty").mkdir()
    assert (fresh_demo_home(tmp_path / "empty").root / DEMO_MARKER).is_file()


def test_the_demo_does_not_delete_its_home_under_a_run(tmp_path, capsys):
    home = fresh_demo_home(tmp_path / "demo")
    holder = hold_home(home.lock_file, "run-1")
    try:
        assert main(["demo", "--home", str(home.root), "--months", "2013-01"]) == 1
        assert "in use by `ct run` for run run-1" in capsys.readouterr().err
        assert (home.root / DEMO_MARKER).is_file()
    finally:
        holder.kill()
        holder.wait()


def test_the_demo_goes_on_once_the_service_wrote_the_feedback_and_looked_at_the_canary_after(
    serve, rows, trained_model, tmp_path
):
    """Against a real service sharing its logs, as `ct serve` runs: the demo waits for what the
    triggers need, not for a fixed pause."""
    config = ServingConfig(
        poll_seconds=0.05,
        canary_percent=50,
        canary_test=SequentialTest(min_labelled=1000),  # 60 labels decide nothing: the canary stays
        canary_check_seconds=1.0,
        request_log_flush_seconds=0.2,
    )
    server, service, repository, store = serve(
        config, feedback_log=ParquetLog(tmp_path / "feedback_log", 100, 10**9), verdicts=tmp_path / "canary_verdicts"
    )
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    traffic_with_feedback(server, rows[:60], canary_good=True)

    def labels_written() -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in (tmp_path / "feedback_log").glob("part-*.parquet"))

    assert wait_for(lambda: labels_written() == 60)
    looks_when_written = canary_checks(metrics_text(server))
    weighed = FeedbackWeighed(Home(tmp_path), server.server_address[1], timeout=10)
    weighed.sent(60)
    weighed.wait_until_weighed(lambda: service.registry.routing.canary is not None)
    assert canary_checks(metrics_text(server)) > looks_when_written  # a look after the write, undecided
    late = FeedbackWeighed(Home(tmp_path), server.server_address[1], timeout=0.5)
    late.sent(61)  # one label more than the service ever got
    with pytest.raises(RuntimeError, match=r"no 61 labels in .*feedback_log after 0.5 s"):
        late.wait_until_weighed(lambda: True)
