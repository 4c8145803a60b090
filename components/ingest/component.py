"""KFP adapter for ingest."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(
    data_root: str,
    feature_tables: str,
    dataset: str,
    window_spans: int,
    eval_percent: int,
    eval_split: str,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    trigger: str,
    reason: str,
    train_examples: Output[Dataset],
    eval_examples: Output[Dataset],
):
    """Reads the latest window of complete spans and splits it into train and eval (`eval_split`:
    `time`, the newest rows, or `hash`, by a hash of the key); records which rule split them."""
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.common.spans import data_location
    from components.common.version import code_version
    from components.ingest.logic import ingest as ingest_spans

    parameters = {
        "data_root": data_root,
        "feature_tables": feature_tables,
        "dataset": dataset,
        "window_spans": window_spans,
        "eval_percent": eval_percent,
        "eval_split": eval_split,
    }
    with metadata.pipeline_step(metadata_connection, run_id, job_id, "ingest", parameters) as step:
        step.update_run(trigger=trigger, reason=reason, dataset=dataset, code_version=code_version())
        config = load_dataset(dataset)
        result = ingest_spans(
            data_location(data_root),
            window_spans,
            eval_percent,
            config.key,
            Path(train_examples.path),
            Path(eval_examples.path),
            config,
            feature_tables,
            eval_split,
        )
        for span, folder in result.span_folders.items():
            step.input(metadata.SPAN, folder, dataset=dataset, span=span)
        # Which rows were judged: the newest (and from when) or a hash share; `ct lineage` shows it too.
        step.update_run(split_rule=result.split_rule, eval_cut=result.eval_cut)
        departures = list(result.features.departures) if result.features else []
        for split, artifact, rows in (
            ("train", train_examples, result.train_rows),
            ("eval", eval_examples, result.eval_rows),
        ):
            artifact.metadata.update(
                split=split,
                spans=list(result.spans),
                files=list(result.files),
                rows=rows,
                fingerprint=result.fingerprint,
                departures=departures,
                split_rule=result.split_rule,
                eval_cut=result.eval_cut,
            )
            step.output(
                metadata.EXAMPLES,
                artifact.uri,
                split=split,
                dataset=dataset,
                rows=rows,
                spans=",".join(result.spans),
                last_span=result.spans[-1],
                fingerprint=result.fingerprint,
                split_rule=result.split_rule,
                eval_cut=result.eval_cut,
            )
        if result.features is not None:
            # Which flights had no feature row at their point in time (documented defaults used).
            step.update_run(
                weather_missing=result.features.weather_missing,
                planes_missing=result.features.planes_missing,
                first_departure=departures[0],
                last_departure=departures[1],
            )
