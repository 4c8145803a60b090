"""The main job on bundled data: 2013 replayed month by month, the whole loop running by itself.

A prediction service (`ct serve`) and the trigger controller run on one home folder.
Each month:
  1. the month's flights arrive as live traffic, sent by a load generator in another
     process to the model in production (and its canary), and their true outcomes
     follow as feedback; the canary is promoted or rolled back on them;
  2. the month's span lands under the data root (`_SUCCESS` last);
  3. the controller checks its triggers (new data every second span, online performance,
     distribution shift of the logged traffic) and runs the pipeline if any fired; a
     pushed model is hot-swapped into the service as the next canary.
The first model is asked for by hand (a manual trigger), as a team would bootstrap.
Nothing is staged: which trigger fires when is decided by the data. The timeline is
printed, and an HTML report is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, TextIO

import pyarrow.parquet as pq

from components.common.datasets import load_dataset
from components.common.errors import ConfigError
from components.common.home import Home
from components.common.metadata import EVALUATION, FAILED, PUSHED, MetadataStore
from components.materialize.logic import materialize_window
from features.sources import FEATURES_FOLDER, write_sources
from features.store import apply as apply_features
from pipelines.demo.report import auc_text, write_report
from pipelines.demo.sample_data import flight_spans, parse_months, write_span
from pipelines.demo.serving_process import free_port, launch_serving, wait_for_serving
from pipelines.home_lock import HomeLock, holding
from pipelines.local_run import output_to
from pipelines.triggers.config import NewDataSettings, PerformanceSettings, ShiftSettings, TriggerConfig
from pipelines.triggers.controller import build_controller
from pipelines.triggers.sources import request_manual_run
from serving.request_log import PREFIX

# Written in a home the demo made: only such a home (or an empty one) is deleted by the next demo.
DEMO_MARKER = ".ct-demo-home"
# The service looks for new versions, writes its logs and weighs the canary's evidence often:
# a month's traffic is sent in seconds, and the next step waits for them (FeedbackWeighed).
LOOK_SECONDS = 0.25
# How often the demo ticks the controller while a run goes on.
POLL_SECONDS = 0.2
SERVE_OPTIONS = (
    "--canary-percent",
    "50",
    "--poll-seconds",
    str(LOOK_SECONDS / 2),
    "--request-log-flush-seconds",
    str(LOOK_SECONDS),
    "--canary-check-seconds",
    str(LOOK_SECONDS),
    "--workers",
    "2",
)
PARAMETERS = {"epochs": 3}


@dataclasses.dataclass
class MonthRow:
    month: str
    traffic: dict | None = None
    triggers: str = ""
    reasons: str = ""
    run_id: str = ""
    decision: str = ""
    pushed_version: int | None = None
    offline_auc: float | None = None  # the run's candidate on its eval split
    failure: str = ""  # why a failed run failed, and its log
    serving_after: list[str] = dataclasses.field(default_factory=list)

    @property
    def outcome(self) -> str:
        """`pushed v4`, `not blessed`, `stopped by data validation`, or `-` for a month without a run."""
        return f"{self.decision} v{self.pushed_version}" if self.pushed_version else (self.decision or "-")

    @property
    def online(self) -> str:
        """`v1 0.712 (1400), v2 0.705 (600)`: online AUC (requests) of each version that answered the month."""
        if self.traffic is None:
            return "-"
        return ", ".join(f"v{v} {t['auc']:.3f} ({t['requests']})" for v, t in self.traffic["versions"].items())


def _get(port: int, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _served(port: int, model_name: str) -> list[str]:
    status, body = _get(port, f"/v1/models/{model_name}")
    return (
        [
            f"{s['version']} {s.get('label', s['state'])}"
            for s in body.get("model_version_status", [])
            if s["state"] == "AVAILABLE"
        ]
        if status == 200
        else []
    )


def fresh_demo_home(path: Path) -> Home:
    """An empty home for the demo, marked as the demo's, so a later demo may start it afresh.

    Only what the demo made is ever deleted: a folder that is absent, empty, or marked as a
    previous demo's home (DEMO_MARKER).

    Raises:
        ConfigError: `path` is a file, or a folder with contents the demo did not make.
        HomeBusyError: a run or a controller holds the previous demo home.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: a file, not a folder: the demo needs a home folder of its own (--home)")
    if path.is_dir() and any(path.iterdir()):
        if not (path / DEMO_MARKER).is_file():
            raise ConfigError(
                f"{path}: not empty and not a demo's home (no {DEMO_MARKER}): the demo deletes its home "
                "to start afresh, and deletes only its own; give a new or empty folder with --home"
            )
        lock = HomeLock(Home(path).lock_file, "ct demo")
        with holding(lock, ""):  # never under a run or a controller still using it
            for child in path.iterdir():
                if child == lock.path:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    home = Home(path).create()
    (path / DEMO_MARKER).write_text("made by `ct demo`: a later `ct demo --home` here deletes this folder's contents\n")
    return home


