"""The data gate: clean data passes; any anomaly stops the run, naming feature, value and files."""

import pytest

from components.common.errors import DataError
from components.data_gate.logic import stop_on_anomalies


def test_clean_data_passes():
    stop_on_anomalies([], ["/data/span=2013-01/part-0.parquet"])


def test_anomalies_stop_the_run_naming_every_one_and_the_files():
    anomalies = ["feature 'carrier': Unexpected string values: ZZ (~33%)", "feature 'distance': Unexpected data type"]
    with pytest.raises(DataError) as stopped:
        stop_on_anomalies(anomalies, ["/data/span=2013-07/part-0.parquet"])
    assert str(stopped.value) == (
        "/data/span=2013-07/part-0.parquet: feature 'carrier': Unexpected string values: ZZ (~33%); "
        "feature 'distance': Unexpected data type"
    )
