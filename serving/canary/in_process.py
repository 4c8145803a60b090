"""The service's own canary: a new version takes a share of the traffic and is promoted or
rolled back on the feedback this process receives for its answers and for stable's over
the same period (serving/canary/judge.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

from components.common.metadata import PROMOTED, MetadataStore
from serving.canary.journal import OutcomeJournal
from serving.canary.judge import judge_canary
from serving.config import ServingConfig
from serving.metrics import Metrics
from serving.registry import CANARY, LoadedModel, ModelRegistry

log = logging.getLogger(__name__)


class InProcessCanary:
    """Remembers which version answered each request, takes feedback, and decides canaries."""

    def __init__(self, model_name: str, config: ServingConfig, metrics: Metrics, store: MetadataStore | None):
        self.model_name = model_name
        self.config = config
        self.metrics = metrics
        self.store = store
        self.journal = OutcomeJournal(config.journal_size)
        self.decisions: list[dict[str, Any]] = []

    def loaded(self, registry: ModelRegistry, model: LoadedModel, role: str) -> None:
        if role == CANARY:
            # Compare canary and stable over the same period only.
            self.journal.reset([model.version, registry.routing.stable.version])

    def judge(self, registry: ModelRegistry) -> None:
        """Promotes or rolls back the canary once the evidence is in; records the verdict."""
        routing = registry.routing
        if routing.canary is None:
            return
        verdict = judge_canary(
            self.journal.outcomes(routing.stable.version),
            self.journal.outcomes(routing.canary.version),
            self.config.canary_min_labelled,
            self.config.canary_auc_tolerance,
            self.config.canary_max_error_rate,
        )
        if verdict is None:
            return
        version = routing.canary.version
        changed = registry.promote(version) if verdict.decision == PROMOTED else registry.roll_back(version)
        if not changed:
            return
        self.metrics.canary_decision(verdict.decision)
        log.info("canary version %s %s: %s", version, verdict.decision, verdict.reason)
        if self.store is not None:
            self.store.record_canary_decision(
                self.model_name, version, verdict.decision, verdict.reason, verdict.numbers
            )
        # Last: a decision listed here is already recorded everywhere else.
        self.decisions.append(
            {
                "version": version,
                "decision": verdict.decision,
                "reason": verdict.reason,
                "numbers": verdict.numbers,
                "time": time.time(),
            }
        )
