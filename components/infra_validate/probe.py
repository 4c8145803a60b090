"""Loads models in a fresh process and answers prediction requests, as a server would.

Reads one JSON document on stdin: {"models": [dir, ...], "requests": [{"instances": [...]}, ...]}.
Writes one on stdout: the signature of each model, and the first model's response to each
request ({"predictions": [...]} or {"error": "..."}) with its latency.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from components.common import model_io


def main() -> None:
    request = json.load(sys.stdin)
    started = time.perf_counter()
    models = [model_io.load(Path(path)) for path in request["models"]]
    load_seconds = time.perf_counter() - started
    signatures = [model_io.signature_of(model) for model in models]
    responses = []
    for body in request["requests"]:
        started = time.perf_counter()
        try:
            columns = model_io.instances_to_columns(signatures[0], body["instances"])
            response = {"predictions": model_io.predict(models[0], columns).tolist()}
        except model_io.RequestError as error:
            response = {"error": str(error)}
        response["seconds"] = time.perf_counter() - started
        responses.append(response)
    json.dump(
        {
            "signatures": [dataclasses.asdict(s) for s in signatures],
            "load_seconds": load_seconds,
            "responses": responses,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
