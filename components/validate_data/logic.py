"""Data validation: schema skew stops the pipeline; drift is measured, recorded and shown.

Schema skew (a missing or unexpected feature, a changed type, unexpected categorical
values beyond the schema's tolerance, too many missing values, numeric values outside
the schema's domain) means downstream steps would train on data they do not expect, so
the run stops before training. TFDV validates statistics, which say that a column is new
or a value out of range but not where: `locate_values` reads that one column of the data
files to name the file, values and row. Drift, a
change in the distribution against the previous span, is a reason to retrain, not to
stop: it is measured per feature (L-infinity for categorical features, Jensen-Shannon
divergence for numeric ones) and reported.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from components.common.reports import markdown_table
from components.common.spans import parquet_files

L_INFINITY = "L-infinity"
JENSEN_SHANNON = "Jensen-Shannon"
# Presence a partly missing feature may lose against its sparsest span in the data the schema was inferred from.
MISSING_VALUE_MARGIN = 0.05
# Share of a categorical feature's values that must be in the schema's domain.
MIN_DOMAIN_MASS = 0.99
# How far `ct schema infer` widens a numeric feature's observed range into the domain it
# proposes, as a share of the range's width on each side (never below 0 when no value was
# negative). One month's extremes are not bounds: a reviewer replaces the proposal with
# physical or business limits.
DOMAIN_MARGIN = 0.5
# How many offending values an anomaly names.
SAMPLE_VALUES = 3
SERVING = "SERVING"
TRAINING = "TRAINING"


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """A schema violation in one split.

    Attributes:
        split: The splits it was found in, e.g. `train, eval`.
        feature: The feature (empty for dataset-level anomalies such as no rows).
        kind: TFDV's short description, e.g. "Unexpected string values".
        description: TFDV's full description; for unexpected values it lists them.
        value: A value seen in the data that shows the problem, if the statistics have one;
            once located, the offending values as written in the data, e.g. `99999.0, -5.0`.
        file: The data file holding them, once located (`locate_values`).
        row: The key of the first row holding them, e.g. `flight_id '2013-01-01/UA1545/EWR/515'`.
    """

    split: str
    feature: str
    kind: str
    description: str
    value: str = ""
    file: str = ""
    row: str = ""

    def message(self) -> str:
        text = (
            f"feature '{self.feature}': {self.kind}: {self.description}"
            if self.feature
            else f"{self.kind}: {self.description}"
        )
        if self.file:
            at = f", {self.row}" if self.row else ""
            return f"{text} (value {self.value} in {self.file}{at})"
        return f"{text} (value {self.value!r})" if self.value else text


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    feature: str
    measure: str
    value: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.value > self.threshold


@dataclasses.dataclass(frozen=True)
class DataValidation:
    """The verdict on one window of data.

    Attributes:
        anomalies: Schema violations; any one stops the run.
        drift: Per-feature drift against the baseline; empty without a baseline.
        baseline: What drift was measured against (e.g. "span 2013-01"), empty on the first span.
    """

    anomalies: tuple[Anomaly, ...]
    drift: tuple[FeatureDrift, ...]
    baseline: str

    @property
    def passed(self) -> bool:
        return not self.anomalies

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(d.feature for d in self.drift if d.drifted)

    def markdown(self) -> str:
        """The report shown in the Kubeflow UI."""
        lines = ["## Data validation", ""]
        if self.anomalies:
            lines.append(f"**Stopped: {len(self.anomalies)} schema anomalies.**")
            lines += [
                "",
                markdown_table(
                    ("split", "feature", "anomaly", "description", "value", "where"),
                    [
                        (a.split, a.feature, a.kind, a.description, a.value, " ".join(filter(None, (a.file, a.row))))
                        for a in self.anomalies
                    ],
                ),
            ]
        else:
            lines.append("No schema anomalies.")
        lines += ["", "## Drift", ""]
        if not self.baseline:
            lines.append("No previous span to compare with: drift not measured.")
        else:
            lines.append(f"Against {self.baseline}; drifted: {', '.join(self.drifted_features) or 'none'}.")
            lines += [
                "",
                markdown_table(
                    ("feature", "measure", "value", "threshold", "drifted"),
                    [
                        (d.feature, d.measure, f"{d.value:.4f}", f"{d.threshold:g}", "yes" if d.drifted else "no")
                        for d in self.drift
                    ],
                ),
            ]
        return "\n".join(lines) + "\n"


def infer_schema(
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    categorical_features: Sequence[str],
    label: str,
    span_statistics: Sequence[statistics_pb2.DatasetFeatureStatisticsList] = (),
    known_columns: Sequence[str] = (),
) -> schema_pb2.Schema:
    """A schema to review and commit, with tolerances that real data needs.

    Beyond TFDV's inference: integer categorical features are marked categorical (so
    their value distribution is tracked and compared with L-infinity); a partly missing
    feature may be present `MISSING_VALUE_MARGIN` less often than in its sparsest span
    (given `span_statistics`, else than in `statistics`) before it is an anomaly, so a
    seasonal dip (fewer gusty hours in summer) is not one; a categorical feature may have
    `1 - MIN_DOMAIN_MASS` of values outside its domain; the label is not expected at
    serving time. Each numeric feature gets a proposed domain: its observed range widened
    by `DOMAIN_MARGIN` (Inf refused), the label's exactly its observed values (TFDV does
    not check a `bool_domain` on integers, so 0/1 becomes `int_domain` 0..1).

    Args:
        known_columns: The key, features and label; any other column seen is declared as
            one that may appear (presence `min_count: 0`), which training ignores. Empty:
            every column is treated as known.
    """
    schema = tfdv.infer_schema(statistics)
    present: dict[tuple[str, ...], float] = {}
    for each in span_statistics or [statistics]:
        dataset = each.datasets[0]
        for f in dataset.features:
            fraction = _present_fraction(f, dataset.num_examples)
            present[tuple(f.path.step)] = min(fraction, present.get(tuple(f.path.step), 1.0))
    ranges = {
        ".".join(f.path.step): (f.num_stats.min, f.num_stats.max)
        for f in statistics.datasets[0].features
        if f.HasField("num_stats")
    }
    schema.default_environment.extend([TRAINING, SERVING])
    for feature in schema.feature:
        fraction = present.get((feature.name,), 1.0)
        if fraction < 1.0:
            feature.presence.min_fraction = max(0.0, round(fraction - MISSING_VALUE_MARGIN, 2))
        if feature.name in categorical_features:
            if feature.type == schema_pb2.INT:
                feature.int_domain.is_categorical = True
            if feature.HasField("domain"):
                feature.distribution_constraints.min_domain_mass = MIN_DOMAIN_MASS
        if feature.name in ranges:
            _propose_domain(feature, *ranges[feature.name], margin=0.0 if feature.name == label else DOMAIN_MARGIN)
        if feature.name == label:
            feature.not_in_environment.append(SERVING)
        if known_columns and feature.name not in known_columns:
            declare_may_appear(feature)
    return schema


def declare_may_appear(feature: schema_pb2.Feature) -> None:
    """Marks a column that is not a feature as one that may appear in a span, or not: its
    type is still checked, its absence is not an anomaly, and training ignores it."""
    feature.presence.min_fraction = 0.0
    feature.presence.min_count = 0
    feature.ClearField("shape")


def columns_that_may_appear(schema: schema_pb2.Schema) -> list[str]:
    """The schema's columns whose absence is not an anomaly (presence `min_count: 0`)."""
    return [f.name for f in schema.feature if f.HasField("presence") and f.presence.min_count == 0]


