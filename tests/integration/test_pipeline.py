"""The pipeline end to end on the embedded broker: events in (kafka-python, keyed by user),
recommendations and dead letters out, HTTP answers and metrics from the worker."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import requests

from streams.ingest.user_state import event_key

pytestmark = pytest.mark.integration

NOW = time.time()
USERS = [f"u-{n}" for n in range(6)]
CROWD = [f"c-{n}" for n in range(8)]  # other users, so that popularity has items to offer
SEED = "seed"  # a first user who has seen every item: once counted, popularity offers all of them


def seed_events() -> list[dict]:
    return [{"user_id": SEED, "item_id": f"item-{m}", "type": "click", "ts": NOW - 90, "event_id": f"seed-{m}"}
            for m in range(12)]


def valid_events() -> list[dict]:
    events = []
    for n, user in enumerate(USERS):
        for m in range(3):
            events.append({"user_id": user, "item_id": f"item-{(n + m) % 12}", "type": "click",
                           "ts": NOW - 60 + m, "event_id": f"{user}-{m}"})
    events[-1]["type"] = "purchase"
    for n, user in enumerate(CROWD):
        for m in range(n + 1):
            events.append({"user_id": user, "item_id": f"item-{m}", "type": "click", "ts": NOW - 30})
    events.append({"user_id": 77, "item_id": 5, "type": "click"})  # integer ids, no ts
    return events


MALFORMED = {  # raw message -> reason
    b"this is not json": "not_json",
    b'\xff\xfe{"user_id": "u-0"}': "not_json",
    b'["an", "array"]': "not_object",
    b'{"user_id": "u-0", "type": "click"}': "missing_field",
    b'{"user_id": "u-0", "item_id": "", "type": "click"}': "empty_field",
    b'{"user_id": "u-0", "item_id": 1.5, "type": "click"}': "invalid_field",
    b'{"user_id": "\\ud800", "item_id": "i", "type": "click"}': "invalid_field",
    b'{"user_id": "u-0", "item_id": "i", "type": "like"}': "unknown_type",
    b'{"user_id": "u-0", "item_id": "i", "type": "click", "ts": 1e300}': "invalid_ts",
    b'{"user_id": "u-0", "item_id": "' + b"x" * 70_000 + b'", "type": "click"}': "too_large",
}


def metric(text: str, name: str) -> float:
    match = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_events_become_recommendations_dead_letters_answers_and_metrics(worker, kafka_producer, read_topic):
    settings = worker.settings
    topic = settings.topic_events
    # The seed user's events first, until a record for them shows they were counted: a record is
    # built from what popularity knew when its batch was counted, so a user whose only batch came
    # before any other user's events would get an empty record with nothing left to send.
    seed = seed_events()
    for event in seed:
        kafka_producer.send(topic, key=SEED.encode(), value=json.dumps(event).encode())
    kafka_producer.flush()
    read_topic(settings, settings.topic_recommendations,
               until=lambda records: any(r.key == SEED.encode() for r in records))
    events = valid_events()
    for event in events:
        kafka_producer.send(topic, key=str(event["user_id"]).encode(), value=json.dumps(event).encode())
    replay = events[0]  # the same event_id again: applied once
    kafka_producer.send(topic, key=replay["user_id"].encode(), value=json.dumps(replay).encode())
    sent_bad = {}
    for n, raw in enumerate(MALFORMED):
        meta = kafka_producer.send(topic, key=b"bad-%d" % n, value=raw).get(timeout=30)
        sent_bad[raw] = (b"bad-%d" % n, meta.partition, meta.offset)
    kafka_producer.flush()

    # A recommendation record with items for every user with a valid event after the seed.
    users = {str(event["user_id"]) for event in events}
    recs = read_topic(settings, settings.topic_recommendations,
                      until=lambda records: users <= {r.key.decode() for r in records if json.loads(r.value)["items"]})
    for record in recs:
        body = json.loads(record.value)
        assert body["user_id"] == record.key.decode()
        assert body["source"] == "popular"
        assert {"model_version", "index_version", "event_ts", "emitted_ts"} <= set(body)
        assert len(body["items"]) <= settings.top_k

    # A dead letter for every malformed message: reason, original bytes, where it came from.
    letters = read_topic(settings, settings.topic_dlq, until=lambda records: len(records) >= len(MALFORMED))
    assert len(letters) == len(MALFORMED)
    by_raw = {}
    limit = settings.max_message_bytes
    for record in letters:
        body = json.loads(record.value)
        raw = base64.b64decode(body["raw"])
        if body["raw_truncated"]:  # only a message over the limit is cut (to the limit), so its
            assert body["reason"] == "too_large" and len(raw) == limit  # dead letter fits in Kafka
            [raw] = [original for original in MALFORMED if original[:limit] == raw]
        by_raw[raw] = (record.key, body)
    assert set(by_raw) == set(MALFORMED)
    for raw, reason in MALFORMED.items():
        key, body = by_raw[raw]
        assert body["reason"] == reason, (raw[:60], body)
        assert body["error"]
        assert (key, body["partition"], body["offset"]) == sent_bad[raw]
        assert body["topic"] == topic

    # HTTP: the answer for a user excludes the user's seen items; the replay was applied once.
    seen = {e["item_id"] for e in events if e["user_id"] == "u-1"}
    response = requests.get(f"{worker.base}/recommend/u-1?k=5", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["user_id"] == "u-1" and answer["source"] == "popular"
    stream_record = json.loads(next(r.value for r in recs if r.key == b"u-1"))
    assert set(answer) == set(stream_record)  # HTTP makes the stream's call: the same record
    items = [item["item_id"] for item in answer["items"]]
    assert 0 < len(items) <= 5 and not seen & set(items)
    assert requests.get(f"{worker.base}/recommend/u-1/?k=0", timeout=10).status_code == 400
    state = requests.get(f"{worker.base}/users/u-0", timeout=10).json()
    assert state["n"] == 3 and state["eids"] == [event_key(f"u-0-{n}") for n in range(3)]
    assert requests.get(f"{worker.base}/users/nobody/", timeout=10).status_code == 404

    # Metrics: every input message is counted by outcome.
    deadline = time.monotonic() + 20
    while True:
        text = requests.get(f"{worker.base}/metrics", timeout=10).text
        if metric(text, 'streamrec_events_total{outcome="duplicate"}') >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert metric(text, 'streamrec_events_total{outcome="accepted"}') == len(seed) + len(events)
    assert metric(text, 'streamrec_events_total{outcome="duplicate"}') == 1
    assert metric(text, 'streamrec_events_total{outcome="rejected"}') == len(MALFORMED)
    assert metric(text, 'streamrec_dlq_total{reason="not_json"}') == 2
    assert metric(text, 'streamrec_dlq_total{reason="too_large"}') == 1
    assert metric(text, 'streamrec_recommendations_total{source="popular"}') >= len(users)
    assert metric(text, "streamrec_event_to_recommendation_seconds_count") == len(seed) + len(events)
    # the per-event cost budget: every stage on the path of these events timed, and the latency
    # to the broker's acknowledgement of each event's record (observed when it came)
    for stage in ("decode", "state", "popularity", "queue", "changelog", "candidates", "records", "produce"):
        assert metric(text, f'streamrec_stage_seconds_count{{stage="{stage}"}}') >= 1, stage
    assert metric(text, 'streamrec_stage_seconds_count{stage="encode"}') == 0  # no model served here
    assert metric(text, "streamrec_worker_latency_seconds_count") == len(seed) + len(events)
    assert "streamrec_http_request_seconds_bucket" in text
    health = requests.get(f"{worker.base}/health", timeout=10).json()
    assert health["status"] == "ok" and health["partitions"] == [0, 1]
