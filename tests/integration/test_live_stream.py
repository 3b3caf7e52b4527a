"""The live model in the stream, on the embedded broker: versions are trained, published and
served while events flow; an item first seen in the stream becomes recommendable before the next
version; a checkpoint whose checksum does not match is refused and serving goes on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from streams.broker import EmbeddedBroker
from streams.consume import watch_consumer
from streams.model_store import MODEL_KEY, ModelUpdate
from streams.produce import make_producer
from streams.settings import load_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ITEMS = [f"item-{n}" for n in range(1000)]  # more than any user sees: answers are never empty


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what() if callable(what) else what}"[:3000])


def get_json(url: str):
    try:
        return requests.get(url, timeout=10).json()
    except (requests.RequestException, ValueError):
        return None


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Embedded broker + one worker that trains and publishes a version every 2 s."""
    tmp = tmp_path_factory.mktemp("live")
    broker = EmbeddedBroker(free_port()).start()
    port = free_port()
    settings = load_settings({"bootstrap_servers": broker.bootstrap, "partitions": 2}, environ={})
    log_path = tmp / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    cmd = [sys.executable, "-m", "streams.cli", "worker", "--bootstrap-servers", broker.bootstrap,
           "--data-dir", str(tmp / "data"), "--http-port", str(port), "--app-id", f"live-{port}",
           "--partitions", "2", "--publish-interval-s", "2"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    producer = make_producer(settings)
    try:
        wait_for(lambda: proc.poll() is None and (get_json(f"{base}/health/") or {}).get("partitions"),
                 90, "the worker to be assigned partitions")
        yield {"base": base, "settings": settings, "producer": producer, "log": log_path, "proc": proc}
    finally:
        producer.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        broker.stop()


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
        first = wait_for(lambda: (get_json(f"{base}/health/") or {}).get("model_version", 0), 120,
                         "a first model version to be served")
        later = wait_for(lambda: ((get_json(f"{base}/health/") or {}).get("model_version", 0) > first
                                  and get_json(f"{base}/health/")["model_version"]), 60,
                         "a newer model version to be served")
        assert later > first
    finally:
        stop.set()
        thread.join()
    last = {}

    def model_answer():
        last["answer"] = get_json(f"{base}/recommend/user-3/?k=5")
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


def test_item_first_seen_in_stream_is_recommendable_before_the_next_version(live):
    base, settings, producer = live["base"], live["settings"], live["producer"]
    wait_for(lambda: (get_json(f"{base}/health/") or {}).get("model_version", 0), 120, "a model version")
    version = get_json(f"{base}/health/")["model_version"]
    # A brand-new user whose only event is on a brand-new item: the model can answer only once the
    # item got a cold-start vector and is in the served vocabulary and index.
    send(producer, settings.topic_events, "newcomer", "brand-new-item", 0)
    producer.flush()
    started = time.monotonic()
    answer = wait_for(lambda: (r := get_json(f"{base}/recommend/newcomer/?k=5")) and r["source"] == "model" and r,
                      10, "a model answer for a user whose only item is new")
    assert time.monotonic() - started < 10
    assert "brand-new-item" not in {i["item_id"] for i in answer["items"]}  # seen items excluded
    assert answer["model_version"] >= version


def test_checkpoint_with_wrong_checksum_is_refused_and_serving_goes_on(live):
    base, settings, producer = live["base"], live["settings"], live["producer"]
    wait_for(lambda: (get_json(f"{base}/health/") or {}).get("model_version", 0), 120, "a model version")
    served = get_json(f"{base}/health/")["model_version"]
    kept = sorted((Path(live["log"]).parent / "data" / "models").glob("v*.pt"))
    assert kept, "the trainer keeps its checkpoints in data_dir/models"
    bogus = ModelUpdate(version=9999, path=str(kept[-1]), sha256="0" * 64, created_ts=time.time())
    producer.send(settings.topic_model_updates, key=MODEL_KEY, value=bogus.to_bytes()).get(timeout=10)
    wait_for(lambda: "refusing model version 9999" in live["log"].read_text(errors="replace"), 20,
             "the worker to log the refusal")
    health = get_json(f"{base}/health/")
    assert health["status"] == "ok" and 0 < health["model_version"] != 9999
    assert health["model_version"] >= served
    assert get_json(f"{base}/recommend/user-1/?k=3")["items"]
