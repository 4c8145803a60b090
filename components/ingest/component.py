"""KFP adapter for ingest."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(data_root: str, feature_tables: str, dataset: str, window_spans: int, eval_percent: int, metadata_connection: str,
           run_id: str, job_id: str, trigger: str, reason: str, train_examples: Output[Dataset], eval_examples: Output[Dataset]):
    """Reads the latest window of complete spans and splits it into train and eval."""
    from pathlib import Path

    from components.common import metadata
    from components.ingest.logic import ingest as ingest_spans
    from pipelines.compile import pipeline_version
    from pipelines.config import load_dataset

    config = load_dataset(dataset)
    run_id = run_id or job_id  # a recurring run has no run id of its own
    store = metadata.MetadataStore(metadata_connection)
    store.update_run(run_id, trigger=trigger, reason=reason, dataset=dataset, pipeline_version=pipeline_version())
    parameters = {"data_root": data_root, "feature_tables": feature_tables, "dataset": dataset,
                  "window_spans": window_spans, "eval_percent": eval_percent}
    with store.step(run_id, "ingest", parameters) as step:
        result = ingest_spans(Path(data_root), window_spans, eval_percent, config.key, Path(train_examples.path),
                              Path(eval_examples.path), config, feature_tables)
        step.inputs(metadata.SPAN, sorted({str(Path(f).parent) for f in result.files}), dataset=dataset)
        for split, artifact, rows in (("train", train_examples, result.train_rows), ("eval", eval_examples, result.eval_rows)):
            artifact.metadata.update(split=split, spans=list(result.spans), files=list(result.files), rows=rows,
                                     fingerprint=result.fingerprint,
                                     departures=list(result.features.departures if result.features else ()))
            step.output(metadata.EXAMPLES, artifact.uri, split=split, dataset=dataset, rows=rows,
                        spans=",".join(result.spans), last_span=result.spans[-1], fingerprint=result.fingerprint)
        if result.features is not None:
            # Which flights had no feature row at their point in time (documented defaults used).
            store.update_run(run_id, weather_missing=result.features.weather_missing,
                             planes_missing=result.features.planes_missing,
                             first_departure=result.features.departures[0],
                             last_departure=result.features.departures[1])
