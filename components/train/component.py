"""KFP adapter for training."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train(
    dataset: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    hidden_units: str,
    seed: int,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    train_examples: Input[Dataset],
    schema: Input[Artifact],
    anomalies: Input[Artifact],
    model: Output[Model],
    vocabularies: Output[Artifact],
):
    """Fits the Keras model on validated data and exports it as a SavedModel taking raw features."""
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.data_gate.logic import stop_on_anomalies
    from components.train.logic import Hyperparameters, parse_hidden_units
    from components.train.logic import train as fit

    parameters = {
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "hidden_units": hidden_units,
        "seed": seed,
    }
    with metadata.pipeline_step(metadata_connection, run_id, job_id, "train", parameters) as step:
        config = load_dataset(dataset)
        hyperparameters = Hyperparameters(epochs, batch_size, learning_rate, parse_hidden_units(hidden_units), seed)
        step.input(metadata.EXAMPLES, train_examples.uri)
        step.input(metadata.SCHEMA, schema.uri)
        step.input(metadata.ANOMALIES, anomalies.uri)
        stop_on_anomalies(anomalies.metadata["messages"], anomalies.metadata["files"])  # the gate's own rule
        result = fit(Path(train_examples.path), config, hyperparameters, Path(model.path), Path(vocabularies.path))
        model.metadata.update(
            model_name=config.model_name,
            rows=result.rows,
            final_loss=result.final_loss,
            spans=train_examples.metadata["spans"],
        )
        step.output(
            metadata.MODEL,
            model.uri,
            model_name=config.model_name,
            final_loss=result.final_loss,
            rows=result.rows,
            replicas=result.replicas,
        )
        step.output(metadata.VOCABULARIES, vocabularies.uri, sizes=str(result.vocabulary_sizes))
