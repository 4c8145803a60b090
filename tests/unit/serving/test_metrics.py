"""Metrics of workers serving one port add up (serving/metrics.py, `MetricsPeers`)."""

from __future__ import annotations

from serving.metrics import Metrics, MetricsPeers, exposition, summed


def _value(text: str, series: str) -> str:
    [found] = [line for line in text.splitlines() if line.startswith(series + " ")]
    return found.split(" ")[1]


def _scrape(metrics: Metrics, peers: MetricsPeers) -> str:
    """What a scrape reaching this worker answers (PredictionService.render_metrics)."""
    peers.publish(metrics.series())
    return exposition(summed(peers.every_workers()))


def test_workers_counts_add_up_and_a_dead_workers_counts_stay(tmp_path):
    first, second = Metrics("m"), Metrics("m")
    first_peers, second_peers = MetricsPeers(tmp_path, "101"), MetricsPeers(tmp_path, "102")
    first.observe("1", "tfserving", 0.7)
    first.observe("1", "tfserving", 30.0)
    second.observe("1", "tfserving", 3.0)
    second.observe("2", "v2", 1.0)
    second.error("1", 400)
    for worker in (first, second):  # each applies the one verdict, and failed to load version 3
        worker.canary_decision("rolled_back")
        worker.load_failed()
    first_peers.publish(first.series())
    text = _scrape(second, second_peers)
    assert _value(text, 'ct_requests_total{model="m",version="1",api="tfserving"}') == "3"
    assert _value(text, 'ct_requests_total{model="m",version="2",api="v2"}') == "1"  # one worker's version
    assert _value(text, 'ct_request_errors_total{model="m",version="1",code="400"}') == "1"
    bucket = 'ct_request_latency_ms_bucket{model="m",version="1",le="%s"}'
    assert [_value(text, bucket % le) for le in ("0.5", "1", "2", "5", "25", "50", "+Inf")] == list("0112233")
    assert _value(text, 'ct_request_latency_ms_sum{model="m",version="1"}') == "33.700"
    assert _value(text, 'ct_request_latency_ms_count{model="m",version="1"}') == "3"
    assert _value(text, 'ct_canary_decisions_total{model="m",decision="rolled_back"}') == "1"  # one pod, one verdict
    assert _value(text, 'ct_model_load_failures_total{model="m"}') == "1"
    assert text.count("# TYPE ct_requests_total counter") == 1

    first.observe("1", "tfserving", 1.0)  # counted by the first worker after its last publish, then it dies
    successor = Metrics("m")  # the worker started in its place counts from zero
    successor.observe("1", "tfserving", 1.0)
    MetricsPeers(tmp_path, "103").publish(successor.series())
    (tmp_path / "104.json").write_text("not json")  # not a worker's: skipped
    text = _scrape(second, second_peers)
    assert _value(text, 'ct_requests_total{model="m",version="1",api="tfserving"}') == "4"


def test_a_counter_never_falls_between_scrapes_of_different_workers(tmp_path):
    first, second = Metrics("m"), Metrics("m")
    first_peers, second_peers = MetricsPeers(tmp_path, "1"), MetricsPeers(tmp_path, "2")
    seen = []
    for _ in range(3):
        first.observe("1", "tfserving", 1.0)
        seen.append(_scrape(first, first_peers))  # the first worker counts live...
        first.observe("1", "tfserving", 1.0)  # ...then counts more it has not published
        seen.append(_scrape(second, second_peers))  # the second sums the first's last publication
    counts = [int(_value(text, 'ct_requests_total{model="m",version="1",api="tfserving"}')) for text in seen]
    assert counts == sorted(counts) and counts[-1] == 5