def _propose_domain(feature: schema_pb2.Feature, low: float, high: float, margin: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        return
    width = (high - low) or abs(high) or 1.0
    lower = low - margin * width
    upper = high + margin * width
    if low >= 0:
        lower = max(lower, 0.0)
    if margin:  # round outward to two significant digits of the width, as a person would write it
        step = 10.0 ** (math.floor(math.log10(width)) - 1)
        lower, upper = math.floor(lower / step) * step, math.ceil(upper / step) * step
    if feature.type == schema_pb2.INT:
        categorical = feature.HasField("int_domain") and feature.int_domain.is_categorical
        feature.int_domain.min = math.floor(lower)  # also replaces a bool_domain, which TFDV ignores on INT
        feature.int_domain.max = math.ceil(upper)
        if categorical:
            feature.int_domain.is_categorical = True
    elif feature.type == schema_pb2.FLOAT:
        feature.float_domain.min = round(lower, 6)
        feature.float_domain.max = round(upper, 6)
        feature.float_domain.disallow_inf = True


def _present_fraction(feature: statistics_pb2.FeatureNameStatistics, rows: int) -> float:
    stats = feature.num_stats.common_stats if feature.HasField("num_stats") else feature.string_stats.common_stats
    return stats.num_non_missing / rows if rows else 0.0


def validate_data(
    statistics: Mapping[str, statistics_pb2.DatasetFeatureStatisticsList],
    schema: schema_pb2.Schema,
    categorical_features: Sequence[str],
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    baseline_name: str = "",
    categorical_threshold: float = 0.1,
    numeric_threshold: float = 0.1,
) -> DataValidation:
    """Validates each split against the schema and measures drift of the train split against the baseline.

    Args:
        statistics: Split name -> its statistics.
        schema: The dataset's committed schema.
        categorical_features: Features compared with L-infinity; all others with Jensen-Shannon.
        baseline: Statistics of the previous span's training data, or None on the first span.
        baseline_name: How to call the baseline in reports.
        categorical_threshold, numeric_threshold: Drift above these is flagged.
    """
    by_feature: dict[tuple[str, str], Anomaly] = {}
    for split, split_statistics in statistics.items():
        result = tfdv.validate_statistics(split_statistics, schema, environment=TRAINING)
        for anomaly in _anomalies(split, result, split_statistics, schema):
            # The same problem in both splits is one problem, seen in both.
            seen = by_feature.get((anomaly.feature, anomaly.kind))
            by_feature[(anomaly.feature, anomaly.kind)] = (
                dataclasses.replace(seen, split=f"{seen.split}, {split}") if seen else anomaly
            )
    anomalies = tuple(by_feature.values())
    drift: tuple[FeatureDrift, ...] = ()
    if baseline is not None and not anomalies:
        drift = measure_drift(
            statistics["train"], baseline, schema, categorical_features, categorical_threshold, numeric_threshold
        )
    return DataValidation(anomalies=anomalies, drift=drift, baseline=baseline_name if baseline is not None else "")


def measure_drift(
    current: statistics_pb2.DatasetFeatureStatisticsList,
    baseline: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    categorical_features: Sequence[str],
    categorical_threshold: float,
    numeric_threshold: float,
) -> tuple[FeatureDrift, ...]:
    """Per-feature distance of `current` from `baseline` (drift), with a comparator on every feature."""
    return _distances(
        current, baseline, schema, categorical_features, categorical_threshold, numeric_threshold, skew=False
    )


def measure_skew(
    training: statistics_pb2.DatasetFeatureStatisticsList,
    serving: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    categorical_features: Sequence[str],
    categorical_threshold: float,
    numeric_threshold: float,
) -> tuple[FeatureDrift, ...]:
    """Per-feature distance of serving traffic from the training data (training/serving skew).

    Only features present in the serving statistics are compared (the label never is).
    """
    served = {tuple(f.path.step) for f in serving.datasets[0].features}
    compared = statistics_pb2.DatasetFeatureStatisticsList()
    compared.CopyFrom(training)
    for dataset in compared.datasets:
        kept = [f for f in dataset.features if tuple(f.path.step) in served]
        del dataset.features[:]
        dataset.features.extend(kept)
    return _distances(
        compared, serving, schema, categorical_features, categorical_threshold, numeric_threshold, skew=True
    )


def _distances(
    current, other, schema, categorical_features, categorical_threshold, numeric_threshold, skew: bool
) -> tuple[FeatureDrift, ...]:
    present = {".".join(f.path.step) for f in other.datasets[0].features}
    compared = schema_pb2.Schema()
    compared.CopyFrom(schema)
    for feature in compared.feature:
        if feature.name not in present:
            continue
        comparator = feature.skew_comparator if skew else feature.drift_comparator
        if feature.name in categorical_features:
            comparator.infinity_norm.threshold = categorical_threshold
        elif feature.type in (schema_pb2.INT, schema_pb2.FLOAT):
            comparator.jensen_shannon_divergence.threshold = numeric_threshold
    if skew:
        result = tfdv.validate_statistics(current, compared, environment=SERVING, serving_statistics=other)
    else:
        result = tfdv.validate_statistics(current, compared, environment=TRAINING, previous_statistics=other)
    names = {
        anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: L_INFINITY,
        anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: JENSEN_SHANNON,
    }
    return tuple(
        FeatureDrift(".".join(info.path.step), names.get(m.type, str(m.type)), m.value, m.threshold)
        for info in result.drift_skew_info
        for m in (info.skew_measurements if skew else info.drift_measurements)
    )


def locate_values(
    anomalies: Sequence[Anomaly], schema: schema_pb2.Schema, files: Sequence[Path], key: str = ""
) -> tuple[Anomaly, ...]:
    """Names the file, values and row behind each anomaly about values.

    For a column the schema does not know, its first values are the sample; for a numeric
    feature with a domain, the values outside it (Inf included). Files are searched in
    order (the spans' files, then the examples, which also hold the features joined from
    the feature store); only that column and the key are read. A file without the column,
    or unreadable, is skipped; an anomaly found in no file is returned unchanged.

    Args:
        anomalies: As `validate_data` found them.
        schema: The schema they were found with.
        files: Parquet or CSV files (Parquet unless the name ends in `.csv`), or folders of
            Parquet shards.
        key: The key column, to name the first offending row; empty: no row named.
    """
    features = {f.name: f for f in schema.feature}
    located = []
    for anomaly in anomalies:
        feature = features.get(anomaly.feature)
        if anomaly.feature and (feature is None or _bounds(feature) is not None):
            anomaly = _locate(anomaly, feature, files, key)
        located.append(anomaly)
    return tuple(located)


def _bounds(feature: schema_pb2.Feature) -> tuple[float, float, bool] | None:
    """A numeric feature's domain: lowest and highest value, and whether Inf is refused."""
    if feature.type == schema_pb2.FLOAT and feature.HasField("float_domain"):
        domain = feature.float_domain
        refuse_inf = domain.disallow_inf
    elif feature.type == schema_pb2.INT and feature.HasField("int_domain"):
        domain, refuse_inf = feature.int_domain, True
    else:
        return None
    if not (domain.HasField("min") or domain.HasField("max") or refuse_inf):
        return None
    low = domain.min if domain.HasField("min") else -math.inf
    high = domain.max if domain.HasField("max") else math.inf
    return low, high, refuse_inf


def _locate(anomaly: Anomaly, feature: schema_pb2.Feature | None, files: Sequence[Path], key: str) -> Anomaly:
    for path in (shard for given in files for shard in parquet_files(Path(given))):  # a split is a folder of shards
        frame = _read_columns(path, anomaly.feature, key)
        if frame is None:
            continue
        values = frame[anomaly.feature]
        if feature is None:
            offending = values.notna()
        else:
            if values.dtype == object:  # strings in a numeric column: the type anomaly names one
                continue
            low, high, refuse_inf = _bounds(feature)
            numbers = values.astype(float)
            offending = (numbers < low) | (numbers > high) | (np.isinf(numbers) & refuse_inf)
        if offending.any():
            sample = values[offending].drop_duplicates().head(SAMPLE_VALUES)
            row = f"{key} {_plain(frame[key][offending].iloc[0])!r}" if key in frame.columns else ""
            return dataclasses.replace(
                anomaly, value=", ".join(repr(_plain(v)) for v in sample), file=str(path), row=row
            )
    return anomaly


def _read_columns(path: Path, feature: str, key: str) -> pd.DataFrame | None:
    """The feature's column (and the key's, if the file has it), or None when the file lacks the
    feature or cannot be read."""
    try:
        if path.suffix == ".csv":
            names = list(pd.read_csv(path, nrows=0).columns)
        else:
            names = pq.read_schema(path).names
        if feature not in names:
            return None
        columns = [feature] + ([key] if key and key != feature and key in names else [])
        if path.suffix == ".csv":
            return pd.read_csv(path, usecols=columns)
        return pq.read_table(path, columns=columns).to_pandas()
    except (pa.ArrowException, OSError, ValueError, pd.errors.ParserError):
        return None


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _anomalies(
    split: str,
    result: anomalies_pb2.Anomalies,
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
) -> list[Anomaly]:
    numeric = {f.name for f in schema.feature if f.type in (schema_pb2.INT, schema_pb2.FLOAT)}
    known = {f.name for f in schema.feature}
    found = [
        Anomaly(
            split,
            feature,
            _kind(info),
            info.description.strip(),
            _string_value(statistics, feature)
            if feature in numeric
            else _sample_value(statistics, feature)
            if feature not in known
            else "",
        )
        for feature, info in sorted(result.anomaly_info.items())
    ]
    if result.HasField("dataset_anomaly_info"):
        info = result.dataset_anomaly_info
        found.append(Anomaly(split, "", info.short_description, info.description))
    return found


def _string_value(statistics: statistics_pb2.DatasetFeatureStatisticsList, feature: str) -> str:
    """The most frequent string of a feature the schema declares numeric: the value that broke its type."""
    for stats in statistics.datasets[0].features:
        if ".".join(stats.path.step) == feature and stats.HasField("string_stats") and stats.string_stats.top_values:
            return stats.string_stats.top_values[0].value
    return ""


def _kind(info: anomalies_pb2.AnomalyInfo) -> str:
    """TFDV's short description, or each reason's where it says only "Multiple errors"."""
    reasons = list(dict.fromkeys(r.short_description for r in info.reason if r.short_description))
    return "; ".join(reasons) if len(reasons) > 1 else info.short_description


def _sample_value(statistics: statistics_pb2.DatasetFeatureStatisticsList, feature: str) -> str:
    """A value of a column the schema does not know, as far as its statistics show one: its
    most frequent string, or its smallest number."""
    for stats in statistics.datasets[0].features:
        if ".".join(stats.path.step) != feature:
            continue
        if stats.HasField("string_stats") and stats.string_stats.top_values:
            return stats.string_stats.top_values[0].value
        if stats.HasField("num_stats") and stats.num_stats.common_stats.num_non_missing:
            return f"{stats.num_stats.min:g}"
    return ""
