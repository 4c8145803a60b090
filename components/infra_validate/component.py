"""KFP adapter for infra validation."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def infra_validate(dataset: str, metadata_connection: str, run_id: str, job_id: str, model: Input[Model], eval_examples: Input[Dataset],
                   infra_blessing: Output[Artifact], infra_view: Output[Markdown]):
    """Loads the model in a fresh process, sends it real eval rows as prediction requests, compares its signature."""
    from pathlib import Path

    from components.common import metadata
    from components.infra_validate.logic import infra_validate as probe
    from pipelines.config import load_dataset

    config = load_dataset(dataset)
    run_id = run_id or job_id  # a recurring run has no run id of its own
    store = metadata.MetadataStore(metadata_connection)
    with store.step(run_id, "infra_validate", {"dataset": dataset}) as step:
        step.input(metadata.MODEL, model.uri)
        production = store.production_model(config.model_name)
        result = probe(Path(model.path), Path(eval_examples.path), config,
                       metadata.local_path(production.uri) if production else None)
        Path(infra_blessing.path).write_text(result.to_json())
        Path(infra_view.path).write_text(result.markdown())
        infra_blessing.metadata.update(blessed=result.blessed, reasons=result.reasons)
        step.output(metadata.INFRA_BLESSING, infra_blessing.uri, blessed=result.blessed, verdict=result.verdict,
                    reasons="; ".join(result.reasons))
