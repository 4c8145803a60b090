"""Train: a Keras model whose preprocessing lives inside it, exported as a SavedModel.

Vocabulary lookups, imputation and normalization are layers of the model, fitted on the
training split, so the exported model takes raw features and serving cannot skew from
training by re-implementing them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from components.common import model_io
from components.common.datasets import DatasetConfig
from components.common.errors import ConfigError, DataError
from components.common.spans import read_file

MIN_VARIANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Training's settings, named as the pipeline's parameters; checked when made.

    Raises:
        ConfigError: a value out of range, named with its parameter.
    """

    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 0.005
    hidden_units: tuple[int, ...] = (64, 32)
    seed: int = 42

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if not self.learning_rate > 0:  # also refuses NaN
            raise ConfigError(f"learning_rate={self.learning_rate}: must be positive")
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ConfigError(
                f"hidden_units={','.join(map(str, self.hidden_units))!r}: must be positive integers such as 64,32"
            )


@dataclasses.dataclass(frozen=True)
class TrainResult:
    rows: int
    positive_rate: float
    final_loss: float
    vocabulary_sizes: dict[str, int]
    replicas: int = 1  # that trained it in sync: workers of a cluster, or this process alone


def parse_hidden_units(text: str) -> tuple[int, ...]:
    """`"64,32"` -> (64, 32)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"hidden_units={text!r}: expected comma-separated integers such as 64,32") from None


def train(
    train_path: Path, dataset: DatasetConfig, hyperparameters: Hyperparameters, model_dir: Path, vocabularies_path: Path
) -> TrainResult:
    """Fits the model on the train split and exports it with its serving signature.

    In one process, or in each of several workers that TF_CONFIG names (cluster_strategy):
    every worker reads the split, fits the same vocabularies and statistics, and trains its
    shard of each global batch, so all of them end with the model one process would have made.

    Args:
        train_path: The train split: a Parquet file or a folder of shards.
        dataset: Which columns are the label and the features.
        hyperparameters: Model size and optimisation settings; the seed fixes initialisation and shuffling.
        model_dir: Where the SavedModel is written.
        vocabularies_path: Where the fitted vocabularies are written (JSON), for lineage and review.

    Raises:
        DataError: the label or a feature is missing from the data.
    """
    import keras

    strategy = cluster_strategy()  # before anything of TensorFlow runs, as collective ops require
    frame = read_file(train_path, "parquet")
    labels = binary_labels(frame, dataset, train_path)
    missing = [f for f in dataset.features if f not in frame.columns]
    if missing:
        raise DataError("feature missing from the training data", path=str(train_path), feature=missing[0])
    keras.utils.set_random_seed(hyperparameters.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model, vocabularies = _build_model(frame, dataset, hyperparameters)
    signature = model_io.Signature(
        {name: _dtype(frame[name], name in dataset.categorical_features) for name in dataset.features},
        (model_io.OUTPUT,),
    )
    columns = model_io.frame_to_columns(signature, frame)
    if strategy is None:
        fitted = model.fit(
            columns,
            labels,
            epochs=hyperparameters.epochs,
            batch_size=hyperparameters.batch_size,
            shuffle=True,
            verbose=0,
        )
        losses = fitted.history["loss"]
    else:
        losses = _fit_on_workers(model, columns, labels, hyperparameters, strategy)
    if strategy is None or _is_chief(strategy):
        _export(model, signature, model_dir)
        vocabularies_path.write_text(json.dumps(vocabularies, indent=1, default=str))
    else:  # every worker takes part in saving its variables; only the chief's copy is kept
        with tempfile.TemporaryDirectory() as elsewhere:
            _export(model, signature, Path(elsewhere) / "model")
    return TrainResult(
        rows=len(frame),
        positive_rate=float(labels.mean()),
        final_loss=losses[-1],
        vocabulary_sizes={name: len(vocabulary) for name, vocabulary in vocabularies.items()},
        replicas=strategy.num_replicas_in_sync if strategy else 1,
    )


def cluster_strategy():
    """None for this process alone; when TF_CONFIG names a cluster of workers, as Kubeflow's
    Training Operator sets it in each worker's pod, synchronous data parallelism over them
    (MultiWorkerMirroredStrategy: gradients all-reduced every step)."""
    if not json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster"):
        return None
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def _is_chief(strategy) -> bool:
    resolver = strategy.cluster_resolver
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )


def _fit_on_workers(
    model, columns: dict[str, np.ndarray], labels: np.ndarray, hp: Hyperparameters, strategy
) -> list[float]:
    """Keras's fit on a cluster, as a loop of our own, each epoch's mean loss returned: Keras 3's
    fit cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585), a loop of
    strategy.run can. The same loss, optimizer and batches of `hp.batch_size` rows, reshuffled
    each epoch from `hp.seed`; each batch is split between the workers."""
    import keras
    import tensorflow as tf

    rows = len(labels)
    features = {name: tf.constant(values) for name, values in columns.items()}
    targets = tf.constant(labels)
    batches = (
        tf.data.Dataset.range(rows)
        .shuffle(rows, seed=hp.seed, reshuffle_each_iteration=True)
        .batch(hp.batch_size)
        .map(lambda index: ({n: tf.gather(v, index) for n, v in features.items()}, tf.gather(targets, index)))
    )
    distributed = strategy.experimental_distribute_dataset(batches)
    loss = keras.losses.BinaryCrossentropy(reduction=None)
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def step(batch_features, batch_labels):
        def on_replica(replica_features, replica_labels):
            with tf.GradientTape() as tape:
                per_row = loss(replica_labels[:, None], model(replica_features, training=True)[:, None])
                mean = tf.nn.compute_average_loss(per_row)
            gradients = tape.gradient(mean, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return tf.reduce_sum(per_row)

        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(on_replica, (batch_features, batch_labels)), None
        )

    losses = []
    for _ in range(hp.epochs):
        losses.append(sum(float(step(*batch)) for batch in distributed) / rows)
    return losses


def binary_labels(frame: pd.DataFrame, dataset: DatasetConfig, path: Path) -> np.ndarray:
    """1.0 where the label equals the dataset's positive label, else 0.0."""
    if dataset.label not in frame.columns:
        raise DataError("label column is missing", path=str(path), feature=dataset.label)
    return (frame[dataset.label] == dataset.positive_label).to_numpy(dtype=np.float32)


