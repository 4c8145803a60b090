"""KFP adapter for model validation."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_model(
    min_auc: float,
    max_auc_drop: float,
    max_slice_auc_drop: float,
    min_slice_examples: int,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    evaluation: Input[Artifact],
    blessing: Output[Artifact],
    blessing_view: Output[Markdown],
):
    """Blesses the candidate when it clears the floor and does not regress against production, overall or per slice."""
    import dataclasses
    from pathlib import Path

    from components.common import metadata
    from components.evaluate.logic import Evaluation
    from components.validate_model.logic import Thresholds
    from components.validate_model.logic import validate_model as bless

    thresholds = Thresholds(min_auc, max_auc_drop, max_slice_auc_drop, min_slice_examples)
    with metadata.pipeline_step(
        metadata_connection, run_id, job_id, "validate_model", dataclasses.asdict(thresholds)
    ) as step:
        step.input(metadata.EVALUATION, evaluation.uri)
        result = bless(Evaluation.from_json(Path(evaluation.path).read_text()), thresholds)
        Path(blessing.path).write_text(result.to_json())
        Path(blessing_view.path).write_text(result.markdown())
        blessing.metadata.update(blessed=result.blessed, reasons=result.reasons)
        step.output(
            metadata.BLESSING,
            blessing.uri,
            blessed=result.blessed,
            verdict=result.verdict,
            reasons="; ".join(result.reasons),
        )
