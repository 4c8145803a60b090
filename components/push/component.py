"""KFP adapter for push."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def push(dataset: str, model_repository: str, metadata_connection: str, run_id: str, job_id: str, model: Input[Model],
         blessing: Input[Artifact], infra_blessing: Input[Artifact], pushed_model: Output[Artifact]):
    """Publishes the model as the next version if, and only if, both blessings say so; records the decision."""
    from pathlib import Path

    from components.common import metadata
    from components.infra_validate.logic import InfraBlessing
    from components.push.logic import push as publish
    from components.validate_model.logic import ModelBlessing
    from pipelines.config import load_dataset

    config = load_dataset(dataset)
    run_id = run_id or job_id  # a recurring run has no run id of its own
    store = metadata.MetadataStore(metadata_connection)
    with store.step(run_id, "push", {"dataset": dataset, "model_repository": model_repository}) as step:
        step.input(metadata.MODEL, model.uri)
        step.input(metadata.BLESSING, blessing.uri)
        step.input(metadata.INFRA_BLESSING, infra_blessing.uri)
        result = publish(Path(model.path), ModelBlessing.from_json(Path(blessing.path).read_text()),
                         InfraBlessing.from_json(Path(infra_blessing.path).read_text()), Path(model_repository),
                         config.model_name, run_id)
        pushed_model.metadata.update(pushed=result.pushed, version=result.version or 0, reasons=list(result.reasons))
        Path(pushed_model.path).write_text(result.path)
        if result.pushed:
            step.output(metadata.PUSHED_MODEL, result.path, model_name=config.model_name, version=result.version,
                        run_id=run_id, state="live")
            store.update_run(run_id, decision=metadata.PUSHED, version=result.version,
                             reasons="; ".join(result.reasons))
        else:
            store.update_run(run_id, decision=metadata.NOT_BLESSED, reasons="; ".join(result.reasons))
