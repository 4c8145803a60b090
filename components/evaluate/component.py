"""KFP adapter for evaluation."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: str,
    min_slice_examples: int,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    model: Input[Model],
    eval_examples: Input[Dataset],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    evaluation_view: Output[Markdown],
):
    """Scores the eval split with the candidate and the production model (resolved from ML Metadata)."""
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.evaluate.logic import evaluate as score

    parameters = {"dataset": dataset, "min_slice_examples": min_slice_examples}
    with metadata.pipeline_step(metadata_connection, run_id, job_id, "evaluate", parameters) as step:
        config = load_dataset(dataset)
        step.input(metadata.MODEL, model.uri)
        step.input(metadata.EXAMPLES, eval_examples.uri)
        production = step.store.production_model(config.model_name)
        if production is not None:
            step.input(metadata.PUSHED_MODEL, production.uri)
        result = score(
            Path(model.path),
            Path(eval_examples.path),
            config,
            Path(production.uri) if production else None,  # in the model repository
            int(production.properties["version"]) if production else None,
            min_slice_examples,
        )
        Path(evaluation.path).write_text(result.to_json())
        Path(evaluation_view.path).write_text(result.markdown())
        for name, value in result.candidate.overall.as_dict().items():
            metrics.log_metric(name, value)
        classification_metrics.log_roc_curve(*result.roc)
        classification_metrics.log_confusion_matrix(["negative", "positive"], result.confusion)
        step.output(
            metadata.EVALUATION,
            evaluation.uri,
            production_version=result.production_version or 0,
            **{k: float(v) for k, v in result.candidate.overall.as_dict().items()},
        )
