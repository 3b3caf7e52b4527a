"""The floors a worker's per-event cost is compared with: a consumer that only decodes each message.

``--kind faust``: a bare Faust agent (same event loop as the worker: uvloop when installed), what
Faust's own per-message machinery costs; ``--kind aiokafka``: a plain aiokafka consumer (the client
under Faust), what reading from Kafka costs. Both join their own consumer group and read ``--topic``
from the beginning.

Run as a subprocess by ``bench/throughput.py`` and ``bench/cost.py``. Prints ``{"n": count}`` every
quarter second with ``--progress``, and ``{"messages": n, "seconds": s, "events_per_s": r}`` (seconds
from the first message) when it has read ``--messages`` messages, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid


class Count:
    def __init__(self, target: int, progress: bool) -> None:
        self.n, self.first, self.target = 0, None, target
        if progress:  # a thread, so that the count is reported when no message comes too
            threading.Thread(target=self._report, daemon=True).start()

    def _report(self) -> None:
        while True:
            print(json.dumps({"n": self.n}), file=sys.__stdout__, flush=True)
            time.sleep(0.25)

    def one(self) -> bool:
        """Count a decoded message; True when the target is reached (the summary is printed)."""
        self.n += 1
        if self.first is None:
            self.first = time.monotonic()
        if self.n < self.target:
            return False
        took = time.monotonic() - self.first
        print(json.dumps({"messages": self.n, "seconds": round(took, 2),
                          "events_per_s": round(self.n / took, 1) if took else None}),
              file=sys.__stdout__, flush=True)
        return True


def faust_floor(args, count: Count) -> None:
    import faust

    datadir = tempfile.mkdtemp(prefix="faust-floor-")
    app = faust.App(f"faust-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{args.bootstrap}",
                    store="memory://", datadir=datadir, web_enabled=False, autodiscover=False,
                    consumer_auto_offset_reset="earliest", topic_partitions=args.partitions,
                    broker_session_timeout=6, broker_rebalance_timeout=4, broker_heartbeat_interval=1)
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw", partitions=args.partitions)

    @app.agent(topic)
    async def decode_only(stream):
        async for value in stream:
            json.loads(value)
            if count.one():
                shutil.rmtree(datadir, ignore_errors=True)
                os._exit(0)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


async def aiokafka_floor(args, count: Count) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=f"aiokafka-floor-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", fetch_max_wait_ms=100, session_timeout_ms=6000,
                                heartbeat_interval_ms=1000)
    await consumer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    json.loads(record.value)
                    if count.one():
                        return
    finally:
        await consumer.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=("faust", "aiokafka"), default="faust")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="events")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()

    from streams.cli.worker import use_fast_event_loop

    use_fast_event_loop()
    count = Count(args.messages, args.progress)
    if args.kind == "faust":
        faust_floor(args, count)
    else:
        asyncio.run(aiokafka_floor(args, count))


if __name__ == "__main__":
    main()
