"""Push: publish a blessed model into the versioned model repository, atomically.

The pusher checks both blessings itself (the pipeline cannot branch on kfp.local, and a
pusher that trusts its caller can be wired wrong), then publishes through the model
repository's one atomic publish (components/common/model_repository.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from components.common import model_repository
from components.infra_validate.logic import InfraBlessing
from components.validate_model.logic import ModelBlessing


@dataclasses.dataclass(frozen=True)
class PushResult:
    pushed: bool
    version: int | None
    path: str
    reasons: tuple[str, ...]
    digest: str = ""


def push(
    model_dir: Path,
    blessing: ModelBlessing,
    infra_blessing: InfraBlessing,
    repository: Path,
    model_name: str,
    run_id: str = "",
) -> PushResult:
    """Publishes the model as the next version, or refuses and says why.

    Returns:
        What happened: the new version and its folder, or `pushed=False` with the reasons.
    """
    refusals = []
    if not blessing.blessed:
        refusals += [f"not blessed: {reason}" for reason in blessing.reasons]
    if not infra_blessing.blessed:
        refusals += [f"not infra-blessed: {reason}" for reason in infra_blessing.reasons]
    if refusals:
        return PushResult(False, None, "", tuple(refusals))
    published = model_repository.publish(
        model_dir,
        repository,
        model_name,
        {"run_id": run_id, "blessing": blessing.reasons, "infra_blessing": infra_blessing.reasons},
    )
    reasons = [f"blessed: {r}" for r in blessing.reasons] + [f"infra-blessed: {r}" for r in infra_blessing.reasons]
    return PushResult(True, published.version, str(published.path), tuple(reasons), published.digest)
