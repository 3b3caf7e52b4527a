"""The worker's HTTP API against its OpenAPI description (streams/serving/openapi.py), and the
bearer token (STREAMREC_HTTP_TOKEN) on ``/users/...`` and ``/metrics``.

One worker on the embedded broker, with a token and log level debug, a few events applied:

- schemathesis fuzzes every operation of the ``/openapi.json`` the worker serves (both spellings
  of each path, odd user ids, every k in and out of 1..1000): every response conforms to the
  schema (status declared, body valid, content type declared) and none is a 5xx;
- a known user's ``/users`` answer and ``/recommend`` answer validate against the schema;
- no token or a wrong one: 401 with a JSON error and ``WWW-Authenticate: Bearer``; the right one:
  200; ``/health``, ``/recommend`` and ``/openapi.json`` answer without one;
- the token never appears in the worker's log, nor in the settings' repr.
"""

from __future__ import annotations

import json
import os
from collections import Counter
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth

from conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOKEN = "tok-" + "7f3c9e1a5b2d4c6e8f0a1b3c5d7e9f21"
USER = "u-api-1"
# per operation and mode: 8 operations positive, the 2 with k negative too: ~600 requests in ~5 s
# (HTTP_FUZZ_EXAMPLES=500 for a longer, randomised run)
MAX_EXAMPLES = int(os.environ.get("HTTP_FUZZ_EXAMPLES", "100"))


@pytest.fixture(scope="module")
def api_worker(worker_factory, kafka_producer):
    [worker] = worker_factory.start(1, http_token=TOKEN, log_level="debug")
    now = time.time()
    for n in range(3):
        event = {"user_id": USER, "item_id": f"item-{n}", "type": "click", "ts": now - 10 + n}
        if n == 2:
            event["scenario"] = "search"  # the last event names one
        kafka_producer.send(worker.settings.topic_events, key=USER.encode(),
                            value=json.dumps(event).encode())
    kafka_producer.flush()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    wait_for(lambda: requests.get(f"{worker.base}/users/{USER}", headers=auth, timeout=5).status_code == 200,
             30, f"the state of {USER}")
    return worker


@pytest.fixture(scope="module")
def api_schema(api_worker):
    return schemathesis.openapi.from_url(f"{api_worker.base}/openapi.json")


def test_every_response_conforms_to_the_openapi_description(api_worker, api_schema):
    """Cases from schemathesis' strategies, positive (valid by the schema) and negative (k out of
    range or not an integer, ...), run by hypothesis here rather than by ``schema.parametrize()``
    (schemathesis' lazy pytest fixture loader reads ``Function._nodeid``, gone in pytest 9)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}  # the protected operations answer 200/404 too, not only 401
    calls: Counter = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend/{user_id}", "/recommend/{user_id}/", "/users/{user_id}",
                                              "/users/{user_id}/", "/health", "/health/", "/metrics", "/metrics/"}
    # (schemathesis leaves out the operation that serves the schema it loaded: /openapi.json)
    for operation in operations:
        # negative cases need something to get wrong that can be sent: a query parameter (k); a path
        # parameter's only invalid value, the empty string, makes another path
        query = any(p.get("in") == "query" for p in operation.definition.raw.get("parameters", []))
        modes = list(GenerationMode) if query else [GenerationMode.POSITIVE]
        for mode in modes:
            @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=not os.environ.get("HTTP_FUZZ_EXAMPLES"),
                                 suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                # ignored_auth is left out: the security requirement is optional ([{bearer}, {}]) by
                # design (an open worker needs none); the 401s are asserted below.
                response = case.call_and_validate(base_url=api_worker.base, headers=auth,
                                                  excluded_checks=[ignored_auth], timeout=10)
                assert response.status_code < 500, response.text
                calls[operation.path, mode.value, response.status_code] += 1

            fuzz()
    print(sorted(calls.items()))
    assert {(path, mode) for (path, mode, _) in calls} >= {(op.path, "positive") for op in operations}
    statuses = {status for (_, _, status) in calls}
    assert {200, 400, 404} <= statuses  # the fuzzer reached the answers it is meant to exercise


def test_a_known_users_answers_validate(api_worker, api_schema):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path, operation in ((f"/users/{USER}", "/users/{user_id}"), (f"/users/{USER}/", "/users/{user_id}/"),
                            (f"/recommend/{USER}?k=5", "/recommend/{user_id}")):
        response = requests.get(api_worker.base + path, headers=auth, timeout=10)
        assert response.status_code == 200, (path, response.text)
        api_schema[operation]["GET"].validate_response(response)
    state = requests.get(f"{api_worker.base}/users/{USER}", headers=auth, timeout=10).json()
    assert state["user_id"] == USER and state["n"] == 3
    assert [item for item, *_ in state["items"]] == ["item-0", "item-1", "item-2"]
    assert [len(entry) for entry in state["items"]] == [3, 3, 4] and state["items"][2][3] == "search"
    record = requests.get(f"{api_worker.base}/recommend/{USER}?k=5", timeout=10).json()
    assert record["user_id"] == USER and len(record["items"]) <= 5
    assert not {item["item_id"] for item in record["items"]} & {"item-0", "item-1", "item-2"}  # seen excluded
    assert record["scenario"] == "search"  # the last event's
    asked = requests.get(f"{api_worker.base}/recommend/{USER}/?scenario=home", timeout=10)
    assert asked.status_code == 200 and asked.json()["scenario"] == "home"
    for bad in ("", "x" * 129):
        response = requests.get(f"{api_worker.base}/recommend/{USER}", params={"scenario": bad}, timeout=10)
        assert response.status_code == 400 and "scenario" in response.json()["error"]


@pytest.mark.parametrize("path", [f"/users/{USER}", f"/users/{USER}/", "/users/nobody", "/metrics", "/metrics/"])
def test_protected_paths_need_the_token(api_worker, path):
    url = api_worker.base + path
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in response.json()
        assert TOKEN not in response.text
    response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == (404 if "nobody" in path else 200)
    if "metrics" in path:
        assert "streamrec_events_total" in response.text
    response = requests.get(url, headers={"Authorization": f"bearer {TOKEN}"}, timeout=10)  # scheme: any case
    assert response.status_code == (404 if "nobody" in path else 200)


@pytest.mark.parametrize("path", ["/health", "/health/", f"/recommend/{USER}", f"/recommend/{USER}/?k=3",
                                  "/openapi.json"])
def test_open_paths_need_no_token(api_worker, path):
    response = requests.get(api_worker.base + path, timeout=10)
    assert response.status_code == 200, response.text


def test_the_token_never_appears_in_the_log_nor_the_settings_repr(api_worker):
    requests.get(f"{api_worker.base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    requests.get(f"{api_worker.base}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=10)
    log = api_worker.log()
    assert "[DEBUG]" in log  # the worker did log at debug level
    assert TOKEN not in log
    assert TOKEN[4:] not in log
    settings = api_worker.settings
    assert settings.http_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
