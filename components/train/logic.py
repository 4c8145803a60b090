"""Train: a Keras model whose preprocessing lives inside it, exported as a SavedModel.

Vocabulary lookups, imputation and normalization are layers of the model, fitted on the
training split, so the exported model takes raw features and serving cannot skew from
training by re-implementing them.

The split is streamed, never held whole: a first pass fits the vocabularies and the
numeric features' moments a batch at a time; training then reads it again every epoch
through tf.data, its row groups in a new order, in pools of rows shuffled together (a split
no larger than a pool is kept and shuffled whole every epoch, as Keras shuffles arrays).
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
from components.common.spans import read_parquet_batches, read_row_group, row_groups

MIN_VARIANCE = 1e-6
READ_ROWS = 65_536  # rows read at a time
POOL_ROWS = 262_144  # rows shuffled together while training


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
    summary = summarize(train_path, dataset)
    keras.utils.set_random_seed(hyperparameters.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = _build_model(summary, dataset, hyperparameters)
    signature = model_io.Signature(summary.dtypes, (model_io.OUTPUT,))
    batches = training_batches(train_path, summary.rows, signature, dataset, hyperparameters)
    if strategy is None:  # the batches are shuffled as they are read
        losses = model.fit(batches, epochs=hyperparameters.epochs, shuffle=False, verbose=0).history["loss"]
    else:
        losses = _fit_on_workers(model, batches, summary.rows, hyperparameters, strategy)
    if strategy is None or _is_chief(strategy):
        _export(model, signature, model_dir)
        vocabularies_path.write_text(json.dumps(summary.vocabularies, indent=1, default=str))
    else:  # every worker takes part in saving its variables; only the chief's copy is kept
        with tempfile.TemporaryDirectory() as elsewhere:
            _export(model, signature, Path(elsewhere) / "model")
    return TrainResult(
        rows=summary.rows,
        positive_rate=summary.positives / summary.rows,
        final_loss=losses[-1],
        vocabulary_sizes={name: len(vocabulary) for name, vocabulary in summary.vocabularies.items()},
        replicas=strategy.num_replicas_in_sync if strategy else 1,
    )


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    """What the model's preprocessing is fitted on, from one pass over the split.

    Attributes:
        rows, positives: Rows, and rows with the positive label.
        dtypes: Each feature's model input type (`string`, `int64` or `float32`), in the
            dataset's order.
        vocabularies: Each categorical feature's values, sorted.
        moments: Each numeric feature's mean and variance (n - 1) over its present values;
            0.0 and 0.0 when it has none, variance 0.0 with one.
    """

    rows: int
    positives: int
    dtypes: dict[str, str]
    vocabularies: dict[str, list]
    moments: dict[str, tuple[float, float]]


def summarize(train_path: Path, dataset: DatasetConfig) -> SplitSummary:
    """Reads the split's features and label a batch at a time and summarizes them.

    Raises:
        DataError: no rows, or the label or a feature missing from the data.
    """
    needed = {*dataset.features, dataset.label}
    rows = positives = 0
    integer = dict.fromkeys(dataset.categorical_features, True)
    text = dict.fromkeys(dataset.categorical_features, False)
    values: dict[str, set] = {name: set() for name in dataset.categorical_features}
    moments = {name: _Moments() for name in dataset.numeric_features}
    for batch in read_parquet_batches(train_path, READ_ROWS, needed):
        if rows == 0:
            missing = [f for f in dataset.features if f not in batch.columns]
            if missing:
                raise DataError("feature missing from the training data", path=str(train_path), feature=missing[0])
        positives += int(binary_labels(batch, dataset, train_path).sum())
        rows += len(batch)
        for name in dataset.categorical_features:
            integer[name] &= pd.api.types.is_integer_dtype(batch[name])
            text[name] |= batch[name].dtype == object
            values[name].update(batch[name].dropna().unique().tolist())
        for name in dataset.numeric_features:
            moments[name].add(batch[name].to_numpy(dtype="float64"))
    if rows == 0:
        raise DataError("no rows to train on", path=str(train_path))
    dtypes = dict.fromkeys(dataset.features, "float32")
    for name in dataset.categorical_features:
        dtypes[name] = "string" if text[name] else "int64" if integer[name] else "float32"
    return SplitSummary(
        rows,
        positives,
        dtypes,
        {name: sorted(found) for name, found in values.items()},
        {name: moment.mean_and_variance() for name, moment in moments.items()},
    )


class _Moments:
    """Count, mean and sum of squared deviations of the present values, merged batch by batch
    (Chan, Golub and LeVeque's pairwise update)."""

    def __init__(self):
        self.count, self.mean, self.squares = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        present = values[~np.isnan(values)]
        if not len(present):
            return
        count, mean = len(present), float(present.mean())
        squares = float(((present - mean) ** 2).sum())
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.squares += squares + delta * delta * self.count * count / total
        self.count = total

    def mean_and_variance(self) -> tuple[float, float]:
        return self.mean, self.squares / (self.count - 1) if self.count > 1 else 0.0


def training_batches(
    train_path: Path, rows: int, signature: model_io.Signature, dataset: DatasetConfig, hp: Hyperparameters
):
    """The split (`rows` rows) as a tf.data dataset of (features, labels) batches of
    `hp.batch_size` rows, its rows in a new order every epoch, drawn from `hp.seed`.

    A split of at most `POOL_ROWS` rows is read once, kept and shuffled whole, as Keras
    shuffles arrays. A larger one is read again every epoch, its row groups (ingest writes
    at most 65,536 rows in each) in a new order, gathered into pools of `POOL_ROWS` rows or
    more whose rows are shuffled together: each pool mixes stretches of the whole window,
    not one stretch of time.
    """
    import tensorflow as tf

    needed = {*dataset.features, dataset.label}
    order = np.random.default_rng(hp.seed)

    def as_arrays(pool: list[pd.DataFrame]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        frame = pd.concat(pool, ignore_index=True)
        return model_io.frame_to_columns(signature, frame), binary_labels(frame, dataset, train_path)

    def shuffled(columns: dict[str, np.ndarray], labels: np.ndarray):
        rows = order.permutation(len(labels))
        return {name: values[rows] for name, values in columns.items()}, labels[rows]

    if rows <= POOL_ROWS:
        kept = as_arrays(list(read_parquet_batches(train_path, READ_ROWS, needed)))

        def pools():
            yield shuffled(*kept)

    else:
        groups = row_groups(train_path)

        def pools():
            pool: list[pd.DataFrame] = []
            pooled = 0
            for group in order.permutation(len(groups)):
                pool.append(read_row_group(*groups[group], needed))
                pooled += len(pool[-1])
                if pooled >= POOL_ROWS:
                    yield shuffled(*as_arrays(pool))
                    pool, pooled = [], 0
            if pool:
                yield shuffled(*as_arrays(pool))

    specs = {name: tf.TensorSpec([None], tf.dtypes.as_dtype(dtype)) for name, dtype in signature.inputs.items()}
    return (
        tf.data.Dataset.from_generator(pools, output_signature=(specs, tf.TensorSpec([None], tf.float32)))
        .rebatch(hp.batch_size)
        .apply(tf.data.experimental.assert_cardinality(-(-rows // hp.batch_size)))
        .prefetch(tf.data.AUTOTUNE)
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


def _fit_on_workers(model, batches, rows: int, hp: Hyperparameters, strategy) -> list[float]:
    """Keras's fit on a cluster, as a loop of our own, each epoch's mean loss returned: Keras 3's
    fit cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585), a loop of
    strategy.run can. The same loss, optimizer and `batches` (`rows` rows an epoch): every
    worker reads them alike and takes its contiguous part of each, and each part's loss is
    divided by the whole batch's rows, so the gradients summed across workers are one
    process's."""
    import keras
    import tensorflow as tf

    def worker_part(context):
        worker, workers = context.input_pipeline_id, context.num_input_pipelines

        def part(features, labels):
            size = tf.shape(labels, out_type=tf.int64)[0]
            start, end = size * worker // workers, size * (worker + 1) // workers
            return {name: values[start:end] for name, values in features.items()}, labels[start:end], size

        return batches.map(part)

    distributed = strategy.distribute_datasets_from_function(worker_part)
    loss = keras.losses.BinaryCrossentropy(reduction=None)

    @tf.function
    def step(batch_features, batch_labels, batch_rows):
        def on_replica(replica_features, replica_labels, whole_batch):
            with tf.GradientTape() as tape:
                per_row = loss(replica_labels[:, None], model(replica_features, training=True)[:, None])
                mean = tf.reduce_sum(per_row) / tf.cast(whole_batch, per_row.dtype)
            gradients = tape.gradient(mean, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return tf.reduce_sum(per_row)

        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(on_replica, (batch_features, batch_labels, batch_rows)), None
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


def _build_model(summary: SplitSummary, dataset: DatasetConfig, hp: Hyperparameters):
    import keras
    from keras import layers, ops

    inputs, encoded = {}, []
    for name in dataset.categorical_features:
        dtype = summary.dtypes[name]
        inputs[name] = keras.Input(shape=(), dtype=dtype, name=name)
        lookup = (layers.StringLookup if dtype == "string" else layers.IntegerLookup)(
            vocabulary=summary.vocabularies[name], output_mode="one_hot", name=f"{name}_lookup"
        )
        encoded.append(lookup(inputs[name]))
    for name in dataset.numeric_features:
        mean, variance = summary.moments[name]
        inputs[name] = keras.Input(shape=(), dtype="float32", name=name)
        # A missing value (NaN) becomes the training mean, then everything is standardised.
        # A feature constant in training (month, in a one-month window) keeps unit scale:
        # dividing by its near-zero spread would blow any other value up to saturation.
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
    # Its slots now, not in the first traced step, where Keras builds them when no strategy is
    # set: a tf.function that creates variables is traced twice, and tracing is most of a
    # small window's fit (1.1 s against 0.6 s for the penguins' 266 rows, the same weights).
    model.optimizer.build(model.trainable_variables)
    return model


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
