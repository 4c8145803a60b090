"""KFP adapter for finalize, the pipeline's exit handler."""

from kfp import dsl

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def finalize(metadata_connection: str, run_id: str, job_id: str) -> str:
    """Decides a run that ended undecided as failed; returns the run's decision (the run's output)."""
    from components.common.metadata import MetadataStore
    from components.finalize.logic import finalize_run

    return finalize_run(MetadataStore(metadata_connection), run_id or job_id)
