"""KFP adapter for the data gate."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from components.image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def data_gate(metadata_connection: str, run_id: str, job_id: str, anomalies: Input[Artifact]):
    """Stops the run when data validation found schema anomalies (after its views reached the UI)."""
    from components.common import metadata
    from components.data_gate.logic import stop_on_anomalies

    with metadata.pipeline_step(metadata_connection, run_id, job_id, "data_gate", {}) as step:
        step.input(metadata.ANOMALIES, anomalies.uri)
        stop_on_anomalies(anomalies.metadata["messages"], anomalies.metadata["files"])
