"""The home folder: where an installation keeps its state (a volume in a cluster)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from components.common.errors import ConfigError

DEFAULT_HOME = Path(".ct")
# Where a pod mounts the home volume: every step, the service and the controller alike.
HOME_MOUNT = "/var/lib/ct"
# ML Metadata in a Kubeflow cluster: its gRPC service, as Kubeflow installs it.
KUBEFLOW_METADATA = "grpc://metadata-grpc-service.kubeflow:8080"
# A run id names files and folders in the home (logs/<run id>.log, statistics/<dataset>/<run id>/):
# one path component, never `..`, no separator.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """The run id, if it is safe to name files in the home with.

    Raises:
        ConfigError: anything but letters, digits, `.`, `_` and `-` (first a letter or digit), or over 128 characters.
    """
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ConfigError(
            f"run id {run_id!r}: expected letters, digits, '.', '_' or '-' (first a letter or digit), "
            "at most 128 characters"
        )
    return run_id


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
    def serving_token(self) -> Path:
        """The serving token `ct serve` makes when none is configured (owner-only; serving/credentials.py)."""
        return self.root / "serving-token"

    @property
    def lock_file(self) -> Path:
        """Held by whoever runs the pipeline on this home, for the run's duration (pipelines/home_lock.py)."""
        return self.root / ".ct.lock"

    @property
    def triggers(self) -> Path:
        """Where `ct trigger` leaves manual run requests for `ct watch`."""
        return self.root / "triggers"

    def create(self) -> "Home":
        """Makes the home's folders.

        Raises:
            ConfigError: one cannot be made (a file in the way, no permission, a read-only volume), named.
        """
        for path in (
            self.root,
            self.pipeline_root,
            self.model_repository,
            self.logs,
            self.request_log,
            self.feedback_log,
        ):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise ConfigError(f"{path}: a file is where the home needs a folder") from None
            except OSError as error:
                raise ConfigError(f"{error.filename or path}: cannot make the home folder: {error.strerror}") from None
        return self


# The home as every pod mounts it (the claim at HOME_MOUNT): its layout gives the pipeline's defaults.
CLUSTER_HOME = Home(Path(HOME_MOUNT))
