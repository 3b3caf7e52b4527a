"""The live model in the stream, on the embedded broker: versions are trained, published and
served while events flow; an item first seen in the stream becomes recommendable before the next
version; a checkpoint whose checksum does not match is refused and serving goes on. Each test runs
with serving in the worker's thread and in its serving processes (streams/serving/processes.py)."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import requests
from conftest import get_json, wait_for

from streams.kafka.clients import watch_consumer
from streams.lifecycle.model_store import ModelUpdate
from streams.lifecycle.updates import MODEL_KEY

pytestmark = pytest.mark.integration
ITEMS = [f"item-{n}" for n in range(1000)]  # more than any user sees: answers are never empty


@pytest.fixture(scope="module", params=[False, True], ids=["serving-thread", "serving-processes"])
def live(request, worker_factory, kafka_producer):
    """One worker that trains on the stream and publishes a version every 2 s; it serves from a
    thread of its own, then (second run of these tests) from two child processes. These tests are
    about the model path, so the quality gate is off: the model answers wherever it can (the gate
    is tested in tests/unit/test_gate.py and tests/unit/test_ingest_agent.py), and so is promotion:
    every version is announced (a version no better than the one in force is held back, which on
    this short stream is most of them: tests/unit/test_promotion.py)."""
    [worker] = worker_factory.start(1, train=True, publish_interval_s=2, serving_processes=request.param,
                                    serving_gate=False, promotion_tail=0)
    return {"base": worker.base, "settings": worker.settings, "producer": kafka_producer, "worker": worker,
            "processes": request.param}


def served_version(base: str) -> int:
    return (get_json(f"{base}/health/", timeout=10) or {}).get("model_version", 0)


def send(producer, topic: str, user: str, item: str, n: int) -> None:
    event = {"user_id": user, "item_id": item, "type": "click", "event_id": f"{user}-{item}-{n}"}
    producer.send(topic, key=user.encode(), value=json.dumps(event).encode())


def test_versions_are_trained_published_and_served_while_events_flow(live):
    base, settings, producer = live["base"], live["settings"], live["producer"]
    stop = threading.Event()

    def stream():  # users walk the catalogue in steps of one: a rule a model can pick up
        n = 0
        while not stop.is_set():
            for user in range(12):
                send(producer, settings.topic_events, f"user-{user}", ITEMS[(user + n) % len(ITEMS)], n)
            producer.flush()
            n += 1
            time.sleep(0.05)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        first = wait_for(lambda: served_version(base), 120, "a first model version to be served")
        later = wait_for(lambda: (v := served_version(base)) > first and v, 60, "a newer model version")
        assert later > first
    finally:
        stop.set()
        thread.join()
    last = {}

    def model_answer():
        last["answer"] = get_json(f"{base}/recommend/user-3/?k=5", timeout=10)
        last["state"] = get_json(f"{base}/users/user-3/")
        return last["answer"] and last["answer"]["source"] == "model" and last["answer"]

    answer = wait_for(model_answer, 60, lambda: f"a model answer for a user with history (last: {last})")
    assert answer["model_version"] >= first and len(answer["items"]) == 5
    seen = {item for item, *_ in (get_json(f"{base}/users/user-3/") or {"items": []})["items"]}
    assert not seen & {i["item_id"] for i in answer["items"]}
    consumer = watch_consumer(settings, [settings.topic_recommendations])
    sources = set()
    deadline = time.monotonic() + 20
    while "model" not in sources and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            sources |= {json.loads(r.value)["source"] for r in records}
    consumer.close()
    assert "model" in sources  # records on the topic come from the model too
    # and they came from where the settings say (the serving pair logs which child serves)
    assert ("from streamrec-serving-" in live["worker"].log()) == live["processes"]
    # the versions came from the trainer's own process, whose metrics reach the worker's /metrics
    assert "continuous training started (trainer process)" in live["worker"].log()
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    updates = re.search(r'^streamrec_stage_seconds_count\{stage="train_update"\} (\S+)$', metrics, re.M)
    assert updates and float(updates.group(1)) >= 1
    assert re.search(r"^streamrec_training_loss (\S+)$", metrics, re.M).group(1) != "0.0"


def test_item_first_seen_in_stream_is_recommendable_before_the_next_version(live):
    base, settings, producer = live["base"], live["settings"], live["producer"]
    version = wait_for(lambda: served_version(base), 120, "a model version")
    # A brand-new user whose only event is on a brand-new item: the model can answer only once the
    # item got a cold-start vector and is in the served vocabulary and index.
    send(producer, settings.topic_events, "newcomer", "brand-new-item", 0)
    producer.flush()
    started = time.monotonic()
    answer = wait_for(lambda: (r := get_json(f"{base}/recommend/newcomer/?k=5", timeout=10)) and r["source"] == "model" and r,
                      10, "a model answer for a user whose only item is new")
    assert time.monotonic() - started < 10
    assert "brand-new-item" not in {i["item_id"] for i in answer["items"]}  # seen items excluded
    assert answer["model_version"] >= version


def test_checkpoint_with_wrong_checksum_is_refused_and_serving_goes_on(live):
    base, settings, producer = live["base"], live["settings"], live["producer"]
    served = wait_for(lambda: served_version(base), 120, "a model version")
    kept = sorted(live["settings"].model_dir.glob("v*.pt"))
    assert kept, "the trainer keeps its checkpoints in data_dir/models"
    bogus = ModelUpdate(version=9999, path=str(kept[-1]), sha256="0" * 64, created_ts=time.time())
    producer.send(settings.topic_model_updates, key=MODEL_KEY, value=bogus.to_bytes()).get(timeout=10)
    wait_for(lambda: "refusing model version 9999" in live["worker"].log(), 20, "the worker to log the refusal")
    health = get_json(f"{base}/health/", timeout=10)
    assert health["status"] == "ok" and 0 < health["model_version"] != 9999
    assert health["model_version"] >= served
    assert get_json(f"{base}/recommend/user-1/?k=3", timeout=10)["items"]
