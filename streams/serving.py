"""Turning users' histories into recommendation records: in the worker's executor thread (never on
the event loop), or in the active serving child (``streams.serving_process``), which sends back the
records' bytes.

The model path (encoder + FAISS index) is plugged in by :mod:`streams.live_model`; without a model,
or for a user with no usable history, the answer is recent popularity marked ``source="popular"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from .records import Recommendation, ScoredItem

History = list[tuple[str, str]]  # (item_id, type), oldest first
Payload = tuple[str, str, bytes]  # (user_id, source, the record's bytes): what the worker sends


@dataclass(slots=True)
class Request:
    """A user whose recommendation is due (one accepted event, or an HTTP query)."""

    user_id: str
    history: History
    event_ts: float | None = None
    arrived: float = field(default_factory=time.time)  # when the worker received the event
    msg_ts: float | None = None  # Kafka record timestamp


class ModelPath(Protocol):
    """What serving needs from a live model: see :class:`streams.live_model.LiveModel`."""

    model_version: int
    index_version: int

    def recommend(self, histories: Sequence[History], k: int) -> list[list[tuple[str, float]] | None]:
        """Top-k (item_id, score) per history, seen items excluded; None where the model has no answer."""


def popular_for(history: History, popular: Sequence[tuple[str, float]], k: int) -> list[ScoredItem]:
    seen = {item for item, _ in history}
    out = [ScoredItem(item_id=item, score=round(score, 6)) for item, score in popular if item not in seen]
    return out[:k]


def recommend(requests: Sequence[Request], popular: Sequence[tuple[str, float]], k: int,
              model: ModelPath | None = None) -> list[Recommendation]:
    """One record per request. ``popular`` is (item_id, score) best first, at least k + len(history)."""
    answers: list[list[tuple[str, float]] | None] = [None] * len(requests)
    model_version = index_version = 0
    if model is not None:
        model_version, index_version = model.model_version, model.index_version
        answers = model.recommend([r.history for r in requests], k)
    now = time.time()
    records = []
    for request, answer in zip(requests, answers):
        if answer:
            items = [ScoredItem(i, round(float(s), 6)) for i, s in answer]
            source = "model"
        else:
            items, source = popular_for(request.history, popular, k), "popular"
        records.append(Recommendation(
            user_id=request.user_id, items=items, source=source, model_version=model_version,
            index_version=index_version, event_ts=request.event_ts, emitted_ts=now))
    return records


def payloads(records: Sequence[Recommendation]) -> list[Payload]:
    return [(r.user_id, r.source, r.to_bytes()) for r in records]


def record_payloads(requests: Sequence[Request], popular: Sequence[tuple[str, float]], k: int,
                    model: ModelPath | None = None) -> list[Payload]:
    """``recommend`` as the bytes to send. A model that serves from another process
    (:class:`streams.serving_process.ServingPair`) builds them there, off this process's GIL; it
    answers None when it cannot, and then they are built here (popularity, if no model serves)."""
    serve = getattr(model, "serve_payloads", None)
    if serve is not None:
        out = serve(requests, popular, k)
        if out is not None:
            return out
    return payloads(recommend(requests, popular, k, model))
