"""Delivery latency through the embedded broker (Tansu) for consumer fetch waits, side by side.

Why the worker sets ``STREAMREC_FETCH_MAX_WAIT_MS`` (streams/kafka/faust_patches/transport.py): a producer paces
``--rate`` events/s into ``events`` while a plain kafka-python consumer (no group, from the
beginning) reads them with ``fetch_max_wait_ms`` = each value of ``--waits``; each message carries
its send time, and the delay to its arrival at the consumer is recorded. A broker that answers a
fetch as soon as a record is there gives delays that do not depend on the wait; one that waits
the full time when a fetch finds nothing new gives delays that grow with it.

    .venv/bin/python bench/broker_fetch_wait.py --rate 800 --seconds 20 --waits 100,1500

Writes docs/probes/broker_fetch_wait.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from streams.harness.procs import client_settings, start_broker


def produce_paced(settings, rate: float, seconds: float) -> None:
    from streams.kafka.clients import make_producer

    producer = make_producer(settings)
    started = time.monotonic()
    try:
        for i in range(int(rate * seconds)):
            value = json.dumps({"sent": time.time(), "i": i, "pad": "x" * 100}).encode()
            producer.send(settings.topic_events, key=f"u{i % 5000}".encode(), value=value)
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0.002:
                time.sleep(ahead)
        producer.flush(60)
    finally:
        producer.close()


def measure(settings, wait_ms: int, rate: float, seconds: float) -> dict:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.topic_events, bootstrap_servers=settings.kafka_servers, group_id=None,
                             auto_offset_reset="latest", fetch_max_wait_ms=wait_ms)
    try:
        while not consumer.assignment():
            consumer.poll(timeout_ms=200)
        consumer.poll(timeout_ms=200)
        producer = threading.Thread(target=produce_paced, args=(settings, rate, seconds), daemon=True)
        producer.start()
        delays: list[float] = []
        deadline = time.monotonic() + seconds + 10
        while (producer.is_alive() or len(delays) < int(rate * seconds)) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100, max_records=5000).values():
                now = time.time()
                delays.extend(now - json.loads(r.value)["sent"] for r in records)
        producer.join(10)
    finally:
        consumer.close()
    delays.sort()
    pick = lambda q: round(delays[min(len(delays) - 1, int(q * len(delays)))], 4)  # noqa: E731
    return {"fetch_max_wait_ms": wait_ms, "messages": len(delays), "p50_s": pick(0.5), "p90_s": pick(0.9),
            "p99_s": pick(0.99), "max_s": round(delays[-1], 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=800)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--waits", default="100,1500", help="comma list of fetch_max_wait_ms values")
    ap.add_argument("--out", default=str(ROOT / "docs" / "probes" / "broker_fetch_wait.json"))
    args = ap.parse_args()
    report = {"command": "bench/broker_fetch_wait.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, Python {platform.python_version()}", "runs": []}
    with tempfile.TemporaryDirectory(prefix="fetch-wait-") as tmp:
        broker = start_broker(Path(tmp) / "broker.log")
        try:
            from streams.kafka.topics import ensure_topics

            settings = client_settings(broker.bootstrap, 4)
            ensure_topics(settings)
            for wait in (int(w) for w in args.waits.split(",")):
                run = measure(settings, wait, args.rate, args.seconds)
                print(json.dumps(run), flush=True)
                report["runs"].append(run)
        finally:
            broker.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
