"""Typed output records, sent as compact JSON bytes (no Faust metadata in the payload).

Plain slotted dataclasses rather than ``faust.Record``: a worker builds one recommendation per
accepted event, and a Faust record costs ~10x more to construct and serialise (field descriptors,
``to_representation``, Faust's JSON encoder) than a dataclass turned into JSON once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import orjson

from model.interactions import DEFAULT_SCENARIO


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
    purchase_weight: float = 0.0  # the model's blend of next-item and next-purchase scores (0: next-item)
    scenario: str = DEFAULT_SCENARIO  # the scenario it is for (the user's last event's, or the one asked)

    def to_json(self) -> dict:
        return {"user_id": self.user_id,
                "items": [{"item_id": item.item_id, "score": item.score} for item in self.items],
                "source": self.source, "model_version": self.model_version,
                "index_version": self.index_version, "event_ts": self.event_ts,
                "emitted_ts": self.emitted_ts, "purchase_weight": self.purchase_weight,
                "scenario": self.scenario}

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())
