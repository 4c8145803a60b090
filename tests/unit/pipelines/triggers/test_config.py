"""triggers.yaml is checked: keys, types, files that add settings, the pipeline's parameters."""

from __future__ import annotations

import pytest

from components.common.errors import ConfigError
from pipelines.triggers.config import (
    load_checked_trigger_config,
    load_trigger_config,
)
from tests.support import PROJECT_ROOT


def test_trigger_config_is_checked(tmp_path):
    path = tmp_path / "triggers.yaml"
    path.write_text(
        "home: h\ndata_root: d\nschedule: '0 3 * * *'\nnew_data: {min_new_spans: 2}\n"
        "performance: {min_auc: 0.7}\ndistribution_shift: {}\n"
    )
    config = load_trigger_config(path)
    assert config.new_data.min_new_spans == 2 and config.performance.min_auc == 0.7 and config.distribution_shift
    for text, message in [
        ("home: h\n", "missing key 'data_root'"),
        ("home: h\ndata_root: d\nevery: 3\n", "unknown key 'every'"),
        ("home: h\ndata_root: d\nperformance: {min_auc: high}\n", "performance.min_auc='high': expected float"),
        ("home: h\ndata_root: d\nnew_data: {spans: 2}\n", "new_data.spans: unknown key"),
        ("home: h\ndata_root: d\nschedule: 'every day'\n", "schedule: cron 'every day': expected 5 fields"),
        ("home: [h\n", "triggers.yaml: not valid YAML at line 2, column 1: expected ',' or ']'"),
        ("home: h\ndata_root: d\npoll_seconds: fast\n", "triggers.yaml: poll_seconds='fast': expected float"),
        ("home: h\ndata_root: d\npoll_seconds: -1\n", "triggers.yaml: poll_seconds=-1: must be positive"),
        ("home: h\ndata_root: d\ncooldown_seconds: true\n", "cooldown_seconds=True: expected float"),
        ("home: h\ndata_root: d\nparameters: [epochs]\n", "parameters=\\['epochs'\\]: expected dict"),
        ("home: h\ndata_root: d\nnew_data: {min_new_spans: 0}\n", "new_data.min_new_spans=0: must be at least 1"),
        ("home: h\ndata_root: d\nperformance: {min_auc: 2}\n", "performance.min_auc=2: expected 0..1"),
        ("home: h\ndata_root: d\nperformance: {confidence: 1}\n", "performance.confidence=1: expected 0.5 up"),
        (
            "home: h\ndata_root: d\nkserve_rollout: {canary_test: {worse_auc: 0}}\n",
            "kserve_rollout.canary_test.worse_auc=0: expected between 0 and 1",
        ),
        (
            "home: h\ndata_root: d\nkserve_rollout: {canary_test: {tolerance: 0.1}}\n",
            "kserve_rollout.canary_test.tolerance: unknown key",
        ),
        ("home: h\ndata_root: d\ndistribution_shift: {window_rows: 0}\n", "distribution_shift.window_rows=0"),
        (
            "home: h\ndata_root: d\ndistribution_shift: {false_alarm_rate: 0}\n",
            "distribution_shift.false_alarm_rate=0: expected between 0 and 1",
        ),
        (
            "home: h\ndata_root: d\ndistribution_shift: {false_alarm_rate: 0.01}\n",
            "distribution_shift.resamples=39: must be at least 199 for false_alarm_rate=0.01",
        ),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_trigger_config(path)


def test_trigger_config_can_come_from_several_files_without_overrides(tmp_path):
    (tmp_path / "triggers.yaml").write_text("home: h\ndata_root: d\n")
    (tmp_path / "kserve.yaml").write_text("kserve_rollout: {canary_percent: 5, canary_test: {max_labelled: 900}}\n")
    config = load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "kserve.yaml")
    assert config.kserve_rollout.canary_percent == 5 and config.kserve_rollout.name == "ct-predictor"
    assert (
        config.kserve_rollout.canary_test.max_labelled == 900 and config.kserve_rollout.canary_test.min_labelled == 200
    )
    (tmp_path / "again.yaml").write_text("data_root: elsewhere\n")
    with pytest.raises(ConfigError, match=r"again.yaml: 'data_root' is set in .*triggers.yaml already"):
        load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "again.yaml")
    # Pipeline parameters add up across files; the same parameter twice is refused.
    (tmp_path / "triggers.yaml").write_text("home: h\ndata_root: d\nparameters: {epochs: 3}\n")
    (tmp_path / "storage.yaml").write_text("parameters: {feature_tables: 's3://b/t'}\n")
    config = load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "storage.yaml")
    assert config.parameters == {"epochs": 3, "feature_tables": "s3://b/t"}
    (tmp_path / "storage.yaml").write_text("parameters: {epochs: 4}\n")
    with pytest.raises(ConfigError, match=r"storage.yaml: parameter 'epochs' is set in .*triggers.yaml already"):
        load_trigger_config(tmp_path / "triggers.yaml", tmp_path / "storage.yaml")


def test_the_clusters_trigger_configuration_is_valid():
    config = load_checked_trigger_config(PROJECT_ROOT / "manifests" / "base" / "triggers.yaml")
    assert config.kfp_host and config.parameters["data_root"] == "/var/lib/ct/data"


def test_a_local_trigger_configuration_may_not_set_what_ct_run_sets(tmp_path):
    path = tmp_path / "triggers.yaml"
    path.write_text("home: h\ndata_root: d\nparameters: {data_root: /elsewhere}\n")
    with pytest.raises(ConfigError, match="--param data_root: unknown parameter"):
        load_checked_trigger_config(path)
    path.write_text("home: h\ndata_root: d\nparameters: {epochs: many}\n")
    with pytest.raises(ConfigError, match="epochs='many': expected int"):
        load_checked_trigger_config(path)


def test_pipeline_parameters_out_of_range_are_refused_when_the_controller_starts(tmp_path):
    path = tmp_path / "triggers.yaml"
    path.write_text("home: h\ndata_root: d\nparameters: {epochs: 0}\n")
    with pytest.raises(ConfigError, match="epochs=0: must be at least 1"):
        load_checked_trigger_config(path)


def test_retention_after_each_run_is_off_unless_set_and_its_settings_are_checked(tmp_path):
    path = tmp_path / "triggers.yaml"
    path.write_text("home: h\ndata_root: d\n")
    assert load_trigger_config(path).retention is None
    path.write_text("home: h\ndata_root: d\nretention: {keep_runs: 5}\n")
    assert (load_trigger_config(path).retention.keep_runs, load_trigger_config(path).retention.keep_models) == (5, 3)
    path.write_text("home: h\ndata_root: d\nretention: {keep_models: -1}\n")
    with pytest.raises(ConfigError, match=r"triggers.yaml: retention.keep_models=-1: expected a whole number"):
        load_trigger_config(path)
