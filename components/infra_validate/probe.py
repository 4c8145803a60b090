"""What runs in the fresh process: load the models and answer prediction requests, as a server would."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from components.common import model_io


def answer(models: list[str], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Loads each model, then answers every request with the first.

    Returns:
        The signature of each model, how long loading took, and the first model's response to
        each request ({"predictions": [...]} or {"error": "..."}) with its latency.
    """
    started = time.perf_counter()
    loaded = [model_io.SavedModel(Path(path), in_caller_thread=True) for path in models]  # as serving runs them
    load_seconds = time.perf_counter() - started
    signatures = [model.signature for model in loaded]
    responses = []
    for body in requests:
        started = time.perf_counter()
        try:
            columns = model_io.instances_to_columns(signatures[0], body["instances"])
            response = {"predictions": loaded[0].predict(columns).tolist()}
        except model_io.RequestError as error:
            response = {"error": str(error)}
        response["seconds"] = time.perf_counter() - started
        responses.append(response)
    return {
        "signatures": [dataclasses.asdict(s) for s in signatures],
        "load_seconds": load_seconds,
        "responses": responses,
    }
