"""HTTP views (streams/serving/views.py)."""

from __future__ import annotations

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

import streams.wiring
from streams.kafka.monitoring import assigned_partitions
from streams.serving import openapi
from streams.serving.views import bearer_ok, parse_k


async def test_health_reports_no_partitions_while_the_consumer_starts(make_settings):
    sr = streams.wiring.create(make_settings(serving_processes=False))
    try:
        # Faust's consumer thread is not started yet: asking it for its assignment raises
        # ConsumerNotStarted, which /health answered with a 500 and a traceback in the log.
        assert assigned_partitions(sr.app, sr.settings.topic_events) == []
    finally:
        sr.close()


# --- OpenAPI description, k, bearer token --------------------------------------------------------

TOKEN = "unit-token-6b1f0c"


@pytest.fixture
def make_worker(make_settings):
    made = []

    def make(**overrides):
        sr = streams.wiring.create(make_settings(serving_processes=False, **overrides))
        made.append(sr)
        return sr

    yield make
    for sr in made:
        sr.close()


async def get(sr, path: str, headers: dict | None = None, **match_info):
    view = sr.app.web.views[path]
    return await view.dispatch(make_mocked_request("GET", path.format(**match_info), headers=headers or {},
                                                   match_info=match_info))


async def test_the_description_lists_every_registered_path_and_is_served(make_worker):
    sr = make_worker()
    document = openapi.spec()
    assert set(document["paths"]) == set(sr.app.web.views)
    response = await get(sr, "/openapi.json")
    assert response.status == 200
    served = orjson.loads(response.body)
    assert served["openapi"].startswith("3.") and served["paths"] == document["paths"]


def test_k_is_ascii_digits_in_range():
    assert parse_k(None, 10) == 10
    assert [parse_k(raw, 10) for raw in ("1", "5", "1000", "007")] == [1, 5, 1000, 7]
    for raw in ("0", "1001", "", "-1", "+5", " 5", "5 ", "1_000", "1e3", "5.0", "\u0665", "abc"):
        assert parse_k(raw, 10) is None, raw


def test_bearer_header_parsing():
    assert bearer_ok(f"Bearer {TOKEN}", TOKEN) and bearer_ok(f"bearer {TOKEN}", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ",
                   f"Bearer{TOKEN}"):
        assert not bearer_ok(header, TOKEN), header


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/users/{user_id}", "/users/{user_id}/"])
async def test_protected_views_answer_401_without_the_right_token(make_worker, path):
    sr = make_worker(http_token=TOKEN)
    match = {"user_id": "u1"} if "user_id" in path else {}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = await get(sr, path, headers, **match)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in orjson.loads(response.body) and TOKEN.encode() not in response.body
    if "metrics" in path:
        response = await get(sr, path, {"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 200 and b"streamrec_" in response.body


async def test_without_a_token_metrics_are_open_and_with_one_health_stays_open(make_worker):
    open_worker = make_worker()
    assert (await get(open_worker, "/metrics")).status == 200
    guarded_worker = make_worker(http_token=TOKEN)
    assert (await get(guarded_worker, "/health")).status == 200
    assert (await get(guarded_worker, "/openapi.json")).status == 200
    assert TOKEN not in repr(guarded_worker.settings) and TOKEN not in str(guarded_worker.settings)
