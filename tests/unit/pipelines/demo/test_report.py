"""The demo report's charts and its offline-against-online view of each retraining."""

import math

from pipelines.demo.replay import MonthRow
from pipelines.demo.report import heat_table, line_chart, offline_and_next_online


def test_line_chart_draws_every_point_and_skips_missing_ones():
    svg = line_chart(
        ["2013-01", "2013-02", "2013-03"],
        {"version 1": {0: 0.7, 1: 0.65}, "version 2": {1: 0.72, 2: math.nan}},
        "online AUC",
    )
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and svg.count("<polyline") == 1
    assert "version 2: 0.7200" in svg


def test_heat_table_marks_values_above_the_threshold():
    table = heat_table(["temp"], ["2013-02", "2013-03"], {("temp", "2013-02"): 0.05, ("temp", "2013-03"): 0.9}, 0.1)
    assert table.count("font-weight:bold") == 1 and "0.900" in table


def test_each_retraining_shows_its_offline_auc_beside_its_versions_online_auc_the_next_month():
    def traffic(**aucs):
        return {"versions": {version[1:]: {"auc": auc, "requests": 600} for version, auc in aucs.items()}}

    rows = [
        MonthRow("2013-01", run_id="run-1", decision="pushed", pushed_version=1, offline_auc=0.7312),
        MonthRow("2013-02", traffic(v1=0.6891), run_id="run-2", decision="pushed", pushed_version=2, offline_auc=0.72),
        MonthRow("2013-03", traffic(v1=0.70, v2=0.6549), run_id="run-3", decision="not blessed", offline_auc=0.64),
        MonthRow("2013-04", traffic(v2=0.66), run_id="run-4", decision="pushed", pushed_version=3, offline_auc=0.70),
        MonthRow("2013-05", traffic(v2=0.66, v3=math.nan), run_id="run-5", decision="stopped by data validation"),
        MonthRow("2013-06", traffic(v3=0.67)),
        MonthRow("2013-07", traffic(v3=0.68), run_id="run-7", decision="pushed", pushed_version=4, offline_auc=0.71),
    ]
    assert [offline_and_next_online(rows, i) for i in range(len(rows))] == [
        ("0.731", "0.689"),  # v1 on February's traffic
        ("0.720", "0.655"),
        ("0.640", "-"),  # not pushed: no version served
        ("0.700", "-"),  # its answers next month were of one class only (NaN)
        ("-", "-"),  # stopped before evaluation
        ("-", "-"),  # no run
        ("0.710", "-"),  # no next month
    ]
