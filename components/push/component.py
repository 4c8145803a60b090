"""KFP adapter for push."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def push(
    dataset: str,
    model_repository: str,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    model: Input[Model],
    blessing: Input[Artifact],
    infra_blessing: Input[Artifact],
    pushed_model: Output[Artifact],
):
    """Publishes the model as the next version if, and only if, both blessings say so; records the decision."""
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.infra_validate.logic import InfraBlessing
    from components.push.logic import push as publish
    from components.validate_model.logic import ModelBlessing

    parameters = {"dataset": dataset, "model_repository": model_repository}
    with metadata.pipeline_step(metadata_connection, run_id, job_id, "push", parameters) as step:
        config = load_dataset(dataset)
        step.input(metadata.MODEL, model.uri)
        step.input(metadata.BLESSING, blessing.uri)
        step.input(metadata.INFRA_BLESSING, infra_blessing.uri)
        result = publish(
            Path(model.path),
            ModelBlessing.from_json(Path(blessing.path).read_text()),
            InfraBlessing.from_json(Path(infra_blessing.path).read_text()),
            Path(model_repository),
            config.model_name,
            step.run_id,
        )
        pushed_model.metadata.update(pushed=result.pushed, version=result.version or 0, reasons=list(result.reasons))
        Path(pushed_model.path).write_text(result.path)
        if result.pushed:
            step.pushed_model(config.model_name, result.version, result.path, result.digest)
            step.update_run(decision=metadata.PUSHED, version=result.version, reasons="; ".join(result.reasons))
        else:
            step.update_run(decision=metadata.NOT_BLESSED, reasons="; ".join(result.reasons))
