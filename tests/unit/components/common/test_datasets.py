"""The dataset catalogue: every bundled dataset loads with its committed schema."""

import pytest

from components.common.datasets import available_datasets, load_dataset
from components.common.errors import ConfigError


def test_bundled_datasets_load_with_their_committed_schema():
    assert available_datasets() == ["flights", "penguins"]
    for name in available_datasets():
        config = load_dataset(name)
        assert config.schema_path.is_file()
        assert config.label not in config.features
        assert set(config.slice_features) <= set(config.features)


def test_unknown_dataset_is_named_with_the_choices():
    with pytest.raises(ConfigError, match="unknown dataset 'taxis'.*flights, penguins"):
        load_dataset("taxis")


def test_flights_declare_their_event_time_and_penguins_none():
    assert (load_dataset("flights").event_time, load_dataset("penguins").event_time) == ("sched_dep", "")
