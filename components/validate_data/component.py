"""KFP adapter for data validation."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_data(
    dataset: str,
    categorical_drift_threshold: float,
    numeric_drift_threshold: float,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    train_statistics: Input[Artifact],
    eval_statistics: Input[Artifact],
    train_examples: Input[Dataset],
    eval_examples: Input[Dataset],
    schema: Output[Artifact],
    anomalies: Output[Artifact],
    drift_report: Output[Markdown],
):
    """Finds schema anomalies and measures drift against the previous span; records and shows both.

    The examples are read only to name the file, values and row of an anomaly about values
    (a new column, values outside a domain).
    """
    import dataclasses
    import json
    import shutil
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.common.tfdv_io import load_schema, load_statistics
    from components.validate_data.logic import locate_values
    from components.validate_data.logic import validate_data as validate

    parameters = {
        "dataset": dataset,
        "categorical_drift_threshold": categorical_drift_threshold,
        "numeric_drift_threshold": numeric_drift_threshold,
    }
    with metadata.pipeline_step(metadata_connection, run_id, job_id, "validate_data", parameters) as step:
        config = load_dataset(dataset)
        shutil.copyfile(config.schema_path, schema.path)
        step.input(metadata.SCHEMA, schema.uri, dataset=dataset, source=str(config.schema_path))
        step.inputs(
            metadata.STATISTICS, [train_statistics.metadata["stored_at"], eval_statistics.metadata["stored_at"]]
        )
        spans = train_statistics.metadata["spans"]
        baseline = step.store.previous_statistics(dataset, before_span=spans[-1])
        if baseline is not None:
            step.input(metadata.STATISTICS, baseline.uri)
        committed_schema = load_schema(config.schema_path)
        result = validate(
            {
                "train": load_statistics(Path(train_statistics.path)),
                "eval": load_statistics(Path(eval_statistics.path)),
            },
            committed_schema,
            config.categorical_features,
            baseline=load_statistics(Path(baseline.uri)) if baseline else None,  # on the home volume
            baseline_name=f"span {baseline.properties['spans']}" if baseline else "",
            categorical_threshold=categorical_drift_threshold,
            numeric_threshold=numeric_drift_threshold,
        )
        if result.anomalies:
            # The spans' files first; the examples also hold the features joined from the feature store.
            files = [*train_statistics.metadata["files"], train_examples.path, eval_examples.path]
            located = locate_values(result.anomalies, committed_schema, [Path(f) for f in files], config.key)
            result = dataclasses.replace(result, anomalies=located)
        Path(anomalies.path).write_text("\n".join(a.message() for a in result.anomalies))
        Path(drift_report.path).write_text(result.markdown())
        anomalies.metadata.update(
            count=len(result.anomalies),
            drifted=list(result.drifted_features),
            messages=[a.message() for a in result.anomalies],
            files=train_statistics.metadata["files"],
        )
        step.output(
            metadata.ANOMALIES,
            anomalies.uri,
            count=len(result.anomalies),
            spans=",".join(spans),
            drifted=",".join(result.drifted_features),
        )
        step.output(
            metadata.DRIFT,
            drift_report.uri,
            drifted=",".join(result.drifted_features),
            baseline=result.baseline,
            spans=",".join(spans),
            measures=json.dumps({d.feature: round(d.value, 6) for d in result.drift}),
        )
