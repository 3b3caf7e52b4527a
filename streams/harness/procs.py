"""Process helpers for the integration tests and the benches: an embedded broker, worker
subprocesses that can be SIGKILLed and restarted on the same data dir / HTTP port, HTTP and
metrics probes, a topic reader, and synthetic event sets (valid + malformed of every reason).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
import torch

from model.recommender import Recommender

from ..kafka.broker import EmbeddedBroker
from ..kafka.clients import watch_consumer
from ..lifecycle.model_store import ModelStore
from ..lifecycle.updates import UpdatePublisher
from ..metrics import parse_exposition
from ..settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without STREAMREC_* (a stray one is a settings error), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(extra)
    return env


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc; ``[pid]`` alone if it cannot be read)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds of ``pids`` so far (from /proc; a process that is gone counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def start_broker(log_file: Path | None = None) -> EmbeddedBroker:
    return EmbeddedBroker(free_port(), log_file=log_file).start()


def client_settings(bootstrap: str, partitions: int, **more) -> Settings:
    return load_settings({"bootstrap_servers": bootstrap, "partitions": partitions, **more}, environ={})


def announce_model(settings: Settings, store_dir: Path, item_ids, version: int, item_vectors=None) -> int:
    """Save an untrained model over ``item_ids`` as ``version`` in the model store at ``store_dir``
    and announce it on ``model-updates``, as the trainer does (streams.lifecycle.trainer). Encoding
    for an untrained model costs what it does for a trained one; an approximate index does not
    (a trained model's item vectors are clustered, an untrained one's are noise): ``item_vectors``
    (float32, one row per item) replace the untrained ones."""
    rec = Recommender.fresh(item_ids=list(item_ids))
    if item_vectors is not None:
        with torch.no_grad():
            rec.encoder.item_emb.weight[1:len(rec.vocab)] = torch.as_tensor(item_vectors)
    rec.version = version
    update = ModelStore(store_dir).save(rec)
    publisher = UpdatePublisher(settings)
    try:
        publisher.publish(update)
    finally:
        publisher.close()
    return update.version


def get_json(url: str, timeout: float = 5.0):
    try:
        r = requests.get(url, timeout=timeout)
        return r.status_code, r.json()
    except (requests.RequestException, ValueError):
        return None, None


@dataclass
class Worker:
    """``streamrec worker`` as a subprocess (own process group). Restarting it keeps the same
    --data-dir and --http-port, so it reopens its RocksDB table directory."""

    bootstrap: str
    data_dir: Path
    app_id: str
    partitions: int
    http_port: int = field(default_factory=free_port)
    log_path: Path | None = None
    extra: list[str] = field(default_factory=list)
    train: bool = False
    launcher: list[str] = field(default_factory=lambda: ["-m", "streams.cli"])
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, *self.launcher, "worker", "--bootstrap-servers", self.bootstrap,
               "--data-dir", str(self.data_dir), "--http-port", str(self.http_port), "--app-id", self.app_id,
               "--partitions", str(self.partitions), "--train", "true" if self.train else "false",
               "--log-level", "warning"]
        return cmd + self.extra

    def start(self) -> "Worker":
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        log_path = self.log_path or (self.data_dir.parent / f"worker-{self.http_port}.log")
        self.log_path = log_path
        with open(log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.time():.3f} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), env=clean_env(), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:] if self.log_path else ""
        except OSError:
            return ""

    def health(self):
        status, body = get_json(f"{self.base}/health/", timeout=2)
        return body if status == 200 else None

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.1) -> float:
        """Wait until /health/ lists partitions; returns the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            body = self.health()
            if body and body.get("partitions"):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(interval)

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (no clean shutdown, no final commit)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass

    def rss_kib(self, children: bool = True) -> int | None:
        """VmRSS of the worker process plus (``children``) its child processes (the serving
        children), summed: pages they share (torch's and FAISS's code) are counted in each of them."""
        if self.proc is None:
            return None
        total = None
        for pid in process_tree(self.proc.pid) if children else [self.proc.pid]:
            try:
                m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            except OSError:
                continue  # exited meanwhile
            total = (total or 0) + (int(m.group(1)) if m else 0)
        return total

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the worker process and its children so far."""
        return None if self.proc is None else cpu_seconds(*process_tree(self.proc.pid))

    def metrics(self) -> dict[str, float]:
        """'name{labels}' -> value of one /metrics/ scrape ({} if unreachable)."""
        try:
            return parse_exposition(requests.get(f"{self.base}/metrics/", timeout=5).text)
        except requests.RequestException:
            return {}

    def user(self, user_id: str):
        status, body = get_json(f"{self.base}/users/{user_id}/", timeout=10)
        return body if status == 200 else None


def metric_sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


def read_topic(settings: Settings, topic: str, *, expect: int | None = None, timeout: float = 60.0,
               idle: float = 3.0) -> list:
    """Every record of ``topic`` (from the beginning): stops at ``expect`` records (then reads
    ``idle`` s more to see extras), or after ``idle`` s without a record, or at ``timeout``."""

    consumer = watch_consumer(settings, [topic], from_beginning=True)
    records, last, deadline = [], time.monotonic(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            for recs in batch.values():
                records.extend(recs)
            if batch:
                last = time.monotonic()
            reached = expect is not None and len(records) >= expect
            if (reached or expect is None) and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return records


# --- synthetic input ---------------------------------------------------------------------------

def malformed(rng: random.Random, user: str, n: int, max_bytes: int) -> tuple[bytes, str]:
    """One invalid message of a reason chosen by rng: (value, expected DLQ reason)."""
    kind = rng.randrange(11)
    base = {"user_id": user, "item_id": f"i{n}", "type": "click", "event_id": f"bad-{n}"}
    if kind == 0:
        return b"not json " + str(n).encode(), "not_json"
    if kind == 1:
        return b"\xff\xfe" + str(n).encode(), "not_json"  # not UTF-8
    if kind == 2:
        return json.dumps([user, n]).encode(), "not_object"
    if kind == 3:
        return json.dumps({k: v for k, v in base.items() if k != "item_id"}).encode(), "missing_field"
    if kind == 4:
        return json.dumps({**base, "user_id": ""}).encode(), "empty_field"
    if kind == 5:
        return json.dumps({**base, "item_id": 1.5}).encode(), "invalid_field"
    if kind == 6:
        return json.dumps({**base, "type": "view"}).encode(), "unknown_type"
    if kind == 7:
        return json.dumps({**base, "ts": "yesterday"}).encode(), "invalid_ts"
    if kind == 8:
        return (json.dumps(base)[:-1] + ', "ts": NaN}').encode(), "invalid_ts"
    if kind == 9:
        return json.dumps({**base, "pad": "x" * (max_bytes + 10)}).encode(), "too_large"
    return json.dumps({**base, "ts": time.time() + 10 * 86_400}).encode(), "invalid_ts"


@dataclass
class EventSet:
    messages: list[tuple[bytes | None, bytes]]  # (key, value) in send order
    expected_n: Counter  # user -> distinct valid events
    expected_dlq: Counter  # reason -> count
    bad_values: Counter  # value bytes (cut to max_bytes) -> count of malformed sends
    users: list[str]


def make_events(total: int, users: int, *, bad_ratio: float = 0.02, unkeyed_ratio: float = 0.01,
                max_bytes: int = 65_536, seed: int = 7, prefix: str = "u") -> EventSet:
    """``total`` messages keyed by user: valid events with unique event_ids (a share of them sent
    without key, so the worker re-keys them) and ~bad_ratio malformed ones of every reason."""
    rng = random.Random(seed)
    names = [f"{prefix}{i}" for i in range(users)]
    messages, expected_n, expected_dlq, bad_values = [], Counter(), Counter(), Counter()
    t0 = time.time() - 3600
    for n in range(total):
        user = rng.choice(names)
        if rng.random() < bad_ratio:
            value, reason = malformed(rng, user, n, max_bytes)
            messages.append((user.encode(), value))
            expected_dlq[reason] += 1
            bad_values[value[:max_bytes]] += 1
            continue
        event = {"user_id": user, "item_id": f"sku-{rng.randrange(2000)}",
                 "type": "purchase" if rng.random() < 0.1 else "click", "ts": t0 + n * 0.01,
                 "event_id": f"ev-{seed}-{n}"}
        if n % 3 == 0:  # a third name a scenario (kept in user state as a fourth element)
            event["scenario"] = "search"
        if n % 2 == 0:  # half name a category (the category board; the user's last one in state)
            event["category"] = f"cat-{rng.randrange(40)}"
        key = None if rng.random() < unkeyed_ratio else user.encode()
        messages.append((key, json.dumps(event).encode()))
        expected_n[user] += 1
    return EventSet(messages, expected_n, expected_dlq, bad_values, names)


def dlq_summary(records: list, max_bytes: int) -> tuple[Counter, Counter, int]:
    """(reason counts over distinct source offsets, raw values (decoded) counter, duplicates)."""
    by_source = {}
    dups = 0
    for r in records:
        d = json.loads(r.value)
        src = (d["topic"], d["partition"], d["offset"])
        if src in by_source:
            dups += 1
            continue
        by_source[src] = d
    reasons = Counter(d["reason"] for d in by_source.values())
    raws = Counter(base64.b64decode(d["raw"])[:max_bytes] for d in by_source.values())
    return reasons, raws, dups