def run_demo(home_path: Path, months_text: str, rows_per_month: int = 4000) -> int:
    """Replays the months; returns 0 when no run failed (pushed, not blessed and stopped by bad data are outcomes).

    The terminal gets the timeline, a row a month (on a terminal, a status line while the month
    goes on); what the libraries print goes to HOME/logs/demo.log, named at the end.
    """
    months = parse_months(months_text)
    home = fresh_demo_home(home_path)
    with _terminal_apart(home.logs / "demo.log") as terminal:
        rows = _replay(home, months, rows_per_month, terminal)
    return 0 if all(r.decision != FAILED for r in rows) else 1


def _replay(home: Home, months: list[str], rows_per_month: int, terminal: TextIO) -> list[MonthRow]:
    dataset = load_dataset("flights")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = TriggerConfig(
        home=home.root,
        data_root=home.root / "data",
        parameters=PARAMETERS,
        cooldown_seconds=0,
        poll_seconds=POLL_SECONDS,
        # Retrain on new data every second span; drift or a performance drop retrains sooner.
        new_data=NewDataSettings(min_new_spans=2),
        performance=PerformanceSettings(url, min_auc=0.62, window=1000, min_samples=500),
        distribution_shift=ShiftSettings(
            categorical_threshold=0.1,
            numeric_threshold=0.3,
            window_rows=rows_per_month // 2,
            check_seconds=0,
            ignore_features=("month",),
            calibration_processes=2,  # the machine's cores are idle while the triggers are checked
        ),
    )
    rows: list[MonthRow] = []
    status = _status_line(terminal)
    with (
        open(home.logs / "serve.log", "w") as serve_log,
        tempfile.TemporaryDirectory() as scratch,
        LoadGenerator(url, home.serving_token) as clients,
    ):
        # The controller's step host is started first (January's run waits for its imports), then the
        # service, which imports while the feature store is registered (it opens the store when it appears).
        controller = build_controller(config)
        server = None
        try:
            controller.launcher.prepare()
            server = launch_serving(home.root, port, SERVE_OPTIONS, output=serve_log)
            write_sources(config.data_root / FEATURES_FOLDER)
            apply_features(home.feature_repo, config.data_root / FEATURES_FOLDER)
            store = MetadataStore(home.metadata_connection)
            request_manual_run(home.triggers, "first model: nothing in production yet")
            wait_for_serving(server, port)
            feedback = FeedbackWeighed(home, port)
            print(f"replaying {months[0]}..{months[-1]}: service at {url}, home {home.root}", file=terminal)
            print(
                f"{'month':<8} {'traffic (online AUC by version)':<38} {'triggers':<34} {'decision':<28} "
                f"{'offline AUC':<12} serving after",
                file=terminal,
            )
            for span in flight_spans(months):
                rows.append(
                    _month(
                        span,
                        port,
                        clients,
                        feedback,
                        Path(scratch),
                        controller,
                        store,
                        dataset.model_name,
                        rows_per_month,
                        status,
                    )
                )
                status("")
                print(_line(rows[-1]), file=terminal)
                if rows[-1].decision == FAILED:
                    print(f"{'':<8} {rows[-1].run_id}: {rows[-1].failure}", file=terminal)
        finally:
            status("")
            controller.close()
            if server is not None:
                server.terminate()
                server.wait()
    report = write_report(home, rows, store, dataset)
    print(
        f"\nreport: {report}\nruns: ct runs --home {home.root}    lineage: ct lineage --home {home.root}\n"
        f"logs: {home.logs}: demo.log (the libraries' output), serve.log (the service), <run id>.log (each run)",
        file=terminal,
    )
    return rows


