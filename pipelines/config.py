"""Typed configuration: the one place that reads YAML and the environment.

Dataset configs live beside this module in `datasets/<name>.yaml`; each names its
label, key, features, slices and the committed TFDV schema. The pipeline code reads
only these typed objects, so it knows nothing about any particular dataset.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

DATASETS_DIR = Path(__file__).parent / "datasets"
DEFAULT_DATASET = "flights"
DEFAULT_HOME = Path(".ct")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """What the pipeline needs to know about one dataset.

    Attributes:
        name: Dataset name, also the key of its YAML file.
        model_name: Name of the model in the model repository and ML Metadata.
        label: Label column.
        positive_label: The label value counted as the positive class.
        key: Column hashed for the train/eval split; empty to hash the whole row.
        categorical_features: Features looked up in a vocabulary (strings or integer codes).
        numeric_features: Features normalized as floats (missing values imputed).
        slice_features: Features whose values define evaluation slices.
        schema_path: The committed, reviewed TFDV schema.
        feature_store: Spans carry entity columns only; ingest joins the feature store's
            tables (`<data root>/features/`) and the service looks them up online.
    """

    name: str
    model_name: str
    label: str
    positive_label: str | int
    key: str
    categorical_features: tuple[str, ...]
    numeric_features: tuple[str, ...]
    slice_features: tuple[str, ...]
    schema_path: Path
    feature_store: bool = False

    @property
    def features(self) -> tuple[str, ...]:
        return self.categorical_features + self.numeric_features


def available_datasets() -> list[str]:
    return sorted(p.stem for p in DATASETS_DIR.glob("*.yaml"))


def load_dataset(name: str) -> DatasetConfig:
    """Loads and validates `datasets/<name>.yaml`.

    Raises:
        ConfigError: unknown dataset, missing key, or features that overlap or are undeclared.
    """
    path = DATASETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"dataset: unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    raw = yaml.safe_load(path.read_text()) or {}
    required = ("model_name", "label", "positive_label", "categorical_features", "numeric_features", "schema")
    for key in required:
        if key not in raw:
            raise ConfigError(f"{path}: missing key {key!r}")
    config = DatasetConfig(
        name=name,
        model_name=str(raw["model_name"]),
        label=str(raw["label"]),
        positive_label=raw["positive_label"],
        key=str(raw.get("key", "")),
        categorical_features=tuple(raw["categorical_features"]),
        numeric_features=tuple(raw["numeric_features"]),
        slice_features=tuple(raw.get("slice_features", ())),
        schema_path=DATASETS_DIR / raw["schema"],
        feature_store=bool(raw.get("feature_store", False)),
    )
    overlap = set(config.categorical_features) & set(config.numeric_features)
    if overlap:
        raise ConfigError(f"{path}: features both categorical and numeric: {sorted(overlap)}")
    if config.label in config.features:
        raise ConfigError(f"{path}: label {config.label!r} is also listed as a feature")
    unknown_slices = set(config.slice_features) - set(config.features)
    if unknown_slices:
        raise ConfigError(f"{path}: slice_features not among the features: {sorted(unknown_slices)}")
    return config


@dataclasses.dataclass(frozen=True)
class Home:
    """Where an installation keeps its state.

    Attributes:
        root: The home folder (a volume in a cluster).
        metadata: An ML Metadata connection (`grpc://host:port` in a cluster); empty for
            the SQLite file in the home folder.
    """

    root: Path
    metadata: str = ""

    @property
    def metadata_path(self) -> Path:
        return self.root / "metadata.sqlite"

    @property
    def metadata_connection(self) -> str:
        return self.metadata or f"sqlite:///{self.metadata_path.resolve()}"

    @property
    def pipeline_root(self) -> Path:
        return self.root / "pipeline_root"

    @property
    def model_repository(self) -> Path:
        return self.root / "models"

    @property
    def feature_repo(self) -> Path:
        """Feast's registry and configuration (and the SQLite online store, locally)."""
        return self.root / "feature_repo"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def request_log(self) -> Path:
        return self.root / "request_log"

    @property
    def feedback_log(self) -> Path:
        """True outcomes received as feedback (request id, label), for judges outside the service."""
        return self.root / "feedback_log"

    @property
    def triggers(self) -> Path:
        """Where `ct trigger` leaves manual run requests for `ct watch`."""
        return self.root / "triggers"

    def create(self) -> "Home":
        for path in (self.root, self.pipeline_root, self.model_repository, self.logs, self.request_log, self.feedback_log):
            path.mkdir(parents=True, exist_ok=True)
        return self


