"""The service's own canary: a new version takes a share of the traffic and is promoted or
rolled back on the feedback for its answers and for stable's over the same period
(serving/canary/judge.py).

One replica judges from the feedback it received itself. Replicas sharing a home (the
production Deployment runs two) judge from what all of them logged there, the request log
and the feedback log since the canary was pushed, and the first verdict written to the
shared VerdictBook is the one every replica follows (serving/canary/verdicts.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from components.common.metadata import PROMOTED, MetadataStore
from serving.canary.journal import OutcomeJournal
from serving.canary.judge import CanaryVerdict, VersionOutcomes, judge_canary, logged_versions, recent_logged_outcomes
from serving.canary.verdicts import VerdictBook
from serving.config import ServingConfig
from serving.metrics import Metrics
from serving.registry import CANARY, LoadedModel, ModelRegistry

log = logging.getLogger(__name__)


class InProcessCanary:
    """Remembers which version answered each request, takes feedback, and decides canaries."""

    def __init__(
        self,
        model_name: str,
        config: ServingConfig,
        metrics: Metrics,
        store: MetadataStore | None,
        shared: SharedLogs | None = None,
    ):
        self.model_name = model_name
        self.config = config
        self.metrics = metrics
        self.store = store
        self.shared = shared
        self.journal = OutcomeJournal(config.journal_size)
        self.decisions: list[dict[str, Any]] = []
        self._checked = float("-inf")

    def loaded(self, registry: ModelRegistry, model: LoadedModel, role: str) -> None:
        if role == CANARY:
            # Compare canary and stable over the same period only.
            self.journal.reset([model.version, registry.routing.stable.version])

    def recent(self, models: Sequence[LoadedModel], last: int) -> dict[int, VersionOutcomes]:
        """Each version's most recent `last` labelled predictions: this replica's journal's, or,
        with replicas sharing a home, those of all their logs when these hold as many or more.
        A label may reach another replica than the one that answered (with two workers, each
        journal knows about a quarter of them); the logs are written every
        `request_log_flush_seconds`, and a sampled request log holds fewer. Requests and
        errors are this replica's own."""
        local = {model.version: self.journal.recent(model.version, last) for model in models}
        if self.shared is None or not models:
            return local
        logged = recent_logged_outcomes(
            self.shared.request_log,
            self.shared.feedback_log,
            {model.version: model.pushed_at for model in models},
            last,
            time.time(),
        )
        return {
            version: mine if mine.labelled > logged[version].labelled else _with_own_counts(logged[version], mine)
            for version, mine in local.items()
        }

    def judge(self, registry: ModelRegistry) -> None:
        """Promotes or rolls back the canary once the evidence is in; records the verdict.

        A verdict another replica wrote is followed at once; the evidence is weighed every
        `canary_check_seconds` (the sequential test allows any number of looks; each costs
        tens of milliseconds with tens of thousands of labels, kept off most ticks)."""
        routing = registry.routing
        if routing.canary is None:
            return
        version = routing.canary.version
        written = self.shared.verdicts.read(version) if self.shared is not None else None
        if written is not None:
            self._follow(registry, version, written)
            return
        if time.monotonic() - self._checked < self.config.canary_check_seconds:
            return
        self._checked = time.monotonic()
        self._look(registry, routing)
        # Counted once the look's verdict, if any, is applied and recorded: whoever waits for a
        # look (the demo) then sees the routing and ML Metadata that followed it.
        self.metrics.canary_checked()

    def _look(self, registry: ModelRegistry, routing) -> None:
        """Weighs the evidence; applies the verdict it reaches, or the one another replica wrote first."""
        version = routing.canary.version
        if self.shared is None:
            self._apply(registry, version, self._verdict_from_journal(routing), record=True)
            return
        verdict = self._verdict_from_logs(routing)
        if verdict is None:
            return
        if self.shared.verdicts.write_once(version, verdict):
            self._apply(registry, version, verdict, record=True)
        else:  # another replica was first: its verdict holds
            self._follow(registry, version, self.shared.verdicts.read(version))

    def _follow(self, registry: ModelRegistry, version: int, written: dict) -> None:
        """Applies the verdict another replica wrote (it recorded it)."""
        self._apply(
            registry, version, CanaryVerdict(written["decision"], written["reason"], written["numbers"]), record=False
        )

    def _verdict_from_journal(self, routing) -> CanaryVerdict | None:
        return judge_canary(
            self.journal.outcomes(routing.stable.version),
            self.journal.outcomes(routing.canary.version),
            self.config.canary_test,
            self.config.canary_max_error_rate,
        )

    def _verdict_from_logs(self, routing) -> CanaryVerdict | None:
        """From every replica's logged predictions and the feedback any of them received, since
        the canary was pushed (the same moment for all); errors are this replica's own."""
        stable, canary = logged_versions(
            self.shared.request_log,
            self.shared.feedback_log,
            routing.canary.pushed_at,
            routing.stable.version,
            routing.canary.version,
        )
        return judge_canary(
            stable,
            _with_own_counts(canary, self.journal.outcomes(routing.canary.version)),
            self.config.canary_test,
            self.config.canary_max_error_rate,
        )

    def _apply(self, registry: ModelRegistry, version: int, verdict: CanaryVerdict | None, record: bool) -> None:
        """Routes by the verdict; the replica that made it records it in ML Metadata."""
        if verdict is None:
            return
        changed = registry.promote(version) if verdict.decision == PROMOTED else registry.roll_back(version)
        if not changed:
            return
        self.metrics.canary_decision(verdict.decision)
        log.info("canary version %s %s: %s", version, verdict.decision, verdict.reason)
        if record and self.store is not None:
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


def _with_own_counts(logged: VersionOutcomes, local: VersionOutcomes) -> VersionOutcomes:
    """The logged labels with this replica's requests and errors (errors are not logged)."""
    return dataclasses.replace(logged, requests=local.requests, errors=local.errors)


@dataclasses.dataclass(frozen=True)
class SharedLogs:
    """What replicas sharing a home judge from and write to."""

    request_log: Path
    feedback_log: Path
    verdicts: VerdictBook
