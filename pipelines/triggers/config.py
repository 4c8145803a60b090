"""`ct watch` settings (triggers.yaml): what each trigger watches and when it fires."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.common.datasets import DEFAULT_DATASET, load_dataset
from components.common.errors import ConfigError
from pipelines.config import parse_parameters
from pipelines.local_run import pipeline_parameters
from pipelines.triggers.cron import parse_cron
from serving.config import KServeRollout


@dataclasses.dataclass(frozen=True)
class NewDataSettings:
    """Fires when at least `min_new_spans` complete spans arrived since the last run."""

    min_new_spans: int = 1


@dataclasses.dataclass(frozen=True)
class PerformanceSettings:
    """Fires when the production model's online AUC (from feedback) over its last `window`
    labelled predictions is below `min_auc`, once there are `min_samples` of them."""

    serving_url: str = "http://127.0.0.1:8501"
    min_auc: float = 0.65
    window: int = 1000
    min_samples: int = 200


@dataclasses.dataclass(frozen=True)
class ShiftSettings:
    """Fires when logged serving traffic differs from the production model's training data
    (skew) or recent traffic from older traffic (drift), per feature, above a threshold."""

    categorical_threshold: float = 0.1
    numeric_threshold: float = 0.1
    window_rows: int = 2000
    check_seconds: float = 10.0
    # Features that change with every span by design (a calendar month) would fire every time.
    ignore_features: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TriggerConfig:
    """`ct watch` configuration (triggers.yaml). A trigger section left out is off; manual is always on."""

    home: Path
    data_root: Path
    dataset: str = DEFAULT_DATASET
    metadata: str = ""
    # With a KFP API, runs are submitted there (as `ct submit` does) instead of `ct run` here.
    kfp_host: str = ""
    kfp_namespace: str = ""
    kfp_experiment: str = "continuous-training"
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    poll_seconds: float = 0.5
    cooldown_seconds: float = 60.0
    schedule: str = ""
    new_data: NewDataSettings | None = None
    performance: PerformanceSettings | None = None
    distribution_shift: ShiftSettings | None = None
    kserve_rollout: KServeRollout | None = None


def load_trigger_config(*paths: Path) -> TriggerConfig:
    """Reads and checks triggers.yaml (and more files adding settings, e.g. the KServe
    overlay's `kserve_rollout`); paths in them are relative to the current folder.

    Raises:
        ConfigError: a missing file, an unknown, repeated or missing key, a value of the wrong type.
    """
    sections = {
        "new_data": NewDataSettings,
        "performance": PerformanceSettings,
        "distribution_shift": ShiftSettings,
        "kserve_rollout": KServeRollout,
    }
    values: dict[str, Any] = {}
    given_in: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such trigger configuration")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        for key, value in raw.items():
            if key == "parameters" and isinstance(value, dict):  # each file may add pipeline parameters
                repeated = sorted(set(value) & set(values.get(key, {})))
                if repeated:
                    raise ConfigError(f"{path}: parameter {repeated[0]!r} is set in {given_in[key]} already")
                value = {**values.get(key, {}), **value}
            elif key in given_in:
                raise ConfigError(f"{path}: {key!r} is set in {given_in[key]} already")
            given_in[key] = path
            if key in sections:
                values[key] = _section(path, key, sections[key], value or {})
            elif key in ("home", "data_root"):
                values[key] = Path(value)
            elif key in {f.name for f in dataclasses.fields(TriggerConfig)}:
                values[key] = value
            else:
                raise ConfigError(
                    f"{path}: unknown key {key!r}; "
                    f"known: {', '.join(f.name for f in dataclasses.fields(TriggerConfig))}"
                )
    for key in ("home", "data_root"):
        if key not in values:
            raise ConfigError(f"{', '.join(map(str, paths))}: missing key {key!r}")
    config = TriggerConfig(**values)
    load_dataset(config.dataset)
    if config.schedule:
        try:
            parse_cron(config.schedule)
        except ConfigError as error:
            raise ConfigError(f"{given_in['schedule']}: schedule: {error}") from None
    return config


def _section(path: Path, key: str, kind: type, raw: Any):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {key}: expected a mapping")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    for name, value in raw.items():
        if name not in fields:
            raise ConfigError(f"{path}: {key}.{name}: unknown key; known: {', '.join(fields)}")
        expected = type(getattr(kind(), name))
        if expected is tuple and isinstance(value, list):
            raw = {**raw, name: tuple(value)}
        elif not isinstance(value, expected) and not (expected is float and isinstance(value, int)):
            raise ConfigError(f"{path}: {key}.{name}={value!r}: expected {expected.__name__}")
    return kind(**raw)


def load_checked_trigger_config(*paths: Path) -> TriggerConfig:
    """triggers.yaml, with its pipeline parameters checked against the pipeline's declared types.

    A cluster run (`kfp_host`) is given the paths `ct run` would set itself (data_root,
    model_repository, ...), so those are allowed there.
    """
    config = load_trigger_config(*paths)
    declared = {name: kind for name, (kind, _) in pipeline_parameters(include_wired=bool(config.kfp_host)).items()}
    parse_parameters([f"{k}={v}" for k, v in config.parameters.items()], declared)
    return config
