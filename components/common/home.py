"""The home folder: where an installation keeps its state (a volume in a cluster)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

DEFAULT_HOME = Path(".ct")
# Where a pod mounts the home volume: every step, the service and the controller alike.
HOME_MOUNT = "/var/lib/ct"
# ML Metadata in a Kubeflow cluster: its gRPC service, as Kubeflow installs it.
KUBEFLOW_METADATA = "grpc://metadata-grpc-service.kubeflow:8080"


@dataclasses.dataclass(frozen=True)
class Home:
    """Where an installation keeps its state.

    Attributes:
        root: The home folder (a volume in a cluster).
        metadata: An ML Metadata connection (`grpc://host:port` in a cluster); empty for
            the SQLite file in the home folder.
    """

    root: Path
    metadata: str = ""

    @property
    def metadata_path(self) -> Path:
        return self.root / "metadata.sqlite"

    @property
    def metadata_connection(self) -> str:
        return self.metadata or f"sqlite:///{self.metadata_path.resolve()}"

    @property
    def pipeline_root(self) -> Path:
        return self.root / "pipeline_root"

    @property
    def model_repository(self) -> Path:
        return self.root / "models"

    @property
    def feature_repo(self) -> Path:
        """Feast's registry and configuration (and the SQLite online store, locally)."""
        return self.root / "feature_repo"

    @property
    def statistics(self) -> Path:
        """Every run's training and eval statistics, read by later runs and the drift trigger."""
        return self.root / "statistics"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def request_log(self) -> Path:
        return self.root / "request_log"

    @property
    def feedback_log(self) -> Path:
        """True outcomes received as feedback (request id, label), for judges outside the service."""
        return self.root / "feedback_log"

    @property
    def canary_verdicts(self) -> Path:
        """Each canary's verdict, written once by the first serving replica to reach it."""
        return self.root / "canary_verdicts"

    @property
    def triggers(self) -> Path:
        """Where `ct trigger` leaves manual run requests for `ct watch`."""
        return self.root / "triggers"

    def create(self) -> "Home":
        for path in (
            self.root,
            self.pipeline_root,
            self.model_repository,
            self.logs,
            self.request_log,
            self.feedback_log,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self


# The home as every pod mounts it (the claim at HOME_MOUNT): its layout gives the pipeline's defaults.
CLUSTER_HOME = Home(Path(HOME_MOUNT))
