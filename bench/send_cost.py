"""Producer CPU per record: aiokafka ``send`` one record at a time against record batches
(``create_batch`` / ``send_batch``, what ``streams.kafka.direct_writes.send_many`` does), side by side on
one embedded broker. Why the worker hands changelog and recommendation records over in batches.

    .venv/bin/python bench/send_cost.py --records 20000 --rounds 3

Process CPU time (the event loop and aiokafka's sender) per record, each way, alternating rounds.
Writes docs/probes/send_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]

from streams.harness.procs import start_broker
from streams.kafka.direct_writes import send_many


async def one_by_one(producer, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    for key, value in records:
        sent = await producer.send(topic, value, key=key)
        sent.add_done_callback(lambda f: None)   # as send_now does
    await producer.flush()


async def batched(producer, topic: str, records: list[tuple[bytes, bytes]], per_call: int) -> None:
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    for start in range(0, len(records), per_call):
        await send_many(app, topic, records[start:start + per_call])
    await producer.flush()


async def measure(bootstrap: str, args) -> dict:
    from aiokafka import AIOKafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("send-cost", args.partitions, 1)])
    admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=-1, max_batch_size=262_144)
    await producer.start()
    value = b"x" * args.value_bytes
    records = [(f"u{i % args.users}".encode(), value) for i in range(args.records)]
    out = {"send": [], "send_many": []}
    try:
        for _ in range(args.rounds):
            for name, run in (("send", lambda: one_by_one(producer, "send-cost", records)),
                              ("send_many", lambda: batched(producer, "send-cost", records, args.per_call))):
                cpu = time.process_time()
                await run()
                out[name].append(round((time.process_time() - cpu) / len(records) * 1e6, 2))
                print(f"{name}: {out[name][-1]} µs CPU per record", flush=True)
    finally:
        await producer.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--value-bytes", type=int, default=300)
    ap.add_argument("--per-call", type=int, default=250, help="records per send_many call (a micro-batch)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "probes" / "send_cost.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="send-cost-") as tmp:
        broker = start_broker(Path(tmp) / "broker.log")
        try:
            per_record = asyncio.run(measure(broker.bootstrap, args))
        finally:
            broker.stop()
    report = {
        "command": "python bench/send_cost.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "args": vars(args), "cpu_us_per_record": per_record,
        "ratio_send_to_send_many": round(min(per_record["send"]) / min(per_record["send_many"]), 2),
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
