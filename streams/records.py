"""Typed output records, sent as compact JSON bytes (no Faust metadata in the payload).

Plain slotted dataclasses rather than ``faust.Record``: a worker builds one recommendation per
accepted event, and a Faust record costs ~10x more to construct and serialise (field descriptors,
``to_representation``, Faust's JSON encoder) than a dataclass turned into JSON once.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Optional

import orjson


def _dumps(obj: dict) -> bytes:
    return orjson.dumps(obj)  # compact UTF-8 JSON


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float


@dataclass(slots=True)
class Recommendation:
    """A record of the ``recommendations`` topic (key = user_id); also the HTTP answer."""

    user_id: str
    items: list[ScoredItem]
    source: str  # "model" | "popular"
    model_version: int
    index_version: int
    event_ts: Optional[float]
    emitted_ts: float

    def to_json(self) -> dict:
        return {"user_id": self.user_id,
                "items": [{"item_id": item.item_id, "score": item.score} for item in self.items],
                "source": self.source, "model_version": self.model_version,
                "index_version": self.index_version, "event_ts": self.event_ts,
                "emitted_ts": self.emitted_ts}

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record of ``events.dlq``: why the message was rejected, and the message itself."""

    reason: str
    error: str
    raw: str  # original bytes, base64
    topic: str
    partition: int
    offset: int
    # Only a message over the size limit is cut (to the limit), so that its dead letter still fits
    # in a Kafka message; topic/partition/offset point at the whole original.
    raw_truncated: bool = False

    @classmethod
    def of(cls, reason: str, error: str, raw: bytes | None, topic: str, partition: int,
           offset: int, max_raw_bytes: int | None = None) -> "DeadLetter":
        raw = raw or b""
        truncated = max_raw_bytes is not None and len(raw) > max_raw_bytes
        if truncated:
            raw = raw[:max_raw_bytes]
        return cls(reason=reason, error=error, raw=base64.b64encode(raw).decode("ascii"), topic=topic,
                   partition=partition, offset=offset, raw_truncated=truncated)

    def to_json(self) -> dict:
        return {"reason": self.reason, "error": self.error, "raw": self.raw, "topic": self.topic,
                "partition": self.partition, "offset": self.offset, "raw_truncated": self.raw_truncated}

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())
