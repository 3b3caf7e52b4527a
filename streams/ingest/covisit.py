"""Item-to-item co-visitation: which items users reach next from an item, decayed over time.

Each accepted event adds, for each of the user's ``window`` previous items ``p`` (at distance
``d`` = 1, 2, ...), ``g(ts) / d`` to the weight of (p -> item) and half that to (item -> p): a
session neighbour in either direction, the next item most. ``g(ts) = 2 ** ((ts - t0) / half_life)``
grows with event time, so ranking by the summed weights ranks by counts decayed to any common
time (the trick of :mod:`streams.ingest.popularity`); when ``g`` grows large every weight is scaled
down together, which changes no ranking.

:meth:`CoVisitation.recommend` scores candidates for a history by the weights from its most recent
items (the latest counts most) and drops the user's seen items. Bounded: at most
``max_neighbours`` per item (the lightest are dropped) and ``capacity`` source items (the lightest
in total are dropped). One board per worker, on the event loop only.

Not written anywhere of its own: it is rebuilt from the ``user_sequences`` table, which holds each
user's last ``seq_len`` events with their times. Before the first event of each partition a worker
handles (after a restart, or one a rebalance hands it), :func:`restore_partition` counts the
partition's stored histories (:meth:`CoVisitation.add_history`, by the rule ingest counted them
with), yielding to the event loop every ``RESTORE_YIELD_EVENTS`` events; weights are sums, so the
order does not matter. Events older than a user's last ``seq_len`` are gone from the table, so a
restored board holds less than the one lost. A partition this worker counted before is not
restored again (its events are still in the board). Only RocksDB stores can be read by partition;
with the memory store the board is rebuilt from new events, as before.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter

import orjson

from .user_state import stamps

_WEIGHT = itemgetter(1)
REBASE_AT = 64.0  # half-lives after t0 at which the weights are scaled down (2**64: far from overflow)
# events restored between two yields to the event loop: ~11 µs each on the 2-core box (6,040
# ML-1M-sized histories of 50 events took 3.4 s of CPU), so the loop waits ~20 ms at most
RESTORE_YIELD_EVENTS = 2000


class CoVisitation:
    def __init__(self, half_life_s: float, window: int = 3, max_neighbours: int = 50,
                 capacity: int = 200_000, query_items: int = 5) -> None:
        self.half_life_s, self.window, self.max_neighbours = half_life_s, window, max_neighbours
        self.capacity, self.query_items = capacity, query_items
        self.next: dict[str, dict[str, float]] = {}
        self.totals: dict[str, float] = {}  # source -> sum of its neighbours' weights
        self.t0: float | None = None

    def __len__(self) -> int:
        return len(self.next)

    def _gain(self, ts: float) -> float:
        if self.t0 is None:
            self.t0 = ts
        x = (ts - self.t0) / self.half_life_s
        if x > REBASE_AT:  # scale every weight down together: rankings stay as they are
            scale = 2.0 ** -x
            for neighbours in self.next.values():
                for item in neighbours:
                    neighbours[item] *= scale
            for source in self.totals:
                self.totals[source] *= scale
            self.t0, x = ts, 0.0
        return 2.0 ** max(x, -REBASE_AT)  # an event older than t0 counts less, never negatively

    def add(self, previous: Sequence[str], item: str, ts: float, sign: float = 1.0) -> None:
        """The user reached ``item`` after ``previous`` (their items, oldest first); ``sign`` -1
        takes that back (:meth:`retract_history`)."""
        gain = sign * self._gain(ts)
        for distance, prev in enumerate(reversed(previous[-self.window:]), 1):
            if prev == item:
                continue
            self._bump(prev, item, gain / distance)
            self._bump(item, prev, 0.5 * gain / distance)
        if len(self.next) > self.capacity + self.capacity // 4:
            keep = {source for source, _ in heapq.nlargest(self.capacity, self.totals.items(), key=_WEIGHT)}
            self.next = {source: n for source, n in self.next.items() if source in keep}
            self.totals = {source: t for source, t in self.totals.items() if source in keep}

    def _bump(self, source: str, target: str, weight: float) -> None:
        neighbours = self.next.get(source)
        if neighbours is None:
            neighbours = self.next[source] = {}
        left = neighbours[target] = neighbours.get(target, 0.0) + weight
        self.totals[source] = self.totals.get(source, 0.0) + weight
        if weight < 0 and left <= 1e-9 * abs(weight):  # taken back (or dropped before): gone
            self.totals[source] -= left
            del neighbours[target]
            if not neighbours:
                del self.next[source], self.totals[source]
            return
        if len(neighbours) > 2 * self.max_neighbours:
            kept = self.next[source] = dict(heapq.nlargest(self.max_neighbours, neighbours.items(), key=_WEIGHT))
            self.totals[source] = sum(kept.values())

    def add_history(self, events: Iterable[tuple[str, float]], before: float = float("inf"),
                    sign: float = 1.0) -> int:
        """Count one user's stored events ``(item, ts)``, oldest first, as ingest counted them when
        they came: each after the items before it, unless its item is among them (one count per
        user and item). Events at or after ``before`` are left out (counted live already).
        Returns how many were counted."""
        previous: list[str] = []
        seen: set[str] = set()
        counted = 0
        for item, ts in events:
            if ts < before and item not in seen:
                self.add(previous, item, ts, sign)
                counted += 1
            previous.append(item)
            seen.add(item)
        return counted

    def retract_history(self, events: Iterable[tuple[str, float]]) -> int:
        """Take back what :meth:`add_history` would count of these events (a quarantined user's,
        streams.ingest.guard): their weights go, those of other users stay."""
        return self.add_history(events, sign=-1.0)

    def recommend(self, history: Sequence[str], k: int) -> list[tuple[str, float]]:
        """Top-k (item, score) reached from the history's recent items, seen items excluded."""
        scores: dict[str, float] = {}
        get = scores.get
        for rank, source in enumerate(reversed(history[-self.query_items:]), 1):
            neighbours = self.next.get(source)
            if not neighbours:
                continue
            share = 1.0 / (self.totals[source] * rank)  # normalised per source item: a popular one
            for item, weight in neighbours.items():     # does not drown the rest
                scores[item] = get(item, 0.0) + weight * share
        for item in history:  # seen items excluded
            scores.pop(item, None)
        return [(item, round(score, 6)) for item, score in heapq.nlargest(k, scores.items(), key=_WEIGHT)]


async def restore_partition(board: CoVisitation, states: Iterable[bytes], before: float,
                            each: Callable[[list], None] | None = None) -> tuple[int, int]:
    """Count every stored user state of one partition (``user_sequences`` values: JSON with
    ``items`` = ``[[item, type, ts], ...]``) into ``board``, leaving out events at or after
    ``before`` (the event time of the partition's first live event), and hand each state's items to
    ``each`` (popularity's settling, streams.ingest.popularity). Quarantined users' states are
    left out. Yields to the event loop every ``RESTORE_YIELD_EVENTS`` events. Returns (users,
    events) counted."""
    users = events = since_yield = 0
    for raw in states:
        try:
            state = orjson.loads(raw)
            items = state["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if "q" in state:  # quarantined: its counts were taken back (streams.ingest.guard)
            continue
        users += 1
        events += board.add_history(stamps(items), before)
        if each is not None:
            each(items)
        since_yield += len(items)
        if since_yield >= RESTORE_YIELD_EVENTS:
            since_yield = 0
            await asyncio.sleep(0)
    return users, events
