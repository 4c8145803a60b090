import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.common import model_io
from components.common.errors import ConfigError, DataError
from components.common.spans import ShardWriter
from components.train import logic
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


@pytest.fixture
def small_shards(splits, tmp_path):
    """The train split again as shards of 700 rows."""
    table = pq.read_table(splits[0])
    writer = ShardWriter(tmp_path / "shards", table.schema, shard_rows=700)
    writer.write(table)
    writer.close()
    return tmp_path / "shards"


def test_the_split_is_summarized_a_batch_at_a_time_as_it_would_be_whole(small_shards, flights, monkeypatch):
    monkeypatch.setattr(logic, "READ_ROWS", 300)
    summary = logic.summarize(small_shards, flights)
    frame = pd.read_parquet(small_shards)
    assert summary.rows == len(frame) and summary.positives == int((frame.late == 1).sum())
    for name in flights.categorical_features:
        assert summary.vocabularies[name] == sorted(frame[name].dropna().unique().tolist())
    for name in flights.numeric_features:
        mean, variance = summary.moments[name]
        assert mean == pytest.approx(frame[name].mean(), rel=1e-12)
        assert variance == pytest.approx(frame[name].var(), rel=1e-9, abs=1e-12)
    assert summary.dtypes["carrier"] == "string" and summary.dtypes["sched_dep_hour"] == "int64"
    assert summary.dtypes["temp"] == "float32"


def test_training_reads_a_large_split_by_row_groups_in_pools_every_epoch_each_row_once(
    small_shards, flights, monkeypatch
):
    summary = logic.summarize(small_shards, flights)
    signature = model_io.Signature(summary.dtypes, (model_io.OUTPUT,))
    read = []
    read_row_group = logic.read_row_group
    monkeypatch.setattr(logic, "read_row_group", lambda *args: read.append(args[:2]) or read_row_group(*args))
    monkeypatch.setattr(logic, "POOL_ROWS", 1000)  # a pool is shuffled once it holds 1,000 rows or more
    hp = Hyperparameters(batch_size=128, seed=3)
    pooled = logic.training_batches(small_shards, summary.rows, signature, flights, hp)
    epochs = [[(features["temp"].numpy(), labels.numpy()) for features, labels in pooled] for _ in range(2)]
    whole = pd.read_parquet(small_shards)
    for batches in epochs:
        assert [len(labels) for _, labels in batches[:-1]] == [128] * (len(batches) - 1)
        temps = np.concatenate([temp for temp, _ in batches])
        assert np.array_equal(np.sort(temps), np.sort(whole.temp.to_numpy(dtype="float32")), equal_nan=True)
    groups = logic.row_groups(small_shards)
    assert len(groups) > 3 and sorted(read[: len(groups)]) == sorted(read[len(groups) :]) == groups
    assert read[: len(groups)] != read[len(groups) :]  # every row group read again, in a new order
    first, second = (np.concatenate([temp for temp, _ in batches]) for batches in epochs)
    assert not np.array_equal(first, second, equal_nan=True)  # the rows too


def test_a_split_that_fits_in_one_pool_is_read_once_and_shuffled_whole_every_epoch(small_shards, flights, monkeypatch):
    summary = logic.summarize(small_shards, flights)
    signature = model_io.Signature(summary.dtypes, (model_io.OUTPUT,))
    read = []
    batches_of = logic.read_parquet_batches
    monkeypatch.setattr(logic, "read_parquet_batches", lambda *args: read.append(args[0]) or batches_of(*args))
    monkeypatch.setattr(logic, "POOL_ROWS", summary.rows)
    kept = logic.training_batches(small_shards, summary.rows, signature, flights, Hyperparameters(batch_size=4096))
    [once], [again] = ([labels.numpy() for _, labels in kept] for _ in range(2))
    assert read == [small_shards] and len(once) == len(again) == summary.rows
    assert sorted(once) == sorted(again) and not np.array_equal(once, again)


def test_fitting_creates_no_variables_so_its_step_is_traced_once(splits, flights):
    # Keras builds the optimizer's slots inside the first traced step unless they exist, and
    # TensorFlow traces a function that creates variables twice.
    summary = logic.summarize(splits[0], flights)
    hyperparameters = Hyperparameters(epochs=1)
    model = logic._build_model(summary, flights, hyperparameters)
    built = [variable.path for variable in model.optimizer.variables]
    signature = model_io.Signature(summary.dtypes, (model_io.OUTPUT,))
    model.fit(logic.training_batches(splits[0], summary.rows, signature, flights, hyperparameters), verbose=0)
    # Adam has its iteration count and learning rate before it is built, its slots after.
    assert len(built) > 2 and [variable.path for variable in model.optimizer.variables] == built
