"""KFP adapter for materialize."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def materialize(
    data_root: str,
    feature_tables: str,
    dataset: str,
    feature_repo: str,
    feature_redis: str,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    train_examples: Input[Dataset],
):
    """Loads the features of the run's flights into the online store; records views, window and rows."""
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.materialize.logic import materialize_window
    from features.sources import tables_root

    parameters = {"dataset": dataset, "feature_repo": feature_repo, "feature_redis": feature_redis}
    with metadata.pipeline_step(metadata_connection, run_id, job_id, "materialize", parameters) as step:
        if not load_dataset(dataset).feature_store:
            return  # nothing to load: the dataset's spans carry every feature
        step.input(metadata.EXAMPLES, train_examples.uri)
        windows = materialize_window(
            Path(feature_repo),
            tables_root(data_root, feature_tables),
            tuple(train_examples.metadata["departures"]),
            feature_redis,
        )
        for window in windows:
            step.output(
                metadata.FEATURES,
                f"{feature_repo}#{window.view}",
                view=window.view,
                start=window.start.isoformat(),
                end=window.end.isoformat(),
                rows=window.rows,
            )