@contextlib.contextmanager
def _terminal_apart(log: Path) -> Iterator[TextIO]:
    """While open, this process and its children print to `log`; the stream yielded prints where
    this process's stdout went before."""
    sys.stdout.flush()
    terminal = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    try:
        with output_to(log), open(log, "a", buffering=1) as python_output:
            # Python's own streams too, wherever they were pointed (a test's capture)
            with contextlib.redirect_stdout(python_output), contextlib.redirect_stderr(python_output):
                # and what the controller and its triggers log (a calibration's time, a run's end)
                handler = logging.StreamHandler(python_output)
                handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
                controller_log = logging.getLogger("pipelines.triggers")
                controller_log.addHandler(handler)
                before = controller_log.level, controller_log.propagate
                controller_log.setLevel(logging.INFO)
                controller_log.propagate = False  # once, not again by a handler a library put on the root
                try:
                    yield terminal
                finally:
                    controller_log.removeHandler(handler)
                    controller_log.level, controller_log.propagate = before
    finally:
        terminal.close()


def _status_line(terminal: TextIO) -> Callable[[str], None]:
    """What the month is doing: with the time in the log, and on a terminal one line rewritten in place."""

    def show(text: str) -> None:
        if text:
            print(f"{time.strftime('%H:%M:%S')} demo: {text}", file=sys.stderr, flush=True)
        if terminal.isatty():
            terminal.write(f"\r\x1b[K{text}")
            terminal.flush()

    return show


def _month(
    span,
    port: int,
    clients: LoadGenerator,
    feedback: FeedbackWeighed,
    scratch: Path,
    controller,
    store: MetadataStore,
    model_name: str,
    rows_per_month: int,
    status: Callable[[str], None],
) -> MonthRow:
    """One month: its traffic and feedback (if a model serves), then its span lands and the triggers are checked."""
    row = MonthRow(span.span_id)
    # The feature pipeline keeps the online store current as the month's weather comes in.
    status(f"{span.span_id}  the month's weather into the online store")
    materialize_window(
        Home(controller.config.home).feature_repo,
        controller.config.data_root / FEATURES_FOLDER,
        (span.frame.sched_dep.min(), span.frame.sched_dep.max()),
    )
    if _served(port, model_name):
        status(
            f"{span.span_id}  {min(rows_per_month, len(span.frame)):,} flights as live requests, then their outcomes"
        )
        traffic_file = scratch / f"{span.span_id}.parquet"
        span.frame.sample(min(rows_per_month, len(span.frame)), random_state=0).to_parquet(traffic_file)
        row.traffic = clients.send(traffic_file)
        feedback.sent(row.traffic["labelled"])
        feedback.wait_until_weighed(lambda: any(s.endswith(" canary") for s in _served(port, model_name)))
    status(f"{span.span_id}  the span lands; the triggers are checked")
    write_span(controller.config.data_root, span)
    _settle(controller, row, lambda: status(f"{span.span_id}  {row.triggers}: run {row.run_id}"))
    if row.run_id:
        run = store.run(row.run_id)
        row.decision = run.decision
        evaluations = store.run_artifacts(row.run_id, EVALUATION)
        row.offline_auc = float(evaluations[-1].properties["auc"]) if evaluations else None
        if run.decision == FAILED:
            log = Home(controller.config.home).logs / f"{row.run_id}.log"
            row.failure = f"{run.properties.get('reasons', '')} (log: {log})"
        if run.decision == PUSHED:
            row.pushed_version = int(run.properties["version"])
            _wait_for_version(port, model_name, row.pushed_version)
    row.serving_after = _served(port, model_name)
    return row


