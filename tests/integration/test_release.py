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


def test_a_quarantined_fake_user_is_held_as_suspicious_and_released(worker_factory, kafka_producer, read_topic):
    """On the broker: 600 real users (one event each, 20 on five popular items) give suspicion its
    base rate; a user then sending the five popular items and a target is quarantined, the rest of
    their events held as `suspicious`; a release applies them and trusts the user."""
    [worker] = worker_factory.start(1, suspect_top_items=5, release_key=KEY)
    s = worker.settings
    ts = time.time() - 900
    popular = [f"p{n}" for n in range(5)]
    for n in range(600):
        item = popular[n // 2 % 5] if n < 20 else f"rare{n}"
        kafka_producer.send(s.topic_events, key=f"real{n}".encode(), value=json.dumps(
            {"user_id": f"real{n}", "item_id": item, "type": "click", "ts": ts + n * 0.01, "event_id": f"r{n}"}).encode())
    kafka_producer.flush()
    assert wait_for(lambda: get_json(f"{worker.base}/users/real599"), 60, "the real users applied")
    time.sleep(1.5)  # the worker's popularity ranking is at most a second old
    fake = ["p0", "target", "p1", "p2", "p3", "p4", "target2", "p0x"]
    for n, item in enumerate(fake):
        kafka_producer.send(s.topic_events, key=USER.encode(), value=json.dumps(
            {"user_id": USER, "item_id": item, "type": "click", "ts": ts + 10 + n, "event_id": f"f{n}"}).encode())
    kafka_producer.flush()
    held = read_topic(s, s.topic_suspect, until=lambda records: len(records) >= 2, timeout=60)
    letters = [json.loads(r.value) for r in held]
    assert {letter["reason"] for letter in letters} == {"suspicious"}
    kept = applied(worker)
    assert 2 <= kept <= len(fake) - 2 and kept + len(held) == len(fake)  # a prefix applied, the rest held
    assert not any(get_json(f"{worker.base}/users/real{n}").get("q") for n in (0, 1, 2, 10, 300))

    done = release(s)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: applied(worker) == len(fake), 60, "every held-back event applied")
    state = get_json(f"{worker.base}/users/{USER}")
    assert state.get("ok") == 1 and "q" not in state
    assert [item for item, _, _ in state["items"]] == fake
