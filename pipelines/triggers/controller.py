"""The trigger controller (`ct watch`): at most one run at a time, whatever fires.

Each check collects what fired. While a run is going, firings are kept and coalesced
into the next run. A run starts when something is pending, the cooldown since the last
run has passed (a forced manual trigger skips it), and the data window's fingerprint
has not been trained on yet (unless forced): retraining on the same data gives the same
model, so a drift or performance firing waits for new data and then starts the run.
Every run's context in ML Metadata records every trigger that fired and why.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from components.common.datasets import load_dataset
from components.common.errors import CtError, DataError, HomeBusyError, NotFoundError
from components.common.home import Home
from components.common.metadata import FAILED, MetadataStore
from components.common.spans import Location, reading_storage
from components.common.version import code_version_on_disk
from components.ingest.logic import fingerprint, latest_spans
from pipelines.home_lock import HomeLock
from pipelines.local_run import new_run_id
from pipelines.recovery import recover_home
from pipelines.retention import collect_garbage
from pipelines.step_host import FEATURE_STORE, RUNS, STEP_HOST_LOG, HostedRun, StepHost
from pipelines.triggers.config import TriggerConfig
from pipelines.triggers.sources import (
    DistributionShiftTrigger,
    Firing,
    ManualTrigger,
    NewDataTrigger,
    PerformanceDropTrigger,
    ScheduleTrigger,
    Trigger,
)
from serving.canary.kserve import InferenceServiceRollout, KServeCanary, RolloutError

log = logging.getLogger(__name__)


class Launcher(Protocol):
    def prepare(self) -> None:
        """Starts what the runs need before the first one, while the controller goes on."""

    def start(self, run_id: str, trigger: str, reason: str) -> None: ...

    def finished(self) -> int | None:
        """None while the run goes on, then its exit code."""

    def close(self) -> None:
        """Stops what the launcher keeps between runs (a local run still going ends with it)."""


class LocalLauncher:
    """Runs `ct run` in a child process forked from the launcher's warm step host (which imported
    the stack and the pipeline once), so a run's output and crashes stay out of the controller.

    The child is handed the home's lock the controller holds (the same lock: its open file), and
    dies with the controller: a killed controller leaves no run going on unseen.
    """

    def __init__(self, home: Home, data_root: Location, parameters: Mapping[str, Any], lock: HomeLock | None = None):
        self.home = home
        self.data_root = data_root
        self.parameters = parameters
        self.lock = lock or HomeLock(home.lock_file, "ct watch")
        self._run: HostedRun | None = None
        self._host: StepHost | None = None
        self._host_version = ""

    def command(self, run_id: str, trigger: str, reason: str) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "pipelines.cli",
            "run",
            "--data-root",
            str(self.data_root),
            "--home",
            str(self.home.root),
            "--run-id",
            run_id,
            "--trigger",
            trigger,
            "--reason",
            reason,
        ]
        if self.home.metadata:
            command += ["--metadata", self.home.metadata]
        for name, value in self.parameters.items():
            command += ["--param", f"{name}={value}"]
        return command

    def prepare(self) -> None:
        """Starts the warm step host: it imports the stack while the controller waits for a trigger."""
        self._warm_host()

    def start(self, run_id: str, trigger: str, reason: str) -> None:
        """Starts the run in the launcher's warm step host (started by `prepare` or at the first
        run, kept for the next); what `ct run` prints (its summary, or why it could not start)
        goes to the end of the run's log, after the steps' output."""
        log = self.home.logs / f"{run_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as output:
            self._run = self._warm_host().start_run(self.command(run_id, trigger, reason), output, self.lock.fileno())

    def _warm_host(self) -> StepHost:
        """The host of the last run, or a new one when it died or the code changed since it
        started (it imported the code of then)."""
        version = code_version_on_disk()
        if self._host is not None and (not self._host.alive() or self._host_version != version):
            self._host.close()
            self._host = None
        if self._host is None:
            self._host = StepHost(self.home.logs / STEP_HOST_LOG, also_import=(*RUNS, *FEATURE_STORE))
            self._host_version = version
        return self._host

    def finished(self) -> int | None:
        return None if self._run is None else self._run.poll()

    def close(self) -> None:
        """Ends a run still going, and stops the host."""
        if self._run is not None:
            self._run.close()
        if self._host is not None:
            self._host.close()
            self._host = None


class KfpLauncher:
    """Submits the run to the Kubeflow Pipelines API (the code `ct submit` uses) and follows its state."""

    def __init__(self, config: TriggerConfig):
        from pipelines.submit import KfpApi

        self.api = KfpApi(config.kfp_host, config.kfp_namespace or None)
        self.experiment = config.kfp_experiment
        self.parameters = {"dataset": config.dataset, **config.parameters}
        if config.metadata:
            self.parameters["metadata_connection"] = config.metadata
        self._run: str | None = None

    def prepare(self) -> None:
        pass  # the cluster runs the steps

    def start(self, run_id: str, trigger: str, reason: str) -> None:
        parameters = {**self.parameters, "run_id": run_id, "trigger": trigger, "reason": reason}
        self._run = self.api.submit_run(parameters, self.experiment, run_id).id

    def finished(self) -> int | None:
        succeeded = None if self._run is None else self.api.run_succeeded(self._run)
        return None if succeeded is None else (0 if succeeded else 1)

    def close(self) -> None:
        pass  # nothing kept between runs


@dataclasses.dataclass
class Event:
    """What the controller did, for its log and the demo's timeline."""

    at: float
    kind: str  # "started", "finished", "waiting", "rollout", "collected"
    run_id: str
    triggers: tuple[str, ...]
    reason: str


