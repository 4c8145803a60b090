"""Homes with runs in them, as the pipeline leaves them (real ML Metadata, real files), and
processes that hold a home's lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from components.common import metadata, model_repository
from components.common.home import Home
from components.common.metadata import MetadataStore

MODEL = "flight-delay"

HOLD_SCRIPT = """
import sys, time
from pathlib import Path
from pipelines.home_lock import HomeLock
lock = HomeLock(Path(sys.argv[1]), "ct run")
lock.acquire(sys.argv[2])
print("held", flush=True)
time.sleep(120)
"""


def record_run(
    home: Home,
    store: MetadataStore,
    run_id: str,
    decision: str = metadata.PUSHED,
    push: bool = False,
    output_bytes: int = 1000,
) -> int | None:
    """A run as `ct run` leaves it: outputs under pipeline_root/<run id>/, a log, its steps and
    artifacts in ML Metadata, and (push) a published version whose lineage is the run's model.

    Returns:
        The version pushed, if any.
    """
    outputs = home.pipeline_root / run_id / "continuous-training-2013" / "train"
    outputs.mkdir(parents=True)
    (outputs / "model").mkdir()
    (outputs / "model" / "saved_model.pb").write_bytes(b"m" * output_bytes)
    home.logs.mkdir(parents=True, exist_ok=True)
    (home.logs / f"{run_id}.log").write_text(f"log of {run_id}\n")
    model_uri = str((outputs / "model").resolve())
    with store.step(run_id, "train", {}) as step:
        step.output(metadata.MODEL, model_uri)
    version = None
    if push:
        # Judged against the production model: named in the new version's lineage, not part of it.
        blessing = str((outputs / "blessing").resolve())
        (outputs / "blessing").write_text("blessed")
        production = store.production_model(MODEL)
        with store.step(run_id, "validate_model", {}) as step:
            step.input(metadata.MODEL, model_uri)
            if production is not None:
                step.input(metadata.PUSHED_MODEL, production.uri)
            step.output(metadata.BLESSING, blessing)
        published = model_repository.publish(outputs / "model", home.model_repository, MODEL, {"run_id": run_id})
        version = published.version
        with store.step(run_id, "push", {}) as step:
            step.input(metadata.MODEL, model_uri)
            step.input(metadata.BLESSING, blessing)
            step.pushed_model(MODEL, version, str(published.path), published.digest)
    store.update_run(run_id, decision=decision)
    return version


def hold_home(lock_file: Path, run_id: str) -> subprocess.Popen:
    """A real process holding a home's lock for `run_id` (until killed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(lock_file), run_id], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether a process has exited (or is a zombie) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def appeared(path: Path, seconds: float = 60.0) -> bool:
    """Whether a file exists within `seconds`."""
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()
