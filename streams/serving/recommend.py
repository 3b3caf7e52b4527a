"""What serving answers, whatever the backend: requests in, recommendation records out.

:class:`Backend` is the one interface; :class:`~streams.serving.live_model.LiveModel` serves in
the worker's process (its serving thread), :class:`~streams.serving.processes.ProcessBackend`
from two child processes. :func:`build_records` is the one place a record is made: the model's
answer where it has one, else recent popularity with the user's seen items removed
(``source="popular"``), or the co-visitation list, or the category's recent popularity
(``streams.ingest.categories``), or the blend of the model's list and
co-visitation's (:func:`fuse`), where the gate (``streams.serving.gate``) serves a segment with it
(:func:`made_by`). The stream and HTTP both call ``streams.serving.service.Serving.recommend``
and get the same record bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from model.interactions import DEFAULT_SCENARIO, step_scenario

from ..lifecycle.model_store import ModelUpdate
from .gate import segment
from .records import Recommendation, ScoredItem

History = list[tuple]  # (item_id, type[, scenario]) per event (Event.step), oldest first
Answer = list[tuple[str, float]] | None  # the model's top-k (item_id, score), None: no answer
Ranked = Sequence[tuple[str, float]]  # (item_id, score), best first
Payload = tuple[str, str, bytes]  # (user_id, source, the record's bytes): what the worker sends
Timings = dict[str, float]  # seconds per stage of one batch (stages: streams/metrics.py)


@dataclass(slots=True)
class Request:
    """A user whose recommendation is due (one accepted event, or an HTTP query)."""

    user_id: str
    history: History
    event_ts: float | None = None
    arrived: float = field(default_factory=time.time)  # when the worker received the event
    msg_ts: float | None = None  # Kafka record timestamp
    scenario: str | None = None  # what it is asked for (None: the scenario of the last event)
    category: str | None = None  # the category of the user's last event that named one

    def asked(self) -> str:
        """The scenario the recommendation is for."""
        if self.scenario is not None:
            return self.scenario
        return step_scenario(self.history[-1]) if self.history else DEFAULT_SCENARIO


@dataclass(slots=True)
class Candidates:
    """What a batch's records are made from besides the model: recent popularity (best first, at
    least k + len(history) items), each request's co-visitation and category top-k (None where not
    listed), and the source the gate serves each segment with (None: the model where it has an
    answer, else popularity)."""

    popular: Ranked
    covisit: list[Ranked | None] | None = None
    category: list[Ranked | None] | None = None
    choice: dict[str, str] | None = None
    long_from: int = 5


class CandidateSource(Protocol):
    """A stream-maintained source (``streams.ingest.covisit.CoVisitation``)."""

    def recommend(self, history: Sequence[str], k: int) -> list[tuple[str, float]]:
        """Top-k (item, score) for a history of item ids, seen items excluded."""

    def __len__(self) -> int:
        """Items it has neighbours for."""


class CategorySource(Protocol):
    """Recent popularity per item category (``streams.ingest.categories.CategoryPopularity``)."""

    def recommend(self, category: str | None, history: Sequence[str], k: int) -> list[tuple[str, float]]:
        """Top-k (item, score) of ``category`` now, the history's items excluded."""

    def __len__(self) -> int:
        """Categories it counts."""


ModelIds = list[list[str] | None]  # the model's item ids per request (for the gate); None: no answer


class Backend(Protocol):
    """Where the model runs. Serving calls ``recommend`` / ``serve`` from its serving thread and
    ``load`` / ``add_items`` from its swap thread (one at a time each)."""

    @property
    def model_version(self) -> int: ...

    @property
    def index_version(self) -> int: ...

    def recommend(self, histories: Sequence[History], k: int) -> list[Answer]:
        """Top-k per history, seen items excluded; None where the model has no answer."""

    def serve(self, requests: Sequence[Request], candidates: Candidates, k: int) -> tuple[list[Payload], ModelIds, Timings]:
        """The records of ``requests`` as bytes (:func:`build_records`), the model's answers, and
        the time each stage took (encode, search, records; ipc for a child process)."""

    last_refusal: str | None  # why the last refused version was refused

    def load(self, update: ModelUpdate) -> bool:
        """Verify, load and swap in ``update``; False (and logged) if it is refused."""

    def wants(self, item_id: str) -> bool:
        """Whether ``item_id`` is new to the served model (event loop: must be cheap)."""

    def add_items(self, items: list[tuple[str, list[str]]]) -> list[str]:
        """Give new items (id, co-items) cold-start vectors and index them; the ids added."""

    def close(self) -> None: ...


