"""Typed output records (JSON, no Faust metadata in the payload)."""

from __future__ import annotations

import base64
from typing import List, Optional

import faust


class ScoredItem(faust.Record, serializer="json", include_metadata=False):
    item_id: str
    score: float


class Recommendation(faust.Record, serializer="json", include_metadata=False):
    """A record of the ``recommendations`` topic (key = user_id); also the HTTP answer."""

    user_id: str
    items: List[ScoredItem]
    source: str  # "model" | "popular"
    model_version: int
    index_version: int
    event_ts: Optional[float]
    emitted_ts: float

    def to_json(self) -> dict:
        return {**self.asdict(), "items": [item.asdict() for item in self.items]}


class DeadLetter(faust.Record, serializer="json", include_metadata=False):
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
