"""Exponentially decayed item popularity, kept in log space so it never overflows.

An event at time t adds ``2 ** ((t - t0) / half_life)`` to its item; the log of the sum is
stored. Ranking by the stored value equals ranking by the decayed count at any common time,
and :meth:`Popularity.score` turns it back into "decayed events as of time ``now``".
"""

from __future__ import annotations

import heapq
import math
from operator import itemgetter
from typing import Iterable

_LN2 = math.log(2.0)
_SCORE = itemgetter(1)


class Popularity:
    """Bounded decayed counts for one partition's events (not thread-safe; event loop only)."""

    def __init__(self, half_life_s: float, capacity: int, scores: dict[str, float] | None = None) -> None:
        self.rate = _LN2 / half_life_s
        self.capacity = capacity
        self.log_scores: dict[str, float] = dict(scores or {})
        # The latest event time counted: "now" for scores (replays run in the data's own time).
        self.latest_ts = max(self.log_scores.values(), default=0.0) / self.rate

    def add(self, item_id: str, ts: float) -> None:
        self.latest_ts = max(self.latest_ts, ts)
        x = ts * self.rate
        old = self.log_scores.get(item_id)
        self.log_scores[item_id] = x if old is None else max(old, x) + math.log1p(math.exp(-abs(old - x)))
        if len(self.log_scores) > self.capacity + self.capacity // 4:
            keep = heapq.nlargest(self.capacity, self.log_scores.items(), key=_SCORE)
            self.log_scores = dict(keep)

    def score(self, log_score: float, now: float) -> float:
        """Decayed event count as of ``now`` (capped, for log scores far ahead of ``now``)."""
        return math.exp(min(log_score - now * self.rate, 700.0))

    def top(self, n: int) -> list[tuple[str, float]]:
        """The n most popular (item_id, log_score), best first."""
        return heapq.nlargest(n, self.log_scores.items(), key=_SCORE)

    def __len__(self) -> int:
        return len(self.log_scores)


def merge_top(trackers: Iterable[Popularity], n: int) -> list[tuple[str, float]]:
    """Top n (item_id, log_score) over several partitions' trackers (scores of one item add up)."""
    merged: dict[str, float] = {}
    for tracker in trackers:
        for item, log_score in tracker.top(n):
            old = merged.get(item)
            merged[item] = log_score if old is None else max(old, log_score) + math.log1p(
                math.exp(-abs(old - log_score)))
    return heapq.nlargest(n, merged.items(), key=_SCORE)
