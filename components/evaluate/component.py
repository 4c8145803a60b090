"""KFP adapter for evaluation."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(dataset: str, min_slice_examples: int, metadata_connection: str, run_id: str, job_id: str, model: Input[Model],
             eval_examples: Input[Dataset], evaluation: Output[Artifact], metrics: Output[Metrics],
             classification_metrics: Output[ClassificationMetrics], evaluation_view: Output[Markdown]):
    """Scores the eval split with the candidate and the production model (resolved from ML Metadata)."""
    from pathlib import Path

    from components.common import metadata
    from components.evaluate.logic import evaluate as score
    from pipelines.config import load_dataset

    config = load_dataset(dataset)
    run_id = run_id or job_id  # a recurring run has no run id of its own
    store = metadata.MetadataStore(metadata_connection)
    with store.step(run_id, "evaluate", {"dataset": dataset, "min_slice_examples": min_slice_examples}) as step:
        step.input(metadata.MODEL, model.uri)
        step.input(metadata.EXAMPLES, eval_examples.uri)
        production = store.production_model(config.model_name)
        if production is not None:
            step.input(metadata.PUSHED_MODEL, production.uri)
        result = score(Path(model.path), Path(eval_examples.path), config,
                       metadata.local_path(production.uri) if production else None,
                       int(production.properties["version"]) if production else None, min_slice_examples)
        Path(evaluation.path).write_text(result.to_json())
        Path(evaluation_view.path).write_text(result.markdown())
        for name, value in result.candidate.overall.as_dict().items():
            metrics.log_metric(name, value)
        classification_metrics.log_roc_curve(*result.roc)
        classification_metrics.log_confusion_matrix(["negative", "positive"], result.confusion)
        step.output(metadata.EVALUATION, evaluation.uri, **{k: float(v) for k, v in result.candidate.overall.as_dict().items()},
                    production_version=result.production_version or 0)
