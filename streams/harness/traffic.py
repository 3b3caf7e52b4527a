"""A steady synthetic event stream in a background thread, for runs that watch the workers through
Prometheus (tests/integration/test_prometheus.py, ops/render_dashboard.py --demo).

Users walk a catalogue that keeps growing (user u clicks item ``u + n`` at step n), so a model has
a rule to learn and new items keep arriving for the index; a new user now and then is a cold
start; ``bad_ratio`` of the messages are malformed (every DLQ reason, from
:func:`streams.harness.procs.malformed`) and can be raised while the stream runs.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

from .procs import malformed


class EventStream:
    def __init__(self, producer, topic: str, *, rate: float = 50.0, users: int = 24,
                 bad_ratio: float = 0.01, max_bytes: int = 65_536, seed: int = 5) -> None:
        self.producer, self.topic, self.rate, self.users = producer, topic, rate, users
        self.bad_ratio, self.max_bytes = bad_ratio, max_bytes
        self.rng = random.Random(seed)
        self.sent = Counter()  # "valid" and each DLQ reason -> messages sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    def start(self) -> "EventStream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(30)

    def _message(self, n: int) -> tuple[bytes, bytes]:
        user = f"u{n % self.users}" if n % 50 else f"new-{n}"
        if self.rng.random() < self.bad_ratio:
            value, reason = malformed(self.rng, user, n, self.max_bytes)
            self.sent[reason] += 1
            return user.encode(), value
        step = n // self.users
        event = {"user_id": user, "item_id": f"item-{(n % self.users) + step}", "type": "click",
                 "ts": time.time(), "event_id": f"stream-{n}"}
        self.sent["valid"] += 1
        return user.encode(), json.dumps(event).encode()

    def _run(self) -> None:
        n, started = 0, time.monotonic()
        while not self._stop.is_set():
            key, value = self._message(n)
            self.producer.send(self.topic, key=key, value=value)
            n += 1
            ahead = n / self.rate - (time.monotonic() - started)
            if ahead > 0:
                self.producer.flush(10)
                self._stop.wait(ahead)
