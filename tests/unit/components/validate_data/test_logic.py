import numpy as np
import pytest
from tensorflow_metadata.proto.v0 import schema_pb2

from components.common.datasets import available_datasets, load_dataset
from components.common.tfdv_io import load_schema
from components.statistics.logic import statistics_of_dataframe
from components.validate_data.logic import (
    DOMAIN_MARGIN,
    JENSEN_SHANNON,
    L_INFINITY,
    columns_that_may_appear,
    declare_may_appear,
    infer_schema,
    locate_values,
    validate_data,
)


@pytest.fixture(scope="module")
def schema(flights):
    return load_schema(flights.schema_path)


def check(frame, schema, flights, baseline=None):
    return validate_data(
        {"train": statistics_of_dataframe(frame, schema)},
        schema,
        flights.categorical_features,
        baseline=baseline,
        baseline_name="span 2013-01" if baseline else "",
    )


def only_anomaly(result):
    assert not result.passed
    assert len(result.anomalies) == 1, result.anomalies
    return result.anomalies[0]


def test_real_months_pass(flight_examples, schema, flights):
    for frame in flight_examples.values():
        result = check(frame, schema, flights)
        assert result.passed, result.anomalies
        assert result.drift == () and result.baseline == ""


def test_missing_column(flight_examples, schema, flights):
    anomaly = only_anomaly(check(flight_examples["2013-01"].drop(columns=["temp"]), schema, flights))
    assert (anomaly.feature, anomaly.kind) == ("temp", "Column dropped")


def test_missing_label_column(flight_examples, schema, flights):
    anomaly = only_anomaly(check(flight_examples["2013-01"].drop(columns=["late"]), schema, flights))
    assert (anomaly.feature, anomaly.kind) == ("late", "Column dropped")


def test_extra_column(flight_examples, schema, flights):
    anomaly = only_anomaly(check(flight_examples["2013-01"].assign(actual_delay=1.0), schema, flights))
    assert (anomaly.feature, anomaly.kind) == ("actual_delay", "New column")


def test_numeric_column_turned_to_strings_names_the_value(flight_examples, schema, flights):
    frame = flight_examples["2013-01"].assign(distance=lambda f: f.distance.map("{:.0f} mi".format))
    anomaly = only_anomaly(check(frame, schema, flights))
    assert anomaly.feature == "distance" and anomaly.kind.startswith("Unexpected data type")
    assert anomaly.value.endswith(" mi")
    assert "feature 'distance'" in anomaly.message() and anomaly.value in anomaly.message()


def test_unseen_categorical_values_beyond_tolerance(flight_examples, schema, flights):
    frame = flight_examples["2013-01"].copy()
    frame.loc[frame.index % 4 == 0, "carrier"] = "ZZ"
    anomaly = only_anomaly(check(frame, schema, flights))
    assert anomaly.feature == "carrier" and "ZZ" in anomaly.description


def test_a_few_unseen_values_are_tolerated(flight_examples, schema, flights):
    frame = flight_examples["2013-01"].copy()
    frame.loc[frame.index[:5], "dest"] = "NEW"  # 5 of 3000 rows, under the schema's 1% tolerance
    assert check(frame, schema, flights).passed


def test_too_many_missing_values(flight_examples, schema, flights):
    frame = flight_examples["2013-01"].copy()
    frame.loc[frame.index % 2 == 0, "temp"] = np.nan
    anomaly = only_anomaly(check(frame, schema, flights))
    assert anomaly.feature == "temp" and "present in fewer examples than expected" in anomaly.description


def test_the_same_anomaly_in_both_splits_is_reported_once(flight_examples, schema, flights):
    statistics = statistics_of_dataframe(flight_examples["2013-01"].drop(columns=["temp"]), schema)
    result = validate_data({"train": statistics, "eval": statistics}, schema, flights.categorical_features)
    assert only_anomaly(result).split == "train, eval"


def test_drift_is_measured_per_feature_and_does_not_stop(flight_examples, schema, flights):
    baseline = statistics_of_dataframe(flight_examples["2013-01"], schema)
    result = check(flight_examples["2013-07"], schema, flights, baseline)
    assert result.passed
    measures = {d.feature: d for d in result.drift}
    assert measures["carrier"].measure == L_INFINITY
    assert measures["temp"].measure == JENSEN_SHANNON
    assert measures["temp"].drifted and measures["temp"].value > 0.5  # January against July
    assert not measures["origin"].drifted
    assert "temp" in result.drifted_features
    assert "| temp | Jensen-Shannon |" in result.markdown()


def test_inferred_schema_has_tolerances(flight_examples, flights):
    schema = infer_schema(
        statistics_of_dataframe(flight_examples["2013-01"]), flights.categorical_features, flights.label
    )
    features = {f.name: f for f in schema.feature}
    assert features["sched_dep_hour"].int_domain.is_categorical
    assert features["carrier"].distribution_constraints.min_domain_mass == pytest.approx(0.99)
    assert 0 < features["wind_gust"].presence.min_fraction < 0.3
    assert list(features["late"].not_in_environment) == ["SERVING"]


def located(frame, schema, flights, tmp_path, files=()):
    """Validates `frame` as a span file written under `tmp_path` and locates the anomalies in it."""
    span_file = tmp_path / "span=2013-01" / "part-0.parquet"
    span_file.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(span_file, index=False)
    result = check(frame, schema, flights)
    return span_file, locate_values(result.anomalies, schema, [*files, span_file], flights.key)


