"""The `ct` command's own checks; runs of the pipeline itself are in tests/integration."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.support import PROJECT_ROOT


def test_data_command_writes_spans_and_the_feature_sources(tmp_path, capsys):
    assert main(["data", "flights", "--dest", str(tmp_path), "--months", "2013-02..2013-03"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "span=2013-02", "span=2013-03"]
    assert all((tmp_path / span / "_SUCCESS").is_file() for span in ("span=2013-02", "span=2013-03"))
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["planes.parquet", "weather.parquet"]
    assert "dropped" in capsys.readouterr().out


def test_schema_infer_writes_a_reviewable_schema(tmp_path, capsys):
    main(["data", "penguins", "--dest", str(tmp_path / "data"), "--years", "2007"])
    out = tmp_path / "schema.pbtxt"
    assert (
        main(
            [
                "schema",
                "infer",
                "--dataset",
                "penguins",
                "--data",
                str(tmp_path / "data" / "span=2007"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert 'name: "island"' in out.read_text() and "min_domain_mass: 0.99" in out.read_text()


@pytest.mark.parametrize(
    "param, message",
    [
        ("epoch=3", "ct run: --param epoch: unknown parameter"),
        ("epochs=many", "ct run: --param epochs='many': expected int"),
        ("run_id=x", "ct run: --param run_id: unknown parameter"),
        ("dataset=taxis", "ct run: dataset: unknown dataset 'taxis'"),
        ("epochs=-1", "ct run: epochs=-1: must be at least 1"),
        ("learning_rate=0", "ct run: learning_rate=0.0: must be positive"),
        ("hidden_units=64,0", "ct run: hidden_units='64,0': must be positive integers"),
        ("eval_percent=100", "ct run: eval_percent=100: must be between 1 and 99"),
        ("eval_split=random", "ct run: eval_split='random': must be time or hash"),
        ("window_spans=0", "ct run: window_spans=0: must be at least 1"),
        ("min_auc=1.5", "ct run: min_auc=1.5: expected 0..1"),
    ],
)
def test_bad_param_is_refused_before_anything_runs(tmp_path, capsys, param, message):
    before = children()
    assert main(["run", "--data-root", str(tmp_path), "--home", str(tmp_path / "home"), "--param", param]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "home").exists()
    assert children() == before  # the run's step host, started first, is gone too


def children() -> set[int]:
    """This process's child processes (Linux: each thread's /proc children list)."""
    return {int(pid) for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()}


def test_missing_data_root_is_named(tmp_path, capsys):
    assert main(["run", "--data-root", str(tmp_path / "nowhere"), "--home", str(tmp_path / "home")]) == 2
    assert f"{tmp_path / 'nowhere'}: data root does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["runs", "lineage"])
def test_reading_a_home_where_nothing_ran_says_so(tmp_path, capsys, command):
    assert main([command, "--home", str(tmp_path / "home")]) == 1
    assert "metadata.sqlite: no ML Metadata store (nothing has run with --home" in capsys.readouterr().err


def test_unsafe_run_id_is_refused_before_anything_is_written(tmp_path, capsys):
    home = tmp_path / "a" / "home"
    assert main(["run", "--data-root", str(tmp_path), "--home", str(home), "--run-id", "../../escape"]) == 1
    assert "ct run: run id '../../escape': expected letters, digits" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_home_that_is_a_file_is_named(tmp_path, capsys, data_root):
    home = tmp_path / "home"
    home.write_text("not a folder")
    assert main(["run", "--data-root", str(data_root), "--home", str(home)]) == 1
    assert f"ct run: {home}: a file is where the home needs a folder" in capsys.readouterr().err


def test_unreachable_metadata_is_named(tmp_path, capsys):
    started = time.monotonic()
    assert main(["runs", "--home", str(tmp_path), "--metadata", "grpc://127.0.0.1:1"]) == 1
    assert "ct runs: metadata connection grpc://127.0.0.1:1: unreachable" in capsys.readouterr().err
    assert time.monotonic() - started < 30


def test_a_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "99999"])
    assert exit_.value.code == 2
    assert "argument --port: '99999': expected a port number 0..65535" in capsys.readouterr().err


def test_a_model_version_from_the_environment_is_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CT_MODEL_VERSION", "abc")
    assert main(["serve", "--home", str(tmp_path), "--port", "0"]) == 1
    assert "ct serve: environment CT_MODEL_VERSION='abc': expected a model version" in capsys.readouterr().err


def test_months_outside_the_bundled_data_write_nothing(tmp_path, capsys):
    assert main(["data", "flights", "--dest", str(tmp_path / "d"), "--months", "2013-12..2014-01"]) == 1
    assert "ct data: --months: no flights in 2014-01; the bundled data covers 2013-01..2013-12" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "d").exists()


def test_a_destination_that_cannot_be_written_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["data", "penguins", "--dest", str(tmp_path / "file" / "d"), "--years", "2007"]) == 1
    assert f"ct data: {tmp_path / 'file' / 'd'}" in capsys.readouterr().err


def test_malformed_trigger_configuration_is_named(tmp_path, capsys):
    path = tmp_path / "triggers.yaml"
    path.write_text("home: [h\n")
    assert main(["watch", "--config", str(path)]) == 1
    assert f"ct watch: {path}: not valid YAML at line 2" in capsys.readouterr().err


@pytest.mark.parametrize("last", ["0", "-3", "ten"])
def test_ct_runs_shows_a_positive_number_of_runs(tmp_path, capsys, last):
    with pytest.raises(SystemExit) as exit_:
        main(["runs", "--home", str(tmp_path), "--last", last])
    assert exit_.value.code == 2
    assert f"argument --last: {last!r}: expected a number of runs, a positive integer" in capsys.readouterr().err


def test_the_command_line_starts_without_pandas():
    # `ct run` starts its step host once this import is done; pandas would hold it back 0.3 s.
    started = subprocess.run(
        [sys.executable, "-c", "import sys, pipelines.cli; print('pandas' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    assert started.stdout.strip() == "False"


@pytest.mark.parametrize("as_program, frozen", [(True, "True"), (False, "False")])
def test_only_the_program_leaves_its_objects_to_the_exit_uncollected(tmp_path, as_program, frozen):
    # As the `ct` program (no argv given) the process ends next; a caller of main() goes on.
    arguments = ["runs", "--home", str(tmp_path / "home")]
    call = "main()" if as_program else f"main({arguments!r})"
    ended = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import atexit, gc, sys; atexit.register(lambda: print(gc.get_freeze_count() > 0)); "
            f"sys.argv = ['ct', *{arguments!r}]; from pipelines.cli import main; sys.exit({call})",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert ended.returncode == 1 and ended.stdout.strip() == frozen, ended.stderr
