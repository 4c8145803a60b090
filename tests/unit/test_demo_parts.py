"""The demo's load generator against a real server, and its report's charts."""

import math

import pandas as pd

from pipelines.load_generator import send
from pipelines.report import heat_table, line_chart
from tests.serving_helpers import MODEL, call


def test_load_generator_sends_rows_and_their_outcomes(serve, splits):
    server, service, *_ = serve()
    rows = pd.read_parquet(splits[1]).head(300)
    summary = send(server.url, "flights", rows, connections=2)
    assert summary["requests"] == 300 and summary["errors"] == 0
    assert list(summary["versions"]) == ["1"] and summary["versions"]["1"]["requests"] == 300
    assert 0.5 < summary["versions"]["1"]["auc"] < 1
    status, performance = call(server, f"/v1/models/{MODEL}/performance")
    assert performance["stable"]["labelled"] == 300
    assert performance["stable"]["auc"] == summary["versions"]["1"]["auc"]


def test_line_chart_draws_every_point_and_skips_missing_ones():
    svg = line_chart(["2013-01", "2013-02", "2013-03"], {"version 1": {0: 0.7, 1: 0.65}, "version 2": {1: 0.72, 2: math.nan}},
                     "online AUC")
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and svg.count("<polyline") == 1
    assert "version 2: 0.7200" in svg


def test_heat_table_marks_values_above_the_threshold():
    table = heat_table(["temp"], ["2013-02", "2013-03"], {("temp", "2013-02"): 0.05, ("temp", "2013-03"): 0.9}, 0.1)
    assert table.count("font-weight:bold") == 1 and "0.900" in table
