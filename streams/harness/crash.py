"""The crash scenario shared by tests/integration/test_crash_recovery.py (short) and
bench/crash_recovery.py (>= 50,000 events, >= 5 SIGKILLs).

One embedded broker is started here and outlives every worker; one worker runs at a time and is
SIGKILLed (its process group) ``kills`` times while a producer thread sends the events at
``rate``/s; each time it is restarted at once with the same --data-dir and --http-port (so it
reopens its RocksDB table directory). After the last restart the worker drains the topic, and the
result holds what is needed to check: every user's ``n`` against the distinct valid events sent,
the DLQ records, the recommendation records seen, and the recovery time of every restart.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..kafka.clients import make_producer, watch_consumer
from ..kafka.topics import ensure_topics
from .procs import (EventSet, Worker, client_settings, dlq_summary, make_events, metric_sum,
                    read_topic, start_broker)


@dataclass
class Restart:
    kill_wall: float
    kill_mono: float
    ready_s: float | None = None  # kill -> /health/ lists partitions
    first_rec_s: float | None = None  # kill -> first recommendation emitted by the new process
    sent_at_kill: int = 0


@dataclass
class CrashResult:
    events: EventSet
    restarts: list[Restart]
    user_n: dict[str, int | None]
    dlq_reasons: Counter
    dlq_raws: Counter
    dlq_records: int
    dlq_duplicates: int
    recs_after_last_restart: int
    progress: list[tuple[float, int, int]]  # (seconds since start, sent, recommendations seen)
    drain_s: float
    duration_s: float
    sent: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    start_wall: float = 0.0
    notes: list[str] = field(default_factory=list)

    def mismatches(self) -> dict[str, tuple[int, int | None]]:
        """user -> (expected, got) where they differ."""
        return {u: (e, self.user_n.get(u)) for u, e in self.events.expected_n.items()
                if self.user_n.get(u) != e}


class _RecWatcher(threading.Thread):
    """Reads the recommendations topic from its end: (emitted_ts, receive wall time) per record."""

    def __init__(self, settings):
        super().__init__(daemon=True)

        self.consumer = watch_consumer(settings, [settings.topic_recommendations], from_beginning=False)
        self.consumer.poll(timeout_ms=100)  # resolve the end offsets now, before any event is sent
        self.emitted: list[float] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                for recs in self.consumer.poll(timeout_ms=200).values():
                    for r in recs:
                        try:
                            self.emitted.append(float(json.loads(r.value)["emitted_ts"]))
                        except (ValueError, KeyError, TypeError):
                            pass
        finally:
            self.consumer.close()


class _Producer(threading.Thread):
    def __init__(self, settings, messages, rate: float):
        super().__init__(daemon=True)

        self.settings, self.messages, self.rate = settings, messages, rate
        self.producer = make_producer(settings)
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            started = time.monotonic()
            for key, value in self.messages:
                self.producer.send(self.settings.topic_events, key=key, value=value)
                self.sent += 1
                if self.rate > 0:
                    ahead = self.sent / self.rate - (time.monotonic() - started)
                    if ahead > 0.002:
                        time.sleep(ahead)
            self.producer.flush(120)
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.producer.close()


def run_crash_scenario(workdir: Path, *, total: int, users: int, kills: int, rate: float,
                       partitions: int = 4, up_s: tuple[float, float] = (2.0, 6.0), seed: int = 7,
                       drain_timeout: float = 300.0, log=print) -> CrashResult:

    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    events = make_events(total, users, seed=seed)
    broker = start_broker(workdir / "broker.log")
    worker = None
    watcher = None
    try:
        settings = client_settings(broker.bootstrap, partitions)
        ensure_topics(settings)
        worker = Worker(broker.bootstrap, workdir / "data", app_id=f"crash-{seed}", partitions=partitions,
                        log_path=workdir / "worker.log")
        worker.start()
        worker.wait_ready()
        watcher = _RecWatcher(settings)
        watcher.start()
        producer = _Producer(settings, events.messages, rate)
        start_mono, start_wall = time.monotonic(), time.time()
        producer.start()
        progress: list[tuple[float, int, int]] = []
        sampler_stop = threading.Event()

        def sample() -> None:
            while not sampler_stop.is_set():
                progress.append((time.monotonic() - start_mono, producer.sent, len(watcher.emitted)))
                sampler_stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        restarts: list[Restart] = []
        for k in range(kills):
            time.sleep(rng.uniform(*up_s))
            r = Restart(kill_wall=time.time(), kill_mono=time.monotonic(), sent_at_kill=producer.sent)
            worker.kill()
            worker.start()
            r.ready_s = worker.wait_ready() - r.kill_mono
            restarts.append(r)
            # The next kill comes only after this process has recommended again (or 60 s).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(t > r.kill_wall for t in watcher.emitted[-50:]):
                time.sleep(0.05)
            log(f"kill {k + 1}/{kills} at {r.kill_mono - start_mono:.1f} s (sent {r.sent_at_kill}): "
                f"ready after {r.ready_s:.2f} s, recommending after {time.monotonic() - r.kill_mono:.2f} s")
        producer.join()
        if producer.error:
            raise producer.error
        log(f"producer done: {producer.sent} messages in {time.monotonic() - start_mono:.1f} s")

        # Drain: every user's n reaches the expected count (or stops moving).
        drain_start = time.monotonic()
        user_n: dict[str, int | None] = {}
        stable_since, last = None, None
        while True:
            user_n = {}
            for u in events.users:
                body = worker.user(u)
                user_n[u] = None if body is None else body.get("n")
            done = all(user_n.get(u) == n for u, n in events.expected_n.items())
            snapshot = tuple(sorted((u, v or 0) for u, v in user_n.items()))
            if snapshot != last:
                last, stable_since = snapshot, time.monotonic()
            if done or time.monotonic() - drain_start > drain_timeout:
                break
            if not worker.alive():
                raise RuntimeError(f"worker died during drain:\n{worker.log_tail()}")
            # Over-count can only grow, so stop early once it is there and nothing moves for 20 s.
            if time.monotonic() - stable_since > 20 and any(
                    (user_n.get(u) or 0) > n for u, n in events.expected_n.items()):
                break
            time.sleep(2.0)
        drain_s = time.monotonic() - drain_start
        log(f"drained in {drain_s:.1f} s after the producer finished")
        time.sleep(2.0)  # let the last recommendations reach the watcher
        sampler_stop.set()
        sampler.join()
        progress.append((time.monotonic() - start_mono, producer.sent, len(watcher.emitted)))
        watcher.stop_flag.set()
        watcher.join(5)

        emitted = sorted(watcher.emitted)
        for i, r in enumerate(restarts):
            until = restarts[i + 1].kill_wall if i + 1 < len(restarts) else float("inf")
            first = next((t for t in emitted if r.kill_wall < t < until), None)
            r.first_rec_s = None if first is None else first - r.kill_wall
        after_last = sum(1 for t in emitted if restarts and t > restarts[-1].kill_wall)

        expected_dlq = sum(events.expected_dlq.values())
        dlq = read_topic(settings, settings.topic_dlq, expect=expected_dlq, timeout=60, idle=3)
        reasons, raws, dups = dlq_summary(dlq, 65_536)
        final_metrics = worker.metrics()
        return CrashResult(events=events, restarts=restarts, user_n=user_n, dlq_reasons=reasons, dlq_raws=raws,
                           dlq_records=len(dlq), dlq_duplicates=dups, recs_after_last_restart=after_last,
                           progress=progress, drain_s=drain_s, duration_s=time.monotonic() - start_mono,
                           sent=producer.sent, final_metrics=final_metrics, start_wall=start_wall)
    finally:
        if watcher is not None:
            watcher.stop_flag.set()
        if worker is not None:
            worker.stop()
        broker.stop()


def check(result: CrashResult) -> list[str]:
    """Human-readable failures of the crash-recovery contract (empty: all good)."""
    problems = []
    bad = result.mismatches()
    if bad:
        over = sum(1 for e, g in bad.values() if g is not None and g > e)
        under = len(bad) - over
        sample = dict(list(bad.items())[:8])
        problems.append(f"{len(bad)} users with n != distinct valid events sent ({over} over, {under} "
                        f"under/missing), e.g. {sample}")
    if result.dlq_reasons != result.events.expected_dlq:
        problems.append(f"DLQ reasons {dict(result.dlq_reasons)} != sent {dict(result.events.expected_dlq)}")
    if result.dlq_raws != result.events.bad_values:
        problems.append("DLQ raw values differ from the malformed messages sent")
    missing_rec = [i + 1 for i, r in enumerate(result.restarts) if r.first_rec_s is None]
    if result.recs_after_last_restart == 0:
        problems.append("no recommendation after the last restart")
    if missing_rec:
        problems.append(f"no new recommendation before the next kill after restart(s) {missing_rec}")
    return problems


def summary(result: CrashResult) -> dict:
    ev = result.events
    m = result.final_metrics
    return {
        "messages_sent": result.sent,
        "valid_events": sum(ev.expected_n.values()),
        "malformed": sum(ev.expected_dlq.values()),
        "users": len(ev.users),
        "kills": len(result.restarts),
        "users_with_wrong_n": len(result.mismatches()),
        "events_lost": sum(max(0, e - (g or 0)) for e, g in result.mismatches().values()),
        "events_applied_twice": sum(max(0, (g or 0) - e) for e, g in result.mismatches().values()),
        "dlq_expected_by_reason": dict(sorted(ev.expected_dlq.items())),
        "dlq_distinct_by_reason": dict(sorted(result.dlq_reasons.items())),
        "dlq_records": result.dlq_records,
        "dlq_duplicate_records": result.dlq_duplicates,
        "dlq_raw_matches": result.dlq_raws == ev.bad_values,
        "recommendations_after_last_restart": result.recs_after_last_restart,
        "restarts": [{"kill_at_s": round(r.kill_wall - result.start_wall, 2), "sent_at_kill": r.sent_at_kill,
                      "ready_s": None if r.ready_s is None else round(r.ready_s, 3),
                      "first_recommendation_s": None if r.first_rec_s is None else round(r.first_rec_s, 3)}
                     for r in result.restarts],
        "drain_after_producer_s": round(result.drain_s, 1),
        "duration_s": round(result.duration_s, 1),
        "last_worker_events_total": {k: v for k, v in m.items() if k.startswith("streamrec_events_total{")},
        "last_worker_duplicates_skipped": metric_sum({k: v for k, v in m.items() if 'outcome="duplicate"' in k},
                                                     'streamrec_events_total{outcome="duplicate"}'),
        "problems": check(result),
    }