def unseen_top(history: History, ranked: Ranked, k: int) -> list[ScoredItem]:
    """The first ``k`` of ``ranked`` that the user has not interacted with."""
    return [ScoredItem(item, round(score, 6)) for item, score in unseen(history, ranked, k)]


def unseen(history: History, ranked: Ranked, k: int) -> list[tuple[str, float]]:
    seen = {item for item, *_ in history}
    out = []
    for pair in ranked:
        if pair[0] not in seen:
            out.append(pair)
            if len(out) == k:
                break
    return out


# Reciprocal-rank fusion's constant (Cormack, Clarke and Buettcher, SIGIR 2009: 60, the value
# published with the method, not tuned here): items on both lists come first, the rest alternate.
FUSION_K = 60.0


def fuse(first: Sequence[str], second: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The top ``k`` of two ranked lists by reciprocal-rank fusion: an item scores the sum over the
    lists of 1 / (FUSION_K + its rank); ties go to ``first``'s order."""
    scores: dict[str, float] = {}
    for ranked in (first, second):
        for rank, item in enumerate(ranked, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (FUSION_K + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])[:k]   # stable: first's order on ties


def made_by(chosen: str, has_model: bool, has_covisit: bool, has_category: bool = False) -> str:
    """The source that makes a record when the gate chose ``chosen`` for the user's segment: the
    chosen one where it has an answer (the blend needs both lists: with one, that one), else
    popularity."""
    if chosen == "blend":
        return "blend" if has_model and has_covisit else "model" if has_model else \
            "covisit" if has_covisit else "popular"
    if chosen == "model":
        return "model" if has_model else "popular"
    if chosen == "covisit":
        return "covisit" if has_covisit else "popular"
    if chosen == "category":
        return "category" if has_category else "popular"
    return "popular"


def build_records(requests: Sequence[Request], answers: Sequence[Answer], candidates: Candidates, k: int,
                  model_version: int, index_version: int, purchase_weight: float = 0.0) -> list[Recommendation]:
    """One record per request, from the source chosen for the user's segment (:func:`made_by`): the
    model's answer, the blend of it and the co-visitation list, the co-visitation or the category
    list (filled up with popularity), or popularity. ``purchase_weight``: the model's purchase blend
    (``Recommender.set_purchase_weight``), written into the records the model's list made."""
    now = time.time()
    popular, choice = candidates.popular, candidates.choice
    records = []
    for n, (request, answer) in enumerate(zip(requests, answers)):
        chosen = choice[segment(len(request.history), candidates.long_from)] if choice else "model"
        covisit = candidates.covisit[n] if candidates.covisit and chosen in ("covisit", "blend") else None
        category = candidates.category[n] if candidates.category and chosen == "category" else None
        source = made_by(chosen, bool(answer), bool(covisit), bool(category))
        if source == "blend":
            items = [ScoredItem(i, round(s, 6)) for i, s in fuse([i for i, _ in answer], [i for i, _ in covisit], k)]
            weight = purchase_weight
        elif source == "model":
            items = [ScoredItem(i, round(float(s), 6)) for i, s in answer]
            weight = purchase_weight
        elif source in ("covisit", "category"):
            items, weight = filled(covisit if source == "covisit" else category, request.history, popular, k), 0.0
        else:
            items, weight = unseen_top(request.history, popular, k), 0.0
        records.append(Recommendation(
            user_id=request.user_id, items=items, source=source, model_version=model_version,
            index_version=index_version, event_ts=request.event_ts, emitted_ts=now, purchase_weight=weight,
            scenario=request.asked()))
    return records


def filled(ranked: Ranked, history: History, popular: Ranked, k: int) -> list[ScoredItem]:
    """The first ``k`` of a stream source's list (seen items already removed), filled up with
    popularity's where it has fewer."""
    items = [ScoredItem(i, s) for i, s in ranked[:k]]
    have = {item.item_id for item in items}
    return items + [item for item in unseen_top(history, popular, k + len(items)) if item.item_id not in have][:k - len(items)]


def payloads(records: Sequence[Recommendation]) -> list[Payload]:
    return [(r.user_id, r.source, r.to_bytes()) for r in records]


def model_ids(answers: Sequence[Answer]) -> ModelIds:
    return [[item for item, _ in answer] if answer else None for answer in answers]


def modelless(requests: Sequence[Request], candidates: Candidates, k: int) -> tuple[list[Payload], ModelIds, Timings]:
    """The records while no model serves."""
    started = time.perf_counter()
    answers = [None] * len(requests)
    sent = payloads(build_records(requests, answers, candidates, k, 0, 0))
    return sent, model_ids(answers), {"records": time.perf_counter() - started}