def _dtype(column: pd.Series, categorical: bool) -> str:
    if categorical and column.dtype == object:
        return "string"
    if categorical and pd.api.types.is_integer_dtype(column):
        return "int64"
    return "float32"


def _build_model(frame: pd.DataFrame, dataset: DatasetConfig, hp: Hyperparameters):
    import keras
    from keras import layers, ops

    inputs, encoded, vocabularies = {}, [], {}
    for name in dataset.categorical_features:
        dtype = _dtype(frame[name], categorical=True)
        vocabulary = sorted(frame[name].dropna().unique().tolist())
        vocabularies[name] = vocabulary
        inputs[name] = keras.Input(shape=(), dtype=dtype, name=name)
        lookup = (layers.StringLookup if dtype == "string" else layers.IntegerLookup)(
            vocabulary=vocabulary, output_mode="one_hot", name=f"{name}_lookup"
        )
        encoded.append(lookup(inputs[name]))
    for name in dataset.numeric_features:
        values = frame[name].astype("float64")
        mean = float(values.mean()) if values.notna().any() else 0.0
        inputs[name] = keras.Input(shape=(), dtype="float32", name=name)
        # A missing value (NaN) becomes the training mean, then everything is standardised.
        # A feature constant in training (month, in a one-month window) keeps unit scale:
        # dividing by its near-zero spread would blow any other value up to saturation.
        variance = float(values.var()) if values.count() > 1 else 0.0
        imputed = ops.where(ops.isnan(inputs[name]), mean, inputs[name])
        normalize = layers.Normalization(
            mean=mean, variance=variance if variance > MIN_VARIANCE else 1.0, name=f"{name}_normalize"
        )
        encoded.append(normalize(ops.expand_dims(imputed, -1)))
    x = layers.Concatenate()(encoded)
    for units in hp.hidden_units:
        x = layers.Dense(units, activation="relu")(x)
    output = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, ops.squeeze(output, -1))
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate), loss="binary_crossentropy")
    return model, vocabularies


def _export(model, signature: model_io.Signature, model_dir: Path) -> None:
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    specs = {
        name: tf.TensorSpec([None], tf.dtypes.as_dtype(dtype), name=name) for name, dtype in signature.inputs.items()
    }
    archive.add_endpoint(
        name=model_io.SIGNATURE,
        fn=lambda features: {model_io.OUTPUT: model(features)},
        input_signature=[specs],
    )
    archive.write_out(str(model_dir), verbose=False)
