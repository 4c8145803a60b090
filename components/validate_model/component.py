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
    blessing_confidence: float,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    evaluation: Input[Artifact],
    blessing: Output[Artifact],
    blessing_view: Output[Markdown],
):
    """Blesses the candidate when it clears the floor, is shown non-inferior to production overall,
    and no slice shows a regression (DeLong's paired test, Holm across slices)."""
    import dataclasses
    from pathlib import Path

    from components.common import metadata
    from components.evaluate.logic import Evaluation
    from components.validate_model.logic import Thresholds
    from components.validate_model.logic import validate_model as bless

    thresholds = Thresholds(min_auc, max_auc_drop, max_slice_auc_drop, min_slice_examples, blessing_confidence)
    with metadata.pipeline_step(
        metadata_connection, run_id, job_id, "validate_model", dataclasses.asdict(thresholds)
    ) as step:
        step.input(metadata.EVALUATION, evaluation.uri)
        result = bless(Evaluation.from_json(Path(evaluation.path).read_text()), thresholds)
        Path(blessing.path).write_text(result.to_json())
        Path(blessing_view.path).write_text(result.markdown())
        comparison = result.overall_comparison
        tested = (
            {
                "auc_change": comparison.value,
                "auc_change_low": comparison.interval[0],
                "auc_change_high": comparison.interval[1],
                "interval_confidence": result.interval_confidence,
                "p_value": comparison.p_value,
                "rule": comparison.rule,
            }
            if comparison
            else {"rule": result.checks[0].rule}
        )
        blessing.metadata.update(blessed=result.blessed, reasons=result.reasons, **tested)
        step.output(
            metadata.BLESSING,
            blessing.uri,
            blessed=result.blessed,
            verdict=result.verdict,
            reasons="; ".join(result.reasons),
            **tested,
        )
