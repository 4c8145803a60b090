"""`python -m tests.support.hosted_probe FACTS_FILE EXIT [GO_FILE]`: what a command the step host
forked sees (its parent, environment, working folder, arguments, the lock and connection handed
to it; the parent and open files of a step it runs through kfp.local), written to FACTS_FILE
(`FACTS_FILE.started` first, then, when given, it waits for GO_FILE before its step); then it
exits with EXIT, or raises when EXIT is `raise`. With EXIT `hold`, its step writes its pid to
`FACTS_FILE.step` and sleeps instead. (No `from __future__ import annotations`: kfp reads the
component's annotations as types.)"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from kfp import dsl, local
from kfp.dsl import Artifact, Output

from pipelines.home_lock import LOCK_FD_ENV
from pipelines.step_host import HOST_CONNECTION_ENV, own_host, run_connection, steps_in_host


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def describe_step(out: Output[Artifact]):
    import json
    import os

    files = []
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            found = os.stat(f"/proc/self/fd/{descriptor}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        files.append([found.st_dev, found.st_ino])
    with open(out.path, "w") as file:
        json.dump({"ppid": os.getppid(), "open_files": files}, file)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def hold_step(pid_file: str):
    import os
    import time

    with open(pid_file + ".writing", "w") as file:
        file.write(str(os.getpid()))
    os.replace(pid_file + ".writing", pid_file)
    time.sleep(120)


def main(facts_file: Path, exit: str, go_file: Path | None) -> None:
    lock = os.environ.get(LOCK_FD_ENV, "")
    facts = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": sys.argv[1:],
        "marker": os.environ.get("CT_TEST_MARKER"),
        "cwd": os.getcwd(),
        "lock_file": [os.fstat(int(lock)).st_dev, os.fstat(int(lock)).st_ino] if lock.isdigit() else None,
        "tensorflow_preloaded": "tensorflow" in sys.modules,
        "connection_handed": HOST_CONNECTION_ENV in os.environ,
    }
    print("a line on stdout")
    print("a line on stderr", file=sys.stderr)
    facts_file.with_suffix(".started").write_text(str(os.getpid()))
    while go_file is not None and not go_file.exists():
        time.sleep(0.05)
    with tempfile.TemporaryDirectory() as root:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
        with own_host() as own, run_connection(own, Path(root) / "own-host.log", Path(root) / "host.log") as connection:
            with steps_in_host(connection):
                if exit == "hold":
                    hold_step(pid_file=str(facts_file.with_suffix(".step")))
                task = describe_step()
        facts["step"] = json.loads(Path(task.outputs["out"].path).read_text())
    facts_file.write_text(json.dumps(facts))
    if exit == "raise":
        raise ValueError("the probe was asked to fail")
    sys.exit(int(exit))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]) if len(sys.argv) > 3 else None)
