"""`ct demo --home X` deletes only a home it made: absent, empty, or marked as a previous demo's."""

from __future__ import annotations

from pipelines.cli import main
from pipelines.demo.replay import DEMO_MARKER, fresh_demo_home
from tests.support.homes import hold_home


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