def test_committed_schemas_bound_every_numeric_feature():
    for name in available_datasets():
        config = load_dataset(name)
        for feature in load_schema(config.schema_path).feature:
            if feature.name in config.numeric_features:
                domain = feature.float_domain
                assert domain.HasField("min") and domain.HasField("max") and domain.disallow_inf, feature.name
            elif feature.type == schema_pb2.INT:  # integer categories and a 0/1 label
                assert feature.int_domain.HasField("min") and feature.int_domain.HasField("max"), feature.name


def test_out_of_domain_value_stops_and_names_file_value_and_row(flight_examples, schema, flights, tmp_path):
    frame = flight_examples["2013-01"].copy()
    frame.loc[7, "distance"] = 99999.0
    span_file, anomalies = located(frame, schema, flights, tmp_path)
    (anomaly,) = anomalies
    assert (anomaly.feature, anomaly.kind, anomaly.value) == ("distance", "Out-of-range values", "99999.0")
    assert anomaly.file == str(span_file) and anomaly.row == f"flight_id {frame.flight_id[7]!r}"
    assert "99999>6000" in anomaly.message() and str(span_file) in anomaly.message()


def test_negative_distance_and_impossible_hour_stop(flight_examples, schema, flights):
    frame = flight_examples["2013-01"].copy()
    frame.loc[3, "distance"] = -5.0
    frame.loc[4, "sched_dep_hour"] = 99
    anomalies = {a.feature: a for a in check(frame, schema, flights).anomalies}
    assert set(anomalies) == {"distance", "sched_dep_hour"}
    assert "-5<1" in anomalies["distance"].description and "99" in anomalies["sched_dep_hour"].description


def test_infinite_value_stops(flight_examples, schema, flights, tmp_path):
    frame = flight_examples["2013-01"].copy()
    frame.loc[2, "distance"] = np.inf
    _, (anomaly,) = located(frame, schema, flights, tmp_path)
    assert anomaly.feature == "distance" and "Inf" in anomaly.description and anomaly.value == "inf"


def test_label_outside_0_1_stops(flight_examples, schema, flights):
    frame = flight_examples["2013-01"].copy()
    frame.loc[5, "late"] = 2
    anomaly = only_anomaly(check(frame, schema, flights))
    assert anomaly.feature == "late" and "2" in anomaly.description


def test_all_null_column_stops(flight_examples, schema, flights):
    anomaly = only_anomaly(check(flight_examples["2013-01"].assign(distance=np.nan), schema, flights))
    assert (anomaly.feature, anomaly.kind) == ("distance", "Column dropped")


def test_extra_column_names_file_and_a_sample_value(flight_examples, schema, flights, tmp_path):
    frame = flight_examples["2013-01"].assign(actual_delay=-3.0)
    span_file, (anomaly,) = located(frame, schema, flights, tmp_path)
    assert (anomaly.feature, anomaly.kind, anomaly.value) == ("actual_delay", "New column", "-3.0")
    assert f"in {span_file}" in anomaly.message()


def test_a_column_the_schema_says_may_appear_passes(flight_examples, schema, flights):
    declared = schema_pb2.Schema()
    declared.CopyFrom(schema)
    column = declared.feature.add(name="note", type=schema_pb2.BYTES)
    declare_may_appear(column)
    assert columns_that_may_appear(declared) == ["note"]
    assert check(flight_examples["2013-01"].assign(note="late aircraft"), declared, flights).passed
    assert check(flight_examples["2013-01"], declared, flights).passed  # and may be absent


def test_a_feature_joined_from_the_store_is_located_in_the_examples(flight_examples, schema, flights, tmp_path):
    examples = flight_examples["2013-01"].copy()
    examples.loc[9, "wind_speed"] = 1048.4  # the raw weather table's famous reading
    examples_file = tmp_path / "train_examples"  # a KFP artifact path: no suffix, Parquet
    examples.to_parquet(examples_file, index=False)
    span_file = tmp_path / "part-0.parquet"
    examples.drop(columns=["wind_speed"]).to_parquet(span_file, index=False)
    result = check(examples, schema, flights)
    (anomaly,) = locate_values(result.anomalies, schema, [span_file, examples_file], flights.key)
    assert (anomaly.feature, anomaly.value, anomaly.file) == ("wind_speed", "1048.4", str(examples_file))


def test_inferred_schema_proposes_domains_with_a_margin(flight_examples, flights):
    frame = flight_examples["2013-01"].assign(note="x")
    schema = infer_schema(
        statistics_of_dataframe(frame),
        flights.categorical_features,
        flights.label,
        known_columns=[flights.key, *flights.features, flights.label],
    )
    features = {f.name: f for f in schema.feature}
    low, high = frame.distance.min(), frame.distance.max()
    distance = features["distance"].float_domain
    assert 0 <= distance.min < low and distance.max >= high + DOMAIN_MARGIN * (high - low) and distance.disallow_inf
    assert features["sched_dep_hour"].int_domain.is_categorical and features["sched_dep_hour"].int_domain.max > 23
    label = features["late"]
    assert label.WhichOneof("domain_info") == "int_domain" and (label.int_domain.min, label.int_domain.max) == (0, 1)
    assert columns_that_may_appear(schema) == ["note"]
