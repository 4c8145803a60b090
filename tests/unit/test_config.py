import pytest

from pipelines.config import ConfigError, available_datasets, load_dataset, parse_parameters


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


def test_parameters_are_converted_to_their_declared_types():
    declared = {"epochs": int, "learning_rate": float, "dataset": str, "fast": bool}
    values = parse_parameters(["epochs=3", "learning_rate=0.1", "dataset=penguins", "fast=true"], declared)
    assert values == {"epochs": 3, "learning_rate": 0.1, "dataset": "penguins", "fast": True}


@pytest.mark.parametrize("assignment, message", [
    ("epochs", "expected name=value"),
    ("epoch=3", "epoch: unknown parameter; known: epochs"),
    ("epochs=three", "epochs='three': expected int"),
    ("epochs=2.5", "expected int"),
])
def test_bad_parameter_is_named(assignment, message):
    with pytest.raises(ConfigError, match=message):
        parse_parameters([assignment], {"epochs": int})
