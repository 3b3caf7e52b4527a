"""What one user's state costs per event once it is full (``streams/ingest/user_state.py``).

Every accepted event reads the user's state from RocksDB, decodes it, applies the event, encodes
it, and writes the whole record to RocksDB and to the changelog. This builds the state of a user
who has sent ``--events`` events (so it holds ``seq_len`` items and ``dedupe_window`` event ids)
and reports its size in bytes and the CPU time of decode + apply + encode + history per event.

Event ids as producers send them (``--id-format``): ``derived`` is what the worker makes of an
event without one (``user|item|type|ts``, the Taobao replay and the demo), ``uuid`` a random UUID,
``short`` a counter (what bench/throughput.py sends).

    python bench/user_state_cost.py --id-format derived uuid short --json bench/results/user_state_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from streams.ingest.events import Event
from streams.ingest.user_state import apply_event, decode, encode, history


def event_id(fmt: str, user: str, item: str, ts: float, n: int) -> str:
    if fmt == "derived":
        return f"{user}|{item}|click|{ts!r}"  # streams.ingest.events.parse_event without an event_id
    if fmt == "uuid":
        return str(uuid.uuid4())
    return f"bl-{n}"


def measure(fmt: str, events: int, repeat: int, seq_len: int, dedupe_window: int) -> dict:
    user, state = "u1000123", None
    for n in range(events):
        item, ts = f"{4_000_000 + n * 37}", 1_511_544_070.0 + n
        ev = Event(user_id=user, item_id=item, type="click", ts=ts, event_id=event_id(fmt, user, item, ts, n))
        state = apply_event(state, ev, seq_len=seq_len, dedupe_window=dedupe_window)
    raw = encode(state)
    ts = 1_600_000_000.0
    new = Event(user, "4999999", "click", ts, event_id(fmt, user, "4999999", ts, events))
    started = time.process_time()
    for _ in range(repeat):
        after = apply_event(decode(raw), new, seq_len=seq_len, dedupe_window=dedupe_window)
        encode(after)
        history(after)
    per_event_us = (time.process_time() - started) / repeat * 1e6
    return {"id_format": fmt, "events_applied": events, "state_bytes": len(raw),
            "event_id_bytes": len(encode(state["eids"])), "cpu_us_per_event": round(per_event_us, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--id-format", nargs="+", default=["derived", "uuid", "short"],
                    choices=("derived", "uuid", "short"))
    ap.add_argument("--events", type=int, default=300, help="events the user has sent (fills the state)")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--dedupe-window", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=20_000)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "user_state_cost.json"))
    args = ap.parse_args()
    rows = [measure(fmt, args.events, args.repeat, args.seq_len, args.dedupe_window) for fmt in args.id_format]
    for row in rows:
        print(row)
    result = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, Python {platform.python_version()}",
              "seq_len": args.seq_len, "dedupe_window": args.dedupe_window, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
