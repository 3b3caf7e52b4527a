"""``streamrec demo``: the whole pipeline on the embedded broker, for a first look.

Starts the broker, a worker (a child process, as in production), replays the Taobao sample
(plus a few malformed messages, to show the dead-letter topic), prints recommendations as they
arrive and ends with a summary. It stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from pydantic import SecretStr

from ..kafka.broker import EmbeddedBroker, port_open
from ..kafka.clients import watch_consumer
from ..kafka.topics import ensure_topics
from ..metrics import histogram_quantile, parse_exposition
from ..settings import ENV_PREFIX, Settings, env_name
from .live_quality import LiveQuality
from .produce import iter_messages, produce_messages

MALFORMED = [
    b"this is not json",
    b'["an", "array"]',
    b'{"user_id": "u-demo", "type": "click"}',
    b'{"user_id": "u-demo", "item_id": "i1", "type": "like"}',
    b'{"user_id": "u-demo", "item_id": "i1", "type": "click", "ts": 1e300}',
]

READER_FETCH_WAIT_MS = 20  # the demo's reader measures latency: a fetch waits at most this for records


def _wait_http(url: str, timeout: float, ok=lambda body: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if ok(json.loads(resp.read())):
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    return False


class Watcher(threading.Thread):
    """Reads recommendations and the DLQ; prints a live view; measures end-to-end latency."""

    def __init__(self, settings: Settings, sent_at: dict[str, float], quality: LiveQuality) -> None:
        super().__init__(daemon=True, name="demo-watcher")
        self.settings, self.sent_at, self.quality = settings, sent_at, quality
        self.recs = self.dlq = 0
        self.by_source: dict[str, int] = {}
        self.latencies: list[float] = []  # producer send of a user's last event -> its record read
        self.delivery: list[float] = []  # the record's send by the worker -> read here
        self.last_record = time.monotonic()
        self.stop_flag = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        s = self.settings
        consumer = watch_consumer(s, [s.topic_recommendations, s.topic_dlq], fetch_max_wait_ms=READER_FETCH_WAIT_MS)
        last_print = 0.0
        try:
            while not self.stop_flag.is_set():
                polled = consumer.poll(timeout_ms=200)
                self.ready.set()
                now = time.time()
                for tp, records in polled.items():
                    for record in records:
                        self.last_record = time.monotonic()
                        if tp.topic == s.topic_dlq:
                            self.dlq += 1
                            body = json.loads(record.value)
                            print(f"  DLQ  {body['reason']:<14} {body['error'][:70]}", flush=True)
                            continue
                        self.recs += 1
                        rec = json.loads(record.value)
                        self.by_source[rec["source"]] = self.by_source.get(rec["source"], 0) + 1
                        self.quality.record(rec["user_id"], rec["source"], [i["item_id"] for i in rec["items"]])
                        sent = self.sent_at.get(rec["user_id"])
                        if sent is not None:
                            self.latencies.append(now - sent)
                        if record.timestamp:  # the worker's producer stamps a record when it sends it
                            self.delivery.append(max(0.0, now - record.timestamp / 1000))
                        if now - last_print >= 1.0:
                            last_print = now
                            items = ", ".join(i["item_id"] for i in rec["items"][:5])
                            print(f"  rec  user {rec['user_id']:<8} <- [{items}] ({rec['source']}); "
                                  f"{self.recs} records so far", flush=True)
        finally:
            consumer.close()


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_demo(settings: Settings, data: Path, duration_s: float = 45.0, rate: float = 2000.0,
             limit: int = 0) -> int:
    if not data.exists():
        print(f"streamrec demo: the Taobao sample is not at {data}\n"
              f"  pass --data PATH (a UserBehavior.csv or .csv.gz: user,item,category,behavior,ts)",
              file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    given = worker_environment(settings)  # the settings given to the demo reach its worker too
    settings = replace_settings(settings, data_dir=workdir)
    broker = worker = None
    started = time.monotonic()
    try:
        if settings.embedded:
            broker = EmbeddedBroker(settings.broker_port).start()
            bootstrap = broker.bootstrap
        else:
            bootstrap = settings.bootstrap_servers
        ensure_topics(settings)
        if port_open(settings.http_host, settings.http_port):
            print(f"streamrec demo: port {settings.http_port} is in use; pass --http-port", file=sys.stderr)
            return 2
        print(f"[demo] broker {bootstrap}; starting a worker (log: {workdir / 'worker.log'})", flush=True)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}, **given}
        cmd = [sys.executable, "-m", "streams.cli", "worker", "--bootstrap-servers", bootstrap,
               "--data-dir", str(workdir), "--http-port", str(settings.http_port),
               "--http-host", settings.http_host, "--partitions", str(settings.partitions),
               "--app-id", settings.app_id, "--publish-interval-s", str(settings.publish_interval_s)]
        with open(workdir / "worker.log", "wb") as log_file:
            worker = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        base = f"http://{settings.http_host}:{settings.http_port}"
        if not _wait_http(f"{base}/health/", 60, ok=lambda body: bool(body.get("partitions"))):
            print("[demo] the worker did not become ready within 60 s; see its log", file=sys.stderr)
            return 1
        print(f"[demo] worker ready after {time.monotonic() - started:.1f} s; replaying {data.name} "
              f"at {rate:g} events/s for at most {duration_s:g} s", flush=True)

        sent_at: dict[str, float] = {}
        quality = LiveQuality(k=settings.top_k)
        watcher = Watcher(settings, sent_at, quality)
        watcher.start()
        watcher.ready.wait(10)
        produce_messages(settings, iter((None, m) for m in MALFORMED), progress=False)
        deadline = time.monotonic() + duration_s

        def timed():
            for n, (key, value) in enumerate(iter_messages(data)):
                if time.monotonic() > deadline:
                    return
                if key is not None:
                    user = key.decode()
                    quality.event(user, json.loads(value)["item_id"])  # before it is sent: test, then train
                    sent_at[user] = time.time()
                yield key, value

        t0 = time.monotonic()
        sent = produce_messages(settings, timed(), rate=rate, limit=limit, progress=False)
        produce_s = time.monotonic() - t0
        # Drain: wait until no record arrived for 3 s (at most 30 s).
        drain_deadline = time.monotonic() + 30
        while time.monotonic() < drain_deadline and time.monotonic() - watcher.last_record < 3:
            time.sleep(0.2)
        watcher.stop_flag.set()
        watcher.join(5)
        with urllib.request.urlopen(f"{base}/metrics/", timeout=5) as resp:
            metrics = resp.read().decode()
        with urllib.request.urlopen(f"{base}/health/", timeout=5) as resp:
            gate = json.loads(resp.read()).get("gate") or {}
        parsed = parse_exposition(metrics)
        accepted = parsed.get('streamrec_events_total{outcome="accepted"}', 0.0)
        model_version = parsed.get("streamrec_model_version", 0.0)
        lat = watcher.latencies
        print("\n[demo] summary")
        print(f"  events sent          {sent + len(MALFORMED)} ({sent} valid replayed + {len(MALFORMED)} malformed) "
              f"in {produce_s:.1f} s = {sent / max(produce_s, 1e-9):.0f} events/s")
        print(f"  events accepted      {accepted:.0f}")
        print(f"  dead-letter records  {watcher.dlq}")
        print(f"  recommendations      {watcher.recs} {watcher.by_source}")
        print(f"  model version served {model_version:.0f} (trained on the stream, published every "
              f"{settings.publish_interval_s:g} s)")
        print(f"  live quality         {quality.summary()}")
        for segment, scores in gate.items():  # every source, served or not, scored in the worker
            if scores["events"]:
                hr = ", ".join(f"{source} {value:.4f}" for source, value in scores["hr"].items())
                against = ", ".join(f"{source} {paired['z']:+.1f}" for source, paired in scores["against_serving"].items()
                                    if paired["side_by_side"])
                print(f"  gate, {segment + ' histories':<14} HR@{settings.top_k} {hr} over {scores['events']:,} events "
                      f"(decayed) -> serving {scores['serving']}" + (f" (paired z against it: {against})" if against else ""))
        print(f"  end-to-end latency   p50 {_quantile(lat, .5) * 1000:.1f} ms, p99 {_quantile(lat, .99) * 1000:.1f} ms "
              f"(producer send of a user's last event -> its recommendation read back), of which")
        for label, name, what in (
                ("to the worker", "streamrec_event_delivery_seconds",
                 "this producer's send -> the worker's ingest agent, through the broker and Faust's consumer"),
                ("in the worker", "streamrec_worker_latency_seconds",
                 "event received -> its recommendation acknowledged by the broker")):
            p50, p99 = (histogram_quantile(parsed, name, q) for q in (.5, .99))
            if p50 is not None:
                print(f"    {label:<18} p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms ({what}; the worker's histogram)")
        print(f"    broker -> reader   p50 {_quantile(watcher.delivery, .5) * 1000:.1f} ms, "
              f"p99 {_quantile(watcher.delivery, .99) * 1000:.1f} ms (the record's send by the worker -> read here)")
        return 0 if watcher.recs > 0 else 1
    except KeyboardInterrupt:
        return 130
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"[demo] stopped everything after {time.monotonic() - started:.1f} s")


# what the demo's command line gives its worker itself (the rest goes through the environment)
DEMO_GIVES = {"bootstrap_servers", "data_dir", "http_port", "http_host", "partitions", "app_id", "publish_interval_s"}


def worker_environment(settings: Settings) -> dict[str, str]:
    """STREAMREC_* variables for every setting given to the demo (flag or environment) that the
    demo does not pass on the worker's command line: ``streamrec demo --top-k 5`` serves 5 items."""
    env = {}
    for name in sorted(settings.model_fields_set - DEMO_GIVES):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[env_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def replace_settings(settings: Settings, **changes) -> Settings:
    return Settings.model_validate({**settings.model_dump(), **changes})
