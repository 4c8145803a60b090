import numpy as np
import pytest

from components.common.tfdv_io import load_schema
from components.statistics.logic import statistics_of_dataframe
from components.validate_data.logic import JENSEN_SHANNON, L_INFINITY, infer_schema, validate_data


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
    assert (anomaly.feature, anomaly.kind) == ("distance", "Unexpected data type")
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
