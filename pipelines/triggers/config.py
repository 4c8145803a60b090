"""`ct watch` settings (triggers.yaml): what each trigger watches and when it fires."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.common.datasets import DEFAULT_DATASET, load_dataset
from components.common.errors import ConfigError
from components.common.spans import Location, data_location
from pipelines.config import check_parameter_values, parse_parameters
from pipelines.local_run import pipeline_parameters
from pipelines.retention import RetentionSettings
from pipelines.triggers.calibration import minimum_resamples
from pipelines.triggers.cron import parse_cron
from serving.config import KServeRollout


@dataclasses.dataclass(frozen=True)
class NewDataSettings:
    """Fires when at least `min_new_spans` complete spans arrived since the last run."""

    min_new_spans: int = 1

    def __post_init__(self):
        _at_least(self, "min_new_spans", 1)


@dataclasses.dataclass(frozen=True)
class PerformanceSettings:
    """Fires when the production model's online AUC (from feedback) over its last `window`
    labelled predictions is below `min_auc` with `confidence` (its upper one-sided bound is
    below), once there are `min_samples` of them."""

    serving_url: str = "http://127.0.0.1:8501"
    min_auc: float = 0.65
    window: int = 1000
    min_samples: int = 200
    confidence: float = 0.95

    def __post_init__(self):
        if not 0 <= self.min_auc <= 1:
            raise ConfigError(f"min_auc={self.min_auc}: expected 0..1")
        _at_least(self, "window", 1)
        _at_least(self, "min_samples", 1)
        if not 0.5 <= self.confidence < 1:  # also refuses NaN
            raise ConfigError(f"confidence={self.confidence}: expected 0.5 up to (not including) 1")


@dataclasses.dataclass(frozen=True)
class ShiftSettings:
    """Fires when logged serving traffic differs from the production model's training data
    (skew) or recent traffic from older traffic (drift), per feature, above a threshold and
    above what sampling noise alone reaches at `window_rows` rows.

    The noise thresholds are calibrated on `resamples` resamples of the reference at the
    window's size (calibration.py) so that a check of a steady stream fires falsely with
    probability at most `false_alarm_rate`, over all features, skew and drift together.
    """

    categorical_threshold: float = 0.1
    numeric_threshold: float = 0.1
    window_rows: int = 2000
    check_seconds: float = 10.0
    # Features that change with every span by design (a calendar month) would fire every time.
    ignore_features: tuple[str, ...] = ()
    false_alarm_rate: float = 0.05
    # At least 2 / false_alarm_rate - 1. A calibration costs resamples TFDV statistics of a
    # window (twice that for drift); it runs only when a feature passes its threshold, and
    # skew's is kept until the production version or the window size changes.
    resamples: int = 39
    # Processes computing a calibration's statistics: this one and (when more than 1) workers
    # started at the first calibration, each about 300 MiB with TFDV loaded, kept for the next.
    calibration_processes: int = 1

    def __post_init__(self):
        _at_least(self, "categorical_threshold", 0)
        _at_least(self, "numeric_threshold", 0)
        _at_least(self, "window_rows", 1)
        _at_least(self, "check_seconds", 0)
        _at_least(self, "calibration_processes", 1)
        if not 0 < self.false_alarm_rate < 1:  # also refuses NaN
            raise ConfigError(f"false_alarm_rate={self.false_alarm_rate}: expected between 0 and 1 (both excluded)")
        if not self.resamples >= minimum_resamples(self.false_alarm_rate):
            raise ConfigError(
                f"resamples={self.resamples}: must be at least {minimum_resamples(self.false_alarm_rate)} "
                f"for false_alarm_rate={self.false_alarm_rate:g}"
            )


@dataclasses.dataclass(frozen=True)
class TriggerConfig:
    """`ct watch` configuration (triggers.yaml). A trigger section left out is off; manual is always on."""

    home: Path
    data_root: Location  # a folder or an s3:// URI
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
    # Set: `ct gc` with these settings after every successful run (left out: never automatically).
    retention: RetentionSettings | None = None

    def __post_init__(self):
        if not self.poll_seconds > 0:
            raise ConfigError(f"poll_seconds={self.poll_seconds}: must be positive")
        _at_least(self, "cooldown_seconds", 0)


def _at_least(settings: object, name: str, minimum: float) -> None:
    if not getattr(settings, name) >= minimum:  # also refuses NaN
        raise ConfigError(f"{name}={getattr(settings, name)}: must be at least {minimum}")


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
        "retention": RetentionSettings,
    }
    values: dict[str, Any] = {}
    given_in: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such trigger configuration")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(error, "problem", None) or error
            raise ConfigError(f"{path}: not valid YAML{line}: {problem}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the trigger configuration: {error}") from None
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
            elif key == "home":
                values[key] = Path(value)
            elif key == "data_root":
                try:
                    values[key] = data_location(value)
                except ConfigError as error:
                    raise ConfigError(f"{path}: data_root: {error}") from None
            elif key in {f.name for f in dataclasses.fields(TriggerConfig)}:
                values[key] = _checked_type(path, key, value, _DEFAULTS[key])
            else:
                raise ConfigError(
                    f"{path}: unknown key {key!r}; "
                    f"known: {', '.join(f.name for f in dataclasses.fields(TriggerConfig))}"
                )
    for key in ("home", "data_root"):
        if key not in values:
            raise ConfigError(f"{', '.join(map(str, paths))}: missing key {key!r}")
    try:
        config = TriggerConfig(**values)
    except ConfigError as error:
        raise ConfigError(f"{', '.join(map(str, paths))}: {error}") from None
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
        default = getattr(kind(), name)
        if type(default) is tuple and isinstance(value, list):
            raw = {**raw, name: tuple(value)}
        elif dataclasses.is_dataclass(default):  # a nested section (kserve_rollout.canary_test)
            raw = {**raw, name: _section(path, f"{key}.{name}", type(default), value)}
        else:
            _checked_type(path, f"{key}.{name}", value, getattr(kind(), name))
    try:
        return kind(**raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {key}.{error}") from None


_DEFAULTS = {
    f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
    for f in dataclasses.fields(TriggerConfig)
    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
}


def _checked_type(path: Path, key: str, value: Any, default: Any) -> Any:
    """The value if it has its default's type (an int where a float is expected is fine; bool is not a number)."""
    expected = type(default)
    if default is None or isinstance(default, dict) and isinstance(value, dict):
        return value
    if isinstance(value, bool) != (expected is bool) or not (
        isinstance(value, expected) or (expected is float and isinstance(value, int))
    ):
        raise ConfigError(f"{path}: {key}={value!r}: expected {expected.__name__}")
    return value


def load_checked_trigger_config(*paths: Path) -> TriggerConfig:
    """triggers.yaml, with its pipeline parameters checked against the pipeline's declared types
    and their stages' ranges.

    A cluster run (`kfp_host`) is given the paths `ct run` would set itself (data_root,
    model_repository, ...), so those are allowed there.
    """
    config = load_trigger_config(*paths)
    declarations = pipeline_parameters(include_wired=bool(config.kfp_host))
    given = parse_parameters(
        [f"{k}={v}" for k, v in config.parameters.items()], {name: kind for name, (kind, _) in declarations.items()}
    )
    check_parameter_values(given, {name: default for name, (_, default) in declarations.items()})
    return config
