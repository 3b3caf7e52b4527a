"""Releasing a user from the suspect topic (``streamrec release``, streams/cli/release.py) on the
embedded broker: a worker holds back what a user sends over the rate limit; the command sends it
back signed with the release key, the worker applies every held-back event once (a second
release changes nothing), and an event with a forged signature is held back like any other."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from streams.ingest.guard import RELEASE_HEADER
from streams.harness.procs import clean_env

from conftest import ROOT, get_json, wait_for

KEY = "release-key-for-the-test-0123456789"
USER = "flooder"


def release(settings, key: str | None = KEY) -> subprocess.CompletedProcess:
    env = {**clean_env(), **({"STREAMREC_RELEASE_KEY": key} if key else {})}
    return subprocess.run([sys.executable, "-m", "streams.cli", "release", "--user", USER,
                           "--bootstrap-servers", settings.bootstrap_servers,
                           "--topic-events", settings.topic_events, "--topic-suspect", settings.topic_suspect],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def applied(worker) -> int:
    state = get_json(f"{worker.base}/users/{USER}")
    return state["n"] if state else 0


def test_a_released_user_has_every_held_back_event_applied_once(worker_factory, kafka_producer, read_topic):
    [worker] = worker_factory.start(1, rate_limit_per_s=1.0, rate_burst=3, release_key=KEY)
    s = worker.settings
    ts = time.time() - 600
    raws = [json.dumps({"user_id": USER, "item_id": f"i{n}", "type": "click", "ts": ts, "event_id": f"f{n}"}).encode()
            for n in range(10)]
    forged = json.dumps({"user_id": USER, "item_id": "target", "type": "click", "ts": ts, "event_id": "forged"}).encode()
    for raw in raws:
        kafka_producer.send(s.topic_events, key=USER.encode(), value=raw)
    kafka_producer.send(s.topic_events, key=USER.encode(), value=forged, headers=[(RELEASE_HEADER, b"0" * 64)])
    kafka_producer.flush()
    held = read_topic(s, s.topic_suspect, until=lambda records: len(records) >= 8, timeout=60)
    assert len(held) == 8  # 10 at one instant with a burst of 3, and the forged one
    assert wait_for(lambda: applied(worker) == 3, 30, "the burst applied")

    refused = release(s, key=None)
    assert refused.returncode == 2 and "STREAMREC_RELEASE_KEY" in refused.stderr

    done = release(s)
    assert done.returncode == 0, done.stderr
    assert "released 8 events" in done.stdout
    wait_for(lambda: applied(worker) == 11, 60, "every held-back event applied")
    state = get_json(f"{worker.base}/users/{USER}")
    assert sorted(item for item, _, _ in state["items"]) == sorted([f"i{n}" for n in range(10)] + ["target"])

    assert release(s).returncode == 0  # sent twice: applied once
    kafka_producer.send(s.topic_events, key=b"marker", value=json.dumps(
        {"user_id": "marker", "item_id": "m", "type": "click", "ts": ts, "event_id": "m"}).encode())
    kafka_producer.flush()
    wait_for(lambda: get_json(f"{worker.base}/users/marker"), 30, "an event sent after the second release")
    assert applied(worker) == 11
    assert len(read_topic(s, s.topic_suspect, timeout=5)) == 8  # nothing released was held again
