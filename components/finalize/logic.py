"""Finalize: every run ends decided. The pipeline's exit handler runs this last, whether the
steps succeeded, failed or were killed; a run that ended before any step decided it (a pod
evicted, killed for memory, a run cancelled) is decided as failed, so it is never left
"running" in ML Metadata. Its answer is the run's output, shown by the Kubeflow UI.
"""

from __future__ import annotations

from components.common.errors import NotFoundError
from components.common.metadata import FAILED, MetadataStore

UNDECIDED = "the run ended before it decided (a step failed without a record, was killed, or the run was cancelled)"


def finalize_run(store: MetadataStore, run_id: str) -> str:
    """Decides an undecided run as failed; returns the run's decision and why."""
    try:
        run = store.run(run_id)
    except NotFoundError:
        run = None
    if run is None or not run.decision:
        store.update_run(run_id, decision=FAILED, reasons=UNDECIDED)
        return f"{FAILED}: {UNDECIDED}"
    version = f" version {run.properties['version']}" if "version" in run.properties else ""
    return f"{run.decision}{version}: {run.properties.get('reasons', '')}"
