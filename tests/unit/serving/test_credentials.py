"""The serving token: feedback from its holders only, for ids issued here, once each; the canary
out of clients' reach; the token kept owner-only in the home when none is configured."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from components.common.errors import ConfigError
from serving.canary.judge import SequentialTest
from serving.config import ServingConfig
from serving.credentials import ServingToken, serving_token
from tests.support.serving_helpers import FEEDBACK, MODEL, TOKEN, call, publish, wait_for


def test_feedback_without_the_token_is_refused(serve, rows):
    server, *_ = serve()
    request_id = call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]})[1]["request_ids"][0]
    body = {"feedback": [{"request_id": request_id, "label": 1}]}
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN.authorization[7:]}):
        status, payload = call(server, f"/v1/models/{MODEL}:feedback", body, headers=headers)
        assert status == 401 and "serving token" in payload["error"]
    assert call(server, f"/v1/models/{MODEL}:feedback", body, headers=FEEDBACK)[1]["accepted"] == 1


def test_invented_altered_and_repeated_ids_are_rejected_and_decide_nothing(serve, rows, trained_model):
    # The attack that rolled a canary back: predictions, then invented labels for ids of one's choosing.
    server, service, repository, store = serve(
        ServingConfig(poll_seconds=0.05, canary_percent=50, canary_test=SequentialTest(min_labelled=40))
    )
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    issued = [
        call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]}, headers={"X-Request-Key": f"k{i}"})[1]
        for i, row in enumerate(rows[:200])
    ]
    ids = [answer["request_ids"][0] for answer in issued]
    base, _, signature = ids[0].rpartition(".")
    invented = [f"{i:016x}-0.{signature}" for i in range(300)] + [f"{base}.{'0' * 16}", base]
    status, answer = call(
        server,
        f"/v1/models/{MODEL}:feedback",
        {"feedback": [{"request_id": i, "label": 0} for i in invented]},
        headers=FEEDBACK,
    )
    assert status == 200 and answer["accepted"] == 0 and answer["rejected"] == invented
    first = call(
        server, f"/v1/models/{MODEL}:feedback", {"feedback": [{"request_id": ids[1], "label": 1}]}, headers=FEEDBACK
    )
    again = call(
        server, f"/v1/models/{MODEL}:feedback", {"feedback": [{"request_id": ids[1], "label": 0}]}, headers=FEEDBACK
    )
    assert first[1]["accepted"] == 1 and again[1] == {"accepted": 0, "unknown": [], "rejected": [ids[1]]}
    service.tick()
    assert service.canary.decisions == [] and service.registry.routing.canary.version == 2


@pytest.mark.parametrize("target", ["/versions/2", "/labels/canary"])
@pytest.mark.parametrize("addressable", [False, True])
def test_clients_cannot_address_the_canary_unless_configured(serve, rows, trained_model, target, addressable):
    config = ServingConfig(poll_seconds=0.05, canary_percent=10, canary_addressable=addressable)
    server, service, repository, store = serve(config)
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    status, payload = call(server, f"/v1/models/{MODEL}{target}:predict", {"instances": rows[:1]})
    if addressable:
        assert status == 200 and payload["model_version"] == "2"
    else:
        assert status == 403 and "version 2 is the canary" in payload["error"]
    assert call(server, f"/v1/models/{MODEL}/versions/1:predict", {"instances": rows[:1]})[0] == 200
    assert call(server, f"/v1/models/{MODEL}{target}/metadata")[0] == 200  # reading about it is harmless


def test_which_keys_reach_the_canary_depends_on_the_token():
    keys = [f"caller-{i}" for i in range(2000)]
    ours = np.array([TOKEN.bucket(k) for k in keys])
    theirs = np.array([ServingToken("another-serving-token-0123456789").bucket(k) for k in keys])
    assert 0.08 < (ours < 10).mean() < 0.12 and (ours == theirs).mean() < 0.05
    assert [TOKEN.bucket(k) for k in keys[:50]] == list(ours[:50])  # the same key, the same bucket


def test_a_token_is_made_once_owner_only_and_shared(tmp_path):
    path = tmp_path / "home" / "serving-token"
    made = []
    threads = [threading.Thread(target=lambda: made.append(serving_token(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 8 and len({token.authorization for token in made}) == 1  # makers at once agree
    assert os.stat(path).st_mode & 0o777 == 0o600 and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    signed = made[0].sign("abc-0")
    assert serving_token(path).issued(signed)  # a restart keeps it: ids issued before still verify
    assert serving_token(path, "configured-token-0123456789").authorization == "Bearer configured-token-0123456789"


def test_an_unfit_token_is_a_clear_error(tmp_path):
    path = tmp_path / "serving-token"
    path.write_text("0123456789abcdef0123")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        serving_token(path)
    with pytest.raises(ConfigError, match="at least 16 printable characters"):
        serving_token(path, "short")
    with pytest.raises(ConfigError, match="cannot keep the serving token"):
        serving_token(tmp_path / "serving-token" / "inside-a-file")
