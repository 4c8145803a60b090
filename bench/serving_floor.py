"""How close `ct serve` comes to the floor: a bare HTTP server under the same load, in one run.

The floor is the standard library's threaded HTTP server (HTTP/1.1 keep-alive, TCP_NODELAY)
answering every POST with one constant JSON prediction: what any Python HTTP service pays
before doing anything. `ct serve` serves a flights model trained on a real month, the client
sending flight facts only (weather and aircraft features looked up in the online store), as
the demo's clients do: as one process, and as the manifests run it, with `--workers 2`. Each
server runs in its own processes, and so does the load: an open loop (latency counted from
each request's scheduled time, so a stall is not hidden) on persistent connections, first at
200 requests/s, then a ramp of rates to find the highest with p99 under 20 ms and no errors,
for single-row and 100-row requests.

Then, at the single-row peak `ct serve --workers 2` reached, 20 new model versions are
published one a second while the load runs (every new version taken as the canary for all
traffic, the request log on): none of those requests may fail.

Prints one row per server and request size, the hot swaps, and last the line
`p99 X ms at 200 rps (floor F ms), peak P rps` (single-row, `ct serve --workers 2`).

    .venv/bin/python bench/serving_floor.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from http_load import CONNECTIONS
from serving_load import prepare_serving_home, publish_recorded

from pipelines.demo.serving_process import free_port, start_serving

RATE = 200
P99_LIMIT_MS = 20.0
SINGLE_ROW_RATES = (200, 400, 600, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500, 2000, 2500, 3000, 3500, 4000)
HUNDRED_ROW_RATES = (20, 50, 100, 150, 200, 300, 400)
SWAPS = 20
WORKERS = ["--workers", "2"]  # as manifests/components/serving/serving.yaml runs it
DEPLOYED = "ct serve -w2"
# Each server and request size is first sent its bodies (2,000 flights, one or a hundred a
# request), unmeasured, at this rate for this long: four or five passes, so that every worker
# has loaded its model and met the flights' feature keys before the latency counts (the kernel
# hands each connection to one worker: after one pass, half of a flight's next requests would
# reach a worker that has not read its features yet).
WARM_UP = {"single": (800, 10), "hundred": (20, 5)}  # requests/s, seconds
LOAD = Path(__file__).parent / "http_load.py"


def load(port: int, path: str, bodies_file: Path, rate: float, seconds: float) -> dict:
    """One open-loop load at `rate`, from a process of its own; its p50, p99 and errors."""
    completed = subprocess.run(
        [sys.executable, str(LOAD), "load", str(port), path, str(bodies_file), str(rate), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


def swaps_under_load(port: int, path: str, bodies_file: Path, rate: float, publish) -> dict:
    """The load at `rate` from its own process while `publish()` puts out SWAPS new versions, one a second."""
    process = subprocess.Popen(
        [sys.executable, str(LOAD), "load", str(port), path, str(bodies_file), str(rate), str(SWAPS + 3)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(SWAPS):
            time.sleep(1.0)
            publish()
    except BaseException:
        process.kill()
        raise
    output, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"the load process failed with code {process.returncode}")
    return json.loads(output)


def ramp(port: int, path: str, bodies_file: Path, rates: tuple[int, ...], seconds: float) -> tuple[dict, int]:
    """The load at the first rate, and the highest rate whose p99 stayed under P99_LIMIT_MS with no errors."""
    first, peak = None, 0
    for rate in rates:
        result = load(port, path, bodies_file, rate, seconds)
        first = first or result
        if result["errors"] or result["p99"] >= P99_LIMIT_MS:
            break
        peak = rate
    return first, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        prepared = prepare_serving_home(folder)
        files = {}
        for name, bodies in (("single", prepared.facts), ("hundred", prepared.hundred_facts)):
            files[name] = folder / f"{name}.json"
            files[name].write_text(json.dumps(bodies))
        results = {}

        def both_sizes(server_name: str, port: int) -> None:
            for name, rates in (("single", SINGLE_ROW_RATES), ("hundred", HUNDRED_ROW_RATES)):
                load(port, prepared.path, files[name], *WARM_UP[name])
                results[server_name, name] = ramp(port, prepared.path, files[name], rates, args.seconds)

        floor_port = free_port()
        floor = subprocess.Popen([sys.executable, str(LOAD), "floor", str(floor_port)])
        try:
            _wait_for_port(floor_port)
            both_sizes("floor", floor_port)
        finally:
            floor.terminate()
            floor.wait()
        for server_name, options in (("ct serve", []), (DEPLOYED, WORKERS)):
            port = free_port()
            server = start_serving(
                prepared.home.root, port, ["--canary-percent", "0", *options], wait_for="/v2/health/ready"
            )
            try:
                both_sizes(server_name, port)
            finally:
                server.terminate()
                server.wait()
        swap_rate = results[DEPLOYED, "single"][1] or RATE  # the first rate when none passed
        port = free_port()
        server = start_serving(
            prepared.home.root, port, ["--canary-percent", "100", *WORKERS], wait_for="/v2/health/ready"
        )
        try:
            load(port, prepared.path, files["single"], *WARM_UP["single"])
            swapped = swaps_under_load(
                port,
                prepared.path,
                files["single"],
                swap_rate,
                lambda: publish_recorded(prepared.home, prepared.model_name, prepared.model_dir),
            )
        finally:
            server.terminate()
            server.wait()
    print(f"\nopen loop, {CONNECTIONS} keep-alive connections from another process, {args.seconds:g} s a rate")
    print(
        f"{'server':<14}{'rows':>6}{'rate':>7}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}  peak (p99 < {P99_LIMIT_MS:g} ms)"
    )
    for (server_name, name), (first, peak) in results.items():
        rows, rates = (1, SINGLE_ROW_RATES) if name == "single" else (100, HUNDRED_ROW_RATES)
        rate = rates[0]
        print(
            f"{server_name:<14}{rows:>6}{rate:>7}{first['p50']:>9.2f}{first['p99']:>9.2f}{first['errors']:>8}  "
            f"{'at least ' if peak == rates[-1] else ''}{peak:,} requests/s ({peak * rows:,} rows/s)"
        )
    print(
        f"hot swaps ({DEPLOYED}): {SWAPS} versions published while serving {swap_rate:,} single-row requests/s: "
        f"{swapped['requests']:,} requests, {swapped['errors']} failed, {swapped['versions']} versions answered, "
        f"p50 {swapped['p50']:.2f} ms, p99 {swapped['p99']:.2f} ms"
    )
    ours, floor_first = results[DEPLOYED, "single"], results["floor", "single"][0]
    print(f"p99 {ours[0]['p99']:.1f} ms at {RATE} rps (floor {floor_first['p99']:.1f} ms), peak {ours[1]} rps")


def _wait_for_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port}")


if __name__ == "__main__":
    main()
