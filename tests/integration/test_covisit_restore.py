"""Co-visitation survives a restart (streams/ingest/covisit.py): a worker stopped and started again
on the same RocksDB directory rebuilds the board from the stored user histories at the first event
of each partition, to the same items it had before."""

from __future__ import annotations

import json
import time

from conftest import get_json, wait_for

USERS, PER_USER, ITEMS = 30, 4, 12


def covisit_items(worker) -> int | None:
    return (worker.health() or {}).get("covisit_items")


def send(producer, topic: str, events: list[dict]) -> None:
    for event in events:
        producer.send(topic, key=event["user_id"].encode(), value=json.dumps(event).encode())
    producer.flush()


def test_the_board_is_rebuilt_from_user_state_after_a_restart(worker_factory, kafka_producer):
    [worker] = worker_factory.start(1)
    s = worker.settings
    ts = time.time() - 3600
    history = [{"user_id": f"u{u}", "item_id": f"i{(u * 5 + n * 7) % ITEMS}", "type": "click",
                "ts": ts + u + n * 0.1, "event_id": f"h{u}-{n}"} for u in range(USERS) for n in range(PER_USER)]
    send(kafka_producer, s.topic_events, history)
    wait_for(lambda: all((get_json(f"{worker.base}/users/u{u}") or {}).get("n") == PER_USER for u in range(USERS)),
             60, "every history applied")
    before = covisit_items(worker)
    assert before and before > ITEMS // 2

    worker.stop()
    worker.start().wait_ready()
    assert covisit_items(worker) == 0  # held in memory only: nothing counted since the start

    # one event each of new users (no previous items: they add nothing to co-visitation), later
    # in event time than the stored histories, on every partition
    fresh = [{"user_id": f"new{n}", "item_id": "i0", "type": "click", "ts": time.time(), "event_id": f"n{n}"}
             for n in range(20)]
    send(kafka_producer, s.topic_events, fresh)
    wait_for(lambda: covisit_items(worker) == before, 60,
             lambda: f"{before} items with neighbours again (now {covisit_items(worker)})")
    assert "co-visitation:" in worker.log() and "restored" in worker.log()
