import json

import numpy as np
import pandas as pd
import pytest

from components.common import model_io
from components.common.errors import ConfigError, DataError
from components.train.logic import Hyperparameters, parse_hidden_units, train


def test_exported_model_takes_raw_features(trained_model, splits, flights):
    model = model_io.SavedModel(trained_model)
    signature = model.signature
    assert set(signature.inputs) == set(flights.features)
    assert signature.inputs["carrier"] == "string"
    assert signature.inputs["sched_dep_hour"] == "int64"
    assert signature.inputs["temp"] == "float32"
    assert signature.outputs == (model_io.OUTPUT,)
    frame = pd.read_parquet(splits[1])
    scores = model.predict(model_io.frame_to_columns(signature, frame))
    assert scores.shape == (len(frame),)
    assert np.all((scores >= 0) & (scores <= 1)) and scores.std() > 0.01


def test_missing_values_and_unseen_categories_are_served(trained_model, splits):
    model = model_io.SavedModel(trained_model)
    signature = model.signature
    row = pd.read_parquet(splits[1]).head(1).assign(temp=np.nan, dest="NOWHERE", sched_dep_hour=3)
    [score] = model.predict(model_io.frame_to_columns(signature, row))
    assert 0 <= score <= 1


def test_training_is_reproducible_with_a_seed(splits, flights, tmp_path):
    results = [
        train(splits[0], flights, Hyperparameters(epochs=1, seed=7), tmp_path / f"m{i}", tmp_path / f"v{i}.json")
        for i in range(2)
    ]
    assert results[0].final_loss == pytest.approx(results[1].final_loss, rel=1e-4)
    vocabularies = json.loads((tmp_path / "v0.json").read_text())
    assert "UA" in vocabularies["carrier"] and results[0].vocabulary_sizes["origin"] == 3


def test_missing_label_is_named(splits, flights, tmp_path):
    pd.read_parquet(splits[0]).drop(columns=["late"]).to_parquet(tmp_path / "train")
    with pytest.raises(DataError, match="feature 'late': label column is missing"):
        train(tmp_path / "train", flights, Hyperparameters(epochs=1), tmp_path / "m", tmp_path / "v.json")
    assert not (tmp_path / "m").exists()


def test_bad_hyperparameters_are_rejected():
    assert parse_hidden_units("64, 32") == (64, 32)
    with pytest.raises(ConfigError, match="hidden_units='64,x'"):
        parse_hidden_units("64,x")
    with pytest.raises(ConfigError, match="^epochs=0: must be at least 1"):
        Hyperparameters(epochs=0)
    with pytest.raises(ConfigError, match="^batch_size=-1: must be at least 1"):
        Hyperparameters(batch_size=-1)
    with pytest.raises(ConfigError, match="^learning_rate=nan: must be positive"):
        Hyperparameters(learning_rate=float("nan"))
    with pytest.raises(ConfigError, match="^hidden_units='64,0': must be positive integers"):
        Hyperparameters(hidden_units=(64, 0))


def test_a_feature_constant_in_training_does_not_saturate_the_model(trained_model, splits):
    # The January sample has month == 1 everywhere; February must not push scores to 0 or 1.
    model = model_io.SavedModel(trained_model)
    signature = model.signature
    frame = pd.read_parquet(splits[1]).head(200)
    january = model.predict(model_io.frame_to_columns(signature, frame))
    february = model.predict(model_io.frame_to_columns(signature, frame.assign(month=2.0)))
    assert 0.01 < february.mean() < 0.99
    assert abs(february.mean() - january.mean()) < 0.3


def test_the_session_scores_as_the_eager_signature_does(trained_model, splits):
    # SavedModel runs the serving signature through a session, as TF Serving does; the scores
    # must be those of TF2's own loading, in the caller's thread or on TF's pools, in one call or several.
    import tensorflow as tf

    frame = pd.read_parquet(splits[1]).head(300)
    signature_fn = tf.saved_model.load(str(trained_model)).signatures[model_io.SIGNATURE]
    pooled = model_io.SavedModel(trained_model)
    columns = model_io.frame_to_columns(pooled.signature, frame)
    eager = signature_fn(**{name: tf.constant(values) for name, values in columns.items()})[model_io.OUTPUT]
    expected = eager.numpy().reshape(-1)
    np.testing.assert_allclose(pooled.predict(columns), expected, rtol=1e-5, atol=1e-7)
    in_caller = model_io.SavedModel(trained_model, in_caller_thread=True)
    np.testing.assert_allclose(in_caller.predict(columns, batch_size=7), expected, rtol=1e-5, atol=1e-7)


def test_a_signature_without_the_probability_output_is_named(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.score = tf.function(
        lambda carrier: {"score": tf.zeros_like(carrier, dtype=tf.float32)},
        input_signature=[tf.TensorSpec([None], tf.string, name="carrier")],
    )
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={model_io.SIGNATURE: module.score})
    model = model_io.SavedModel(tmp_path / "m")
    assert model.signature == model_io.Signature({"carrier": "string"}, ("score",))
    with pytest.raises(ValueError, match="the signature has no 'probability' output"):
        model.predict({"carrier": np.array(["UA"], dtype=object)})
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"other": module.score})
    with pytest.raises(ValueError, match="no 'serving_default' signature \\(has \\['other'\\]\\)"):
        model_io.SavedModel(tmp_path / "other")
