"""The `ct` command's own checks; runs of the pipeline itself are in tests/integration."""

import pytest

from pipelines.cli import main


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
    ],
)
def test_bad_param_is_refused_before_anything_runs(tmp_path, capsys, param, message):
    assert main(["run", "--data-root", str(tmp_path), "--home", str(tmp_path / "home"), "--param", param]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_missing_data_root_is_named(tmp_path, capsys):
    assert main(["run", "--data-root", str(tmp_path / "nowhere"), "--home", str(tmp_path / "home")]) == 2
    assert f"{tmp_path / 'nowhere'}: data root does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["runs", "lineage"])
def test_reading_a_home_where_nothing_ran_says_so(tmp_path, capsys, command):
    assert main([command, "--home", str(tmp_path / "home")]) == 1
    assert "metadata.sqlite: no ML Metadata store (nothing has run with --home" in capsys.readouterr().err