def parse_parameters(assignments: list[str], declared: Mapping[str, type]) -> dict[str, Any]:
    """Parses `name=value` pairs against the pipeline's declared parameter types.

    Args:
        assignments: The `--param` values as typed by the user.
        declared: Parameter name -> Python type (str, int, float, bool).

    Returns:
        Name -> value converted to the declared type.

    Raises:
        ConfigError: no `=`, an unknown name, or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"--param {assignment!r}: expected name=value")
        if name not in declared:
            raise ConfigError(f"--param {name}: unknown parameter; known: {', '.join(sorted(declared))}")
        values[name] = _convert(name, text, declared[name])
    return values


def _convert(name: str, text: str, kind: type) -> Any:
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind in (int, float, str):
            return kind(text)
        return json.loads(text)
    except ValueError:
        raise ConfigError(f"--param {name}={text!r}: expected {kind.__name__}") from None


MODEL_VERSION_ENV = "CT_MODEL_VERSION"  # pins `ct serve` to one model version (a KServe revision)


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """How the prediction service routes, judges canaries, logs and protects itself.

    Attributes:
        canary_percent: Share of traffic (by request key) a new version gets while it is the canary.
        canary_min_labelled: Labelled predictions each of stable and canary needs before a verdict.
        canary_auc_tolerance: How much lower than stable the canary's online AUC may be and still be promoted.
        canary_max_error_rate: Share of failed predictions above which the canary is rolled back at once.
        poll_seconds: How often the model repository is checked for new versions.
        request_log_sample: Share of predictions written to the request log (0 turns it off).
        request_log_rotate_rows: Rows per request-log Parquet file.
        request_log_max_bytes: Size of the request log beyond which the oldest files are deleted.
        max_body_bytes: Largest request body accepted.
        journal_size: Predictions remembered for feedback (oldest forgotten first).
        pinned_version: Serve this version only, with no canary of our own (a KServe
            revision; KServe splits traffic between revisions). None: follow the repository.
    """

    canary_percent: int = 20
    canary_min_labelled: int = 200
    canary_auc_tolerance: float = 0.02
    canary_max_error_rate: float = 0.01
    poll_seconds: float = 0.5
    request_log_sample: float = 1.0
    request_log_rotate_rows: int = 20_000
    request_log_max_bytes: int = 256 * 1024 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    journal_size: int = 1_000_000
    pinned_version: int | None = None

    def __post_init__(self):
        if not 0 <= self.canary_percent <= 100:
            raise ConfigError(f"canary_percent={self.canary_percent}: expected 0..100")
        if not 0 <= self.request_log_sample <= 1:
            raise ConfigError(f"request_log_sample={self.request_log_sample}: expected 0..1")
        for name in ("canary_min_labelled", "request_log_rotate_rows", "request_log_max_bytes", "max_body_bytes",
                     "journal_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.poll_seconds <= 0:
            raise ConfigError(f"poll_seconds={self.poll_seconds}: must be positive")


@dataclasses.dataclass(frozen=True)
class NewDataTrigger:
    """Fires when at least `min_new_spans` complete spans arrived since the last run."""

    min_new_spans: int = 1


@dataclasses.dataclass(frozen=True)
class PerformanceTrigger:
    """Fires when the production model's online AUC (from feedback) over its last `window`
    labelled predictions is below `min_auc`, once there are `min_samples` of them."""

    serving_url: str = "http://127.0.0.1:8501"
    min_auc: float = 0.65
    window: int = 1000
    min_samples: int = 200


@dataclasses.dataclass(frozen=True)
class ShiftTrigger:
    """Fires when logged serving traffic differs from the production model's training data
    (skew) or recent traffic from older traffic (drift), per feature, above a threshold."""

    categorical_threshold: float = 0.1
    numeric_threshold: float = 0.1
    window_rows: int = 2000
    check_seconds: float = 10.0
    # Features that change with every span by design (a calendar month) would fire every time.
    ignore_features: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class KServeRollout:
    """Serving on KServe: each pushed version is deployed to the InferenceService as a
    canary (pipelines/rollout.py) and, after `bake_seconds`, rolled back if not Ready, else
    promoted or rolled back on online AUC as the in-process canary is (ServingConfig), from
    the shared request and feedback logs, checked every `check_seconds`."""

    namespace: str = "ct"
    name: str = "ct-predictor"
    canary_percent: int = 10
    bake_seconds: float = 600.0
    check_seconds: float = 60.0
    min_labelled: int = ServingConfig.canary_min_labelled
    auc_tolerance: float = ServingConfig.canary_auc_tolerance


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
    new_data: NewDataTrigger | None = None
    performance: PerformanceTrigger | None = None
    distribution_shift: ShiftTrigger | None = None
    kserve_rollout: KServeRollout | None = None


def load_trigger_config(*paths: Path) -> TriggerConfig:
    """Reads and checks triggers.yaml (and more files adding settings, e.g. the KServe
    overlay's `kserve_rollout`); paths in them are relative to the current folder.

    Raises:
        ConfigError: a missing file, an unknown, repeated or missing key, a value of the wrong type.
    """
    sections = {"new_data": NewDataTrigger, "performance": PerformanceTrigger, "distribution_shift": ShiftTrigger,
                "kserve_rollout": KServeRollout}
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
                raise ConfigError(f"{path}: unknown key {key!r}; "
                                  f"known: {', '.join(f.name for f in dataclasses.fields(TriggerConfig))}")
    for key in ("home", "data_root"):
        if key not in values:
            raise ConfigError(f"{', '.join(map(str, paths))}: missing key {key!r}")
    config = TriggerConfig(**values)
    load_dataset(config.dataset)
    if config.schedule:
        from pipelines.triggers.cron import parse_cron

        try:
            parse_cron(config.schedule)
        except ValueError as error:
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
