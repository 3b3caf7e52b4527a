"""Replaying event files into the ``events`` topic (kafka-python).

Formats: Taobao UserBehavior CSV (``user,item,category,behavior,ts``; pv/cart/fav -> click,
buy -> purchase), ML-1M ``user item`` lines (no timestamps: the receive time is used), JSON lines
(sent as they are, malformed lines included, so the DLQ can be exercised). Files may be gzipped.
Each event is keyed by its user id. Taobao and ML-1M lines get ``event_id = <file>:<line>``, so
replaying a file twice applies every event once.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import IO, Iterator

from tqdm import tqdm

from model.interactions import TAOBAO_TYPES

from ..errors import StreamRecError
from ..kafka.clients import make_producer
from ..kafka.topics import ensure_topics
from ..settings import Settings

Message = tuple[bytes | None, bytes]  # (key, value)


class ReplayError(StreamRecError):
    pass


def open_text(path: Path) -> IO[str]:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def detect_format(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    with open_text(path) as f:
        first = next((line.strip() for line in f if line.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    if first.count(",") == 4:
        return "taobao"
    if len(first.split()) == 2:
        return "ml1m"
    raise ReplayError(f"cannot tell the format of {path} from its first line {first[:60]!r}; "
                      f"pass --format taobao|ml1m|jsonl")


def _taobao(lines: Iterator[str], tag: str) -> Iterator[Message]:
    for lineno, line in enumerate(lines, 1):
        parts = line.strip().split(",")
        try:
            if len(parts) != 5 or parts[3] not in TAOBAO_TYPES:
                raise ValueError
            user, item, category, behavior, ts = parts
            ts_s = float(ts)
        except ValueError:
            raise ReplayError(f"{tag}:{lineno}: not a Taobao UserBehavior row: {line.strip()[:80]!r}") from None
        event = {"user_id": user, "item_id": item, "type": TAOBAO_TYPES[behavior], "ts": ts_s,
                 "event_id": f"{tag}:{lineno}", "category": category}
        yield user.encode(), json.dumps(event).encode()


def _ml1m(lines: Iterator[str], tag: str) -> Iterator[Message]:
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) != 2:
            raise ReplayError(f"{tag}:{lineno}: expected 'user item', got {line.strip()[:80]!r}")
        event = {"user_id": parts[0], "item_id": parts[1], "type": "click", "event_id": f"{tag}:{lineno}"}
        yield parts[0].encode(), json.dumps(event).encode()


def _jsonl(lines: Iterator[str], tag: str) -> Iterator[Message]:
    for line in lines:
        raw = line.rstrip("\n")
        if not raw.strip():
            continue
        key = None
        try:
            user = json.loads(raw).get("user_id")
            key = str(user).encode() if isinstance(user, (str, int)) and not isinstance(user, bool) else None
        except (ValueError, AttributeError, RecursionError):  # the worker rejects it
            pass
        yield key, raw.encode("utf-8", errors="surrogateescape")


READERS = {"taobao": _taobao, "ml1m": _ml1m, "jsonl": _jsonl}


def iter_messages(path: Path, fmt: str = "auto") -> Iterator[Message]:
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise ReplayError(f"unknown format {fmt!r} (taobao, ml1m, jsonl)")
    tag = path.name.removesuffix(".gz")
    with open_text(path) as f:
        yield from READERS[fmt](f, tag)


def produce_messages(settings: Settings, messages: Iterator[Message], *, rate: float = 0.0, limit: int = 0,
                     progress: bool = True, total: int | None = None, producer=None) -> int:
    """Send ``messages`` to the events topic at ``rate``/s (0: unthrottled); returns the count."""
    own = producer is None
    producer = make_producer(settings) if own else producer
    bar = tqdm(total=limit or total, unit="ev", disable=not progress, desc="produce", mininterval=0.5)
    sent, started = 0, time.monotonic()
    try:
        for key, value in messages:
            if limit and sent >= limit:
                break
            producer.send(settings.topic_events, key=key, value=value)
            sent += 1
            bar.update(1)
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    time.sleep(ahead)
        producer.flush()
    finally:
        bar.close()
        if own:
            producer.close()
    return sent


def produce_file(settings: Settings, path: Path, *, fmt: str = "auto", rate: float = 0.0, limit: int = 0,
                 progress: bool = True) -> int:
    messages = iter_messages(path, fmt)
    first = next(messages, None)  # read errors surface before we touch Kafka
    if first is None:
        return 0
    ensure_topics(settings)

    def chained() -> Iterator[Message]:
        yield first
        yield from messages

    return produce_messages(settings, chained(), rate=rate, limit=limit, progress=progress)
