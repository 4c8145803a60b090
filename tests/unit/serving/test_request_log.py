"""The request and feedback logs on the home volume: bounded, and readable by judges outside the service."""

from __future__ import annotations

from serving.request_log import ParquetLog, RequestLog, read_log
from tests.support.serving_helpers import FEEDBACK, MODEL, TOKEN, call


def test_request_log_stays_under_its_size_bound(tmp_path):
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=10, max_bytes=20_000)
    for i in range(400):
        log.append([{"x": float(i), "name": "row" * 20}], [0.5], 1, [f"id-{i}"])
    files = log.files()
    assert sum(f.stat().st_size for f in files) <= 20_000 and len(files) < 40
    assert read_log(tmp_path).request_id.iloc[-1] == "id-399"


def test_feedback_is_logged_for_judges_outside_the_service(serve, rows, tmp_path):
    # On KServe the feedback may reach another revision's pod: the shared log keeps it anyway.
    server, service, _, _ = serve(feedback_log=ParquetLog(tmp_path / "feedback_log", 1000, 10**9))
    answer = call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:3]})[1]
    items = [{"request_id": rid, "label": 1} for rid in answer["request_ids"]] + [
        {"request_id": TOKEN.sign("elsewhere-0"), "label": 0}  # issued by another replica
    ]
    status, body = call(server, f"/v1/models/{MODEL}:feedback", {"feedback": items}, headers=FEEDBACK)
    assert status == 200 and body == {"accepted": 3, "unknown": [items[3]["request_id"]], "rejected": [], "logged": 4}
    service.stop()  # flushes
    logged = read_log(tmp_path / "feedback_log")
    assert logged.request_id.tolist() == [*answer["request_ids"], items[3]["request_id"]] and logged.label.tolist() == [
        1,
        1,
        1,
        0,
    ]
