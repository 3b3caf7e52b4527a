"""A bare Faust agent that only decodes each message: the floor of Faust's own per-message cost.

Run by ``bench/throughput.py`` as a subprocess (same event loop as the worker: uvloop when
installed); prints one JSON line ``{"messages": n, "seconds": s, "events_per_s": r}`` when it has
read ``--messages`` messages of ``--topic`` from the beginning, then exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="events")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--messages", type=int, required=True)
    args = ap.parse_args()

    from streams.cli.worker import use_fast_event_loop

    use_fast_event_loop()
    import faust

    datadir = tempfile.mkdtemp(prefix="faust-floor-")
    app = faust.App(f"faust-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{args.bootstrap}",
                    store="memory://", datadir=datadir, web_enabled=False, autodiscover=False,
                    consumer_auto_offset_reset="earliest", topic_partitions=args.partitions,
                    broker_session_timeout=6, broker_rebalance_timeout=4, broker_heartbeat_interval=1)
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw", partitions=args.partitions)
    state = {"n": 0, "first": None}

    @app.agent(topic)
    async def decode_only(stream):
        async for value in stream:
            json.loads(value)
            state["n"] += 1
            if state["first"] is None:
                state["first"] = time.monotonic()
            if state["n"] >= args.messages:
                took = time.monotonic() - state["first"]
                print(json.dumps({"messages": state["n"], "seconds": round(took, 2),
                                  "events_per_s": round(state["n"] / took, 1)}), file=sys.__stdout__, flush=True)
                shutil.rmtree(datadir, ignore_errors=True)
                os._exit(0)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
