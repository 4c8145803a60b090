"""The demo report's charts."""

import math

from pipelines.demo.report import heat_table, line_chart


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
