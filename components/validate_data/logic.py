"""Data validation: schema skew stops the pipeline; drift is measured, recorded and shown.

Schema skew (a missing or unexpected feature, a changed type, unexpected categorical
values beyond the schema's tolerance, too many missing values) means downstream steps
would train on data they do not expect, so the run stops before training. Drift, a
change in the distribution against the previous span, is a reason to retrain, not to
stop: it is measured per feature (L-infinity for categorical features, Jensen-Shannon
divergence for numeric ones) and reported.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from components.common.reports import markdown_table

L_INFINITY = "L-infinity"
JENSEN_SHANNON = "Jensen-Shannon"
# Presence a partly missing feature may lose against its sparsest span in the data the schema was inferred from.
MISSING_VALUE_MARGIN = 0.05
# Share of a categorical feature's values that must be in the schema's domain.
MIN_DOMAIN_MASS = 0.99
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
        value: A value seen in the data that shows the problem, if the statistics have one.
    """

    split: str
    feature: str
    kind: str
    description: str
    value: str = ""

    def message(self) -> str:
        text = (
            f"feature '{self.feature}': {self.kind}: {self.description}"
            if self.feature
            else f"{self.kind}: {self.description}"
        )
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
                    ("split", "feature", "anomaly", "description", "value"),
                    [(a.split, a.feature, a.kind, a.description, a.value) for a in self.anomalies],
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
) -> schema_pb2.Schema:
    """A schema to review and commit, with tolerances that real data needs.

    Beyond TFDV's inference: integer categorical features are marked categorical (so
    their value distribution is tracked and compared with L-infinity); a partly missing
    feature may be present `MISSING_VALUE_MARGIN` less often than in its sparsest span
    (given `span_statistics`, else than in `statistics`) before it is an anomaly, so a
    seasonal dip (fewer gusty hours in summer) is not one; a categorical feature may have
    `1 - MIN_DOMAIN_MASS` of values outside its domain; the label is not expected at
    serving time.
    """
    schema = tfdv.infer_schema(statistics)
    present: dict[tuple[str, ...], float] = {}
    for each in span_statistics or [statistics]:
        dataset = each.datasets[0]
        for f in dataset.features:
            fraction = _present_fraction(f, dataset.num_examples)
            present[tuple(f.path.step)] = min(fraction, present.get(tuple(f.path.step), 1.0))
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
        if feature.name == label:
            feature.not_in_environment.append(SERVING)
    return schema


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


def _anomalies(
    split: str,
    result: anomalies_pb2.Anomalies,
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
) -> list[Anomaly]:
    numeric = {f.name for f in schema.feature if f.type in (schema_pb2.INT, schema_pb2.FLOAT)}
    found = [
        Anomaly(
            split,
            feature,
            info.short_description,
            info.description.strip(),
            _string_value(statistics, feature) if feature in numeric else "",
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