class FeedbackWeighed:
    """Waits until the service has seen the feedback sent so far: written to its feedback log
    (and so, unless a request-log write failed, the requests before it: the service writes
    the request log first) and, while a canary serves, weighed by the canary test after that. The triggers then see the
    month whole, and the canary's verdict, if the evidence suffices, comes before them: a
    pause would race the service's checks."""

    def __init__(self, home: Home, port: int, timeout: float = 30):
        self.folder = home.feedback_log
        self.port = port
        self.timeout = timeout
        self._sent = 0
        self._rows: dict[str, int] = {}  # of each log file: one appears whole and never changes

    def sent(self, labels: int) -> None:
        self._sent += labels

    def wait_until_weighed(self, canary_serves: Callable[[], bool]) -> None:
        """Returns once the feedback is written and then, if a canary serves, a look at the
        evidence began after that (a look that decides ends the canary).

        Raises:
            RuntimeError: the service did not in `timeout` seconds (what it did not do is named).
        """
        deadline = time.monotonic() + self.timeout
        self._wait(lambda: self._written() >= self._sent, deadline, f"{self._sent:,} labels in {self.folder}")
        looked = self._canary_checks()
        self._wait(
            lambda: not canary_serves() or self._canary_checks() > looked, deadline, "look at the canary's evidence"
        )

    def _wait(self, done: Callable[[], bool], deadline: float, what: str) -> None:
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service at port {self.port}: no {what} after {self.timeout:g} s")
            time.sleep(0.05)

    def _written(self) -> int:
        for path in self.folder.glob(f"{PREFIX}*.parquet"):
            if path.name not in self._rows:
                self._rows[path.name] = pq.ParquetFile(path).metadata.num_rows
        return sum(self._rows.values())

    def _canary_checks(self) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        return sum(int(n) for n in re.findall(r"^ct_canary_checks_total\{[^}]*\} (\d+)$", text, re.MULTILINE))


class LoadGenerator:
    """The demo's clients: one process (pipelines/demo/load_generator.py) for all months, started
    at once, sending a month's rows when given their file."""

    def __init__(self, url: str, token_file: Path):
        command = [sys.executable, "-m", "pipelines.demo.load_generator", "--url", url, "--token-file", str(token_file)]
        # Its errors go where this process's do (the demo's log).
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def send(self, rows_file: Path) -> dict:
        """Sends the file's rows and their outcomes; returns the load generator's summary.

        Raises:
            RuntimeError: the load generator exited (its reason is in the demo's log).
        """
        try:
            print(rows_file, file=self._process.stdin, flush=True)
        except BrokenPipeError:
            pass  # it exited: told below
        summary = self._process.stdout.readline()
        if not summary:
            raise RuntimeError(f"the load generator exited with code {self._process.wait()} (see the demo's log)")
        return json.loads(summary)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *_) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        self._process.wait()


def _settle(controller, row: MonthRow, started: Callable[[], None], timeout: float = 600) -> None:
    """Ticks the controller until it is idle; notes the run it started, if any (then calls `started`)."""
    deadline = time.monotonic() + timeout
    controller.tick()
    while controller.running is not None and time.monotonic() < deadline:
        if not row.run_id:
            event = controller.events[-1]
            row.run_id, row.triggers, row.reasons = event.run_id, ", ".join(event.triggers), event.reason
            started()
        time.sleep(controller.config.poll_seconds)
        controller.tick()


def _wait_for_version(port: int, model_name: str, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(s.startswith(f"{version} ") for s in _served(port, model_name)):
        time.sleep(0.2)


def _line(row: MonthRow) -> str:
    return (
        f"{row.month:<8} {row.online:<38} {row.triggers or '-':<34} {row.outcome:<28} "
        f"{auc_text(row.offline_auc):<12} {', '.join(row.serving_after)}"
    )
