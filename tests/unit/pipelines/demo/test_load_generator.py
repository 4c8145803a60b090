"""The demo's load generator against a real server."""

import pandas as pd

from pipelines.demo.load_generator import send
from tests.support.serving_helpers import MODEL, TOKEN, call


def test_load_generator_sends_rows_and_their_outcomes(serve, splits):
    server, service, *_ = serve()
    rows = pd.read_parquet(splits[1]).head(300)
    summary = send(server.url, "flights", rows, TOKEN.authorization, connections=2)
    assert summary["requests"] == summary["labelled"] == 300 and summary["errors"] == 0
    assert list(summary["versions"]) == ["1"] and summary["versions"]["1"]["requests"] == 300
    assert 0.5 < summary["versions"]["1"]["auc"] < 1
    status, performance = call(server, f"/v1/models/{MODEL}/performance")
    assert performance["stable"]["labelled"] == 300
    assert performance["stable"]["auc"] == summary["versions"]["1"]["auc"]
