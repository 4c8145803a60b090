"""KFP adapter for infra validation."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def infra_validate(
    dataset: str,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    model: Input[Model],
    eval_examples: Input[Dataset],
    infra_blessing: Output[Artifact],
    infra_view: Output[Markdown],
):
    """Loads the model in a fresh process, sends it real eval rows as prediction requests, compares its signature."""
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.infra_validate.logic import infra_validate as probe

    with metadata.pipeline_step(metadata_connection, run_id, job_id, "infra_validate", {"dataset": dataset}) as step:
        config = load_dataset(dataset)
        step.input(metadata.MODEL, model.uri)
        production = step.store.production_model(config.model_name)
        result = probe(
            Path(model.path),
            Path(eval_examples.path),
            config,
            Path(production.uri) if production else None,  # in the model repository
            start_method="fork",  # this step's process has run nothing of TensorFlow (only a watcher thread)
        )
        Path(infra_blessing.path).write_text(result.to_json())
        Path(infra_view.path).write_text(result.markdown())
        infra_blessing.metadata.update(blessed=result.blessed, reasons=result.reasons)
        step.output(
            metadata.INFRA_BLESSING,
            infra_blessing.uri,
            blessed=result.blessed,
            verdict=result.verdict,
            reasons="; ".join(result.reasons),
        )