class Controller:
    """Checks the triggers and starts runs, holding the home's lock while it checks and while its
    run goes on; while another process holds the home (a `ct run`, another controller) it skips
    its checks. Taking the home after a holder died, it first closes that holder's run."""

    def __init__(
        self,
        config: TriggerConfig,
        triggers: Sequence[Trigger],
        launcher: Launcher,
        store: MetadataStore,
        clock: Callable[[], float] = time.time,
        canary: KServeCanary | None = None,
        lock: HomeLock | None = None,
    ):
        self.config = config
        self.home = Home(config.home, config.metadata)
        self.lock = lock or HomeLock(self.home.lock_file, "ct watch")
        self._recovered = False
        self._busy = ""
        self.canary = canary
        self.triggers = list(triggers)
        self.launcher = launcher
        self.store = store
        self.clock = clock
        self.pending: list[Firing] = []
        self.events: list[Event] = []
        self.running: str | None = None
        self._last_finished = float("-inf")
        self._window_spans = int(config.parameters.get("window_spans", 1))
        self._window: tuple[tuple, str] = ((), "")  # the window's file versions and fingerprint

    def tick(self) -> None:
        if not self._hold_home():
            return
        try:
            self._check(self.clock())
        finally:
            if self.running is None:
                self.lock.release()

    def _hold_home(self) -> bool:
        """Takes the home's lock for a check (kept while a run goes on); False while another holds it."""
        if self.lock.held:
            return True
        try:
            stale = self.lock.acquire()
        except HomeBusyError as error:
            if str(error) != self._busy:
                log.info("skipping checks while another holds the home: %s", error)
                self._busy = str(error)
            return False
        self._busy = ""
        if stale is not None or not self._recovered:
            recovery = recover_home(self.home, self.store)
            self._recovered = True
            if recovery.closed_runs or recovery.removed:
                log.warning(
                    "closed interrupted runs %s; removed %s",
                    ", ".join(recovery.closed_runs) or "-",
                    ", ".join(map(str, recovery.removed)) or "-",
                )
        return True

    def _check(self, now: float) -> None:
        for trigger in self.triggers:
            try:
                self.pending.extend(trigger.check(now))
            except Exception:  # one broken trigger must not stop the others
                log.exception("trigger %s failed its check", trigger.name)
        if self.running is not None:
            code = self.launcher.finished()
            if code is None:
                return
            self.events.append(Event(now, "finished", self.running, (), f"exit code {code}"))
            log.info("run %s finished with exit code %s", self.running, code)
            finished, self.running = self.running, None
            self._close_if_undecided(finished, code)
            if code == 0 and self.canary is not None:
                self._roll_out(now, lambda: self.canary.run_finished(finished, now))
            if code == 0 and self.config.retention is not None:
                self._collect(now)
            self._last_finished = now
        if self.canary is not None:
            self._roll_out(now, lambda: self.canary.tick(now))
        if self.pending:
            self._maybe_start(now)

    def _close_if_undecided(self, run_id: str, code: int) -> None:
        """A run that failed without deciding (killed, evicted, a pod that never started its
        steps' work) would stay "running" in ML Metadata: it is decided as failed, with the exit
        it ended with. A run that recorded nothing is left unrecorded; a success is not judged."""
        try:
            decided = self.store.run(run_id).decision
        except NotFoundError:
            log.warning("run %s ended (exit code %s) and recorded nothing in ML Metadata", run_id, code)
            return
        if decided:
            return
        if code == 0:
            log.warning("run %s succeeded without recording a decision", run_id)
            return
        self.store.update_run(run_id, decision=FAILED, reasons=f"the run ended (exit code {code}) before it decided")
        log.warning("run %s ended before it decided; recorded as failed", run_id)

    def _maybe_start(self, now: float) -> None:
        forced = any(f.force for f in self.pending)
        if not forced and now - self._last_finished < self.config.cooldown_seconds:
            return
        triggers = tuple(dict.fromkeys(f.trigger for f in self.pending))
        reason = "; ".join(f"{f.trigger}: {f.reason}" for f in self.pending)
        try:
            files = [path for span in latest_spans(self.config.data_root, self._window_spans) for path in span.files]
            window = "" if forced else self._fingerprint(files)
        except DataError as error:
            self._wait(now, triggers, f"{reason} -- waiting: {error}")
            return
        if not forced:
            if self.store.trained_on(self.config.dataset, window):
                self._wait(
                    now,
                    triggers,
                    f"{reason} -- waiting for new data: the latest data was trained on already "
                    f"(fingerprint {window[:12]}); a forced manual trigger retrains it",
                )
                return
        run_id = new_run_id()
        self.lock.record(run_id)
        self.launcher.start(run_id, ", ".join(triggers), reason)
        self.running = run_id
        self.pending = []
        self.events.append(Event(now, "started", run_id, triggers, reason))
        log.info("run %s started by %s: %s", run_id, ", ".join(triggers), reason)

    def _fingerprint(self, files: list[Location]) -> str:
        """The window's fingerprint, read again only when a file's version changed: a trigger
        waiting on data trained already costs a look at each file per poll, not a read of the
        whole window (from object storage, too).

        Raises:
            DataError: a file gone or unreadable.
        """
        versions = tuple((str(path), _version(path)) for path in files)
        if versions != self._window[0]:
            self._window = (versions, fingerprint(files))
        return self._window[1]

    def _roll_out(self, now: float, step: Callable[[], str | None]) -> None:
        """One rollout step on KServe; an API failure is logged and retried on a later check."""
        try:
            said = step()
        except RolloutError as error:
            said = f"rollout failed: {error}"
        if said:
            self.events.append(Event(now, "rollout", "", (), said))
            log.info("%s", said)

    def _collect(self, now: float) -> None:
        """Retention after a successful run, still holding the home; a failure is logged, never fatal."""
        try:
            report = collect_garbage(self.home, self.store, self.config.retention)
        except (OSError, CtError) as error:  # a file it could not remove; a damaged repository record
            log.warning("retention failed: %s", error)
            return
        if report.removals:
            said = report.describe().splitlines()[0]
            self.events.append(Event(now, "collected", "", (), said))
            log.info("retention: %s", said)

    def _wait(self, now: float, triggers: tuple[str, ...], reason: str) -> None:
        """Keeps what fired for when there is data to train on; says so once per new firing."""
        if self.events and self.events[-1].kind == "waiting" and self.events[-1].triggers == triggers:
            return
        self.events.append(Event(now, "waiting", "", triggers, reason))
        log.info("not running yet: %s", reason)

    def close(self) -> None:
        """Stops what the controller keeps between runs: the launcher's step host (a local run
        still going ends with it), the distribution-shift trigger's statistics workers."""
        self.launcher.close()
        for trigger in self.triggers:
            if isinstance(trigger, DistributionShiftTrigger):
                trigger.close()

    def run_forever(self, heartbeat: Path | None = None) -> None:
        """Checks forever; touches `heartbeat` after every check, for a liveness probe."""
        self.launcher.prepare()
        while True:
            self.tick()
            if heartbeat is not None:
                heartbeat.touch()
            time.sleep(self.config.poll_seconds)


