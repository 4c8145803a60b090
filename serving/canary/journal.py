"""Recent predictions by request id, so that feedback can be matched to the version that answered."""

from __future__ import annotations

import collections
import threading

from serving.canary.judge import VersionOutcomes


class OutcomeJournal:
    """Remembers recent predictions by request id, so that feedback can be matched to them.

    Bounded: beyond `capacity` predictions the oldest are forgotten (feedback for them is
    reported as unknown). Per-version tallies restart with `reset()`, when a canary starts,
    so that canary and stable are compared over the same period, and keep at most the last
    `COMPARED` labelled predictions (stable's would otherwise grow until a canary arrives);
    the last `RECENT` labelled predictions of each version are kept apart from that, for the
    online metric.
    """

    RECENT = 10_000
    COMPARED = 100_000

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._recent: dict[int, collections.deque[tuple[float, int]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=self.RECENT)
        )
        self._predictions: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._requests: collections.Counter[int] = collections.Counter()
        self._errors: collections.Counter[int] = collections.Counter()
        self._labelled: dict[int, collections.deque[tuple[float, int]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=self.COMPARED)
        )
        self._lock = threading.Lock()

    def predicted(self, version: int, request_ids: list[str], scores: list[float]) -> None:
        with self._lock:
            self._requests[version] += 1
            for request_id, score in zip(request_ids, scores):
                self._predictions[request_id] = (version, score)
            while len(self._predictions) > self._capacity:
                self._predictions.popitem(last=False)

    def failed(self, version: int) -> None:
        with self._lock:
            self._requests[version] += 1
            self._errors[version] += 1

    def feedback(self, request_id: str, label: int) -> int | None:
        """Records the true label; returns the version that answered, or None for an unknown id."""
        with self._lock:
            found = self._predictions.pop(request_id, None)
            if found is None:
                return None
            version, score = found
            self._labelled[version].append((score, label))
            self._recent[version].append((score, label))
            return version

    def outcomes(self, version: int) -> VersionOutcomes:
        """The version's tallies since its last reset."""
        with self._lock:
            return self._tally(version, list(self._labelled.get(version, [])))

    def recent(self, version: int, last: int) -> VersionOutcomes:
        """The version's most recent `last` labelled predictions, across resets."""
        with self._lock:
            return self._tally(version, list(self._recent.get(version, []))[-last:])

    def _tally(self, version: int, labelled: list[tuple[float, int]]) -> VersionOutcomes:
        return VersionOutcomes(
            version,
            self._requests[version],
            self._errors[version],
            tuple(s for s, _ in labelled),
            tuple(label for _, label in labelled),
        )

    def reset(self, versions: list[int]) -> None:
        """Starts the tallies of these versions afresh (a canary compares like with like)."""
        with self._lock:
            for version in versions:
                self._requests.pop(version, None)
                self._errors.pop(version, None)
                self._labelled.pop(version, None)
