"""`ct serve` as a process: a stop (SIGTERM, as a pod is stopped) loses nothing it acknowledged."""

from __future__ import annotations

import signal
from types import SimpleNamespace

from components.common.home import Home
from components.common.metadata import MetadataStore
from pipelines.demo.serving_process import free_port, start_serving
from serving.credentials import serving_token
from serving.request_log import read_log
from tests.support.serving_helpers import MODEL, call, publish


def test_sigterm_writes_every_acknowledged_prediction_and_label(tmp_path, trained_model, rows):
    home = Home(tmp_path / "home").create()
    publish(home.model_repository, trained_model, 1, MetadataStore(home.metadata_connection))
    port = free_port()
    process = start_serving(home.root, port, wait_for="/v2/health/ready")
    try:
        server = SimpleNamespace(url=f"http://127.0.0.1:{port}")
        ids = [
            call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})[1]["request_ids"][0] for row in rows[:30]
        ]
        authorization = {"Authorization": serving_token(home.serving_token).authorization}
        feedback = {"feedback": [{"request_id": i, "label": n % 2} for n, i in enumerate(ids)]}
        assert call(server, f"/v1/models/{MODEL}:feedback", feedback, headers=authorization)[1]["logged"] == 30
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert sorted(read_log(home.request_log).request_id) == sorted(ids)
    assert sorted(read_log(home.feedback_log).request_id) == sorted(ids)