def build_controller(config: TriggerConfig, launcher: Launcher | None = None) -> Controller:
    """The controller with every trigger the configuration turns on (manual always)."""
    home = Home(config.home, config.metadata).create()
    store = MetadataStore(home.metadata_connection)
    lock = HomeLock(home.lock_file, "ct watch")
    dataset = load_dataset(config.dataset)
    triggers: list[Trigger] = [ManualTrigger(home.triggers)]
    if config.schedule:
        triggers.append(ScheduleTrigger(config.schedule))
    if config.new_data:
        triggers.append(NewDataTrigger(config.data_root, config.dataset, store, config.new_data.min_new_spans))
    if config.performance:
        triggers.append(PerformanceDropTrigger(config.performance, dataset.model_name))
    if config.distribution_shift:
        triggers.append(DistributionShiftTrigger(config.distribution_shift, home.request_log, dataset, store))
    if launcher is None:
        launcher = (
            KfpLauncher(config)
            if config.kfp_host
            else LocalLauncher(home, config.data_root, {"dataset": config.dataset, **config.parameters}, lock)
        )
    canary = None
    if config.kserve_rollout:
        settings = config.kserve_rollout
        canary = KServeCanary(
            InferenceServiceRollout.in_cluster_or_kubeconfig(settings.namespace, settings.name),
            store,
            dataset.model_name,
            settings,
            home,
        )
    return Controller(config, triggers, launcher, store, canary=canary, lock=lock)


def _version(path: Location) -> tuple:
    """What changes when the file's content does: size and modification time in nanoseconds on a
    file system, the ETag in object storage (S3's is the content's hash)."""
    with reading_storage(path):
        if isinstance(path, Path):
            stat = path.stat()
            return (stat.st_size, stat.st_mtime_ns)
        return (path.fs.info(path.path).get("ETag"),)
