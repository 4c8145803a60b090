"""Helpers for tests that talk to a real prediction server on loopback."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request

from components.common import metadata
from components.push.logic import MANIFEST

MODEL = "flight-delay"


def publish(repository, model_dir, version, store=None):
    """Publishes a model version into the repository (and, with a store, records its push)."""
    target = repository / MODEL / str(version)
    shutil.copytree(model_dir, target)
    (target / MANIFEST).write_text(json.dumps({"version": version}))
    if store is not None:
        with store.step(f"run-{version}", "push", {}) as step:
            step.output(metadata.PUSHED_MODEL, str(target), model_name=MODEL, version=version, run_id=f"run-{version}",
                        state="live")


def call(server, path, body=None, headers=None, raw=None):
    """One HTTP request; returns (status, decoded JSON body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(server.url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
