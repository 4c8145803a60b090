"""KFP adapter for statistics."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def statistics(
    dataset: str,
    engine: str,
    beam_pipeline_args: str,
    statistics_root: str,
    metadata_connection: str,
    run_id: str,
    job_id: str,
    train_examples: Input[Dataset],
    eval_examples: Input[Dataset],
    train_statistics: Output[Artifact],
    eval_statistics: Output[Artifact],
    statistics_view: Output[HTML],
):
    """TFDV statistics of both splits, kept on the home volume for later runs, and TFDV's view for the UI."""
    import shlex
    from pathlib import Path

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.common.tfdv_io import load_schema, load_statistics
    from components.image import BEAM_WORKER_IMAGE
    from components.statistics.logic import (
        BEAM,
        beam_location,
        compute_statistics,
        keep_statistics,
        statistics_html,
        with_worker_image,
    )

    parameters = {
        "dataset": dataset,
        "statistics_engine": engine,
        "beam_pipeline_args": beam_pipeline_args,
        "statistics_root": statistics_root,
    }
    with metadata.pipeline_step(metadata_connection, run_id, job_id, "statistics", parameters) as step:
        schema = load_schema(load_dataset(dataset).schema_path)
        beam_arguments = shlex.split(beam_pipeline_args)
        if engine == BEAM:
            beam_arguments = with_worker_image(beam_arguments, BEAM_WORKER_IMAGE)
        for examples, output in ((train_examples, train_statistics), (eval_examples, eval_statistics)):
            step.input(metadata.EXAMPLES, examples.uri)
            result = compute_statistics(
                Path(examples.path),
                Path(output.path),
                schema,
                engine,
                beam_arguments,
                # Beam's workers elsewhere read the split from the artifact store and write beside
                # the output there, when it is object storage they reach; else this pod's copies.
                beam_location(examples.path, examples.uri),
                beam_location(output.path, output.uri) + ".beam-statistics",
            )
            # Later runs and the drift trigger read these from the home volume, never from this
            # run's artifact store, which a pod of another run cannot read.
            kept = keep_statistics(
                Path(output.path), Path(statistics_root), dataset, step.run_id, examples.metadata["split"]
            )
            output.metadata.update(examples.metadata, rows=result.rows, features=result.features, stored_at=str(kept))
            step.output(
                metadata.STATISTICS,
                str(kept),
                dataset=dataset,
                split=examples.metadata["split"],
                rows=result.rows,
                spans=",".join(examples.metadata["spans"]),
                last_span=examples.metadata["spans"][-1],
            )
        Path(statistics_view.path).write_text(
            statistics_html(load_statistics(Path(train_statistics.path)), load_statistics(Path(eval_statistics.path)))
        )
