"""The dataset catalogue: one YAML file per dataset beside this module, each naming its
label, key, features, slices and the committed TFDV schema. Every layer reads only these
typed objects, so no code knows anything about a particular dataset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from components.common.errors import ConfigError

DATASETS_DIR = Path(__file__).parent
DEFAULT_DATASET = "flights"


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """What the pipeline needs to know about one dataset.

    Attributes:
        name: Dataset name, also the key of its YAML file.
        model_name: Name of the model in the model repository and ML Metadata.
        label: Label column.
        positive_label: The label value counted as the positive class.
        key: Column hashed for the train/eval split (the hash split, and the time split's
            tie-breaker); empty to hash the whole row.
        categorical_features: Features looked up in a vocabulary (strings or integer codes).
        numeric_features: Features normalized as floats (missing values imputed).
        slice_features: Features whose values define evaluation slices.
        schema_path: The committed, reviewed TFDV schema.
        feature_store: Spans carry entity columns only; ingest joins the feature store's
            tables (`<data root>/features/`) and the service looks them up online.
        event_time: Column of each row's event time (ISO-8601, UTC unless it carries an
            offset): ingest's time split orders each span's rows by it and takes the newest
            for eval. Empty: none; a span's rows are then ordered by the hash of the key.
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
    event_time: str = ""

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
        event_time=str(raw.get("event_time") or ""),
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
