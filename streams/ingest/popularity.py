"""Recent item popularity: exponentially decayed counts (:class:`Popularity`, one per partition),
and the worker's board of them (:class:`PopularityBoard`: persisted, ranked across partitions).

An event at time t adds ``2 ** ((t - t0) / half_life)`` to its item; the log of the sum is
stored. Ranking by the stored value equals ranking by the decayed count at any common time,
and :meth:`Popularity.score` turns it back into "decayed events as of time ``now``".
"""

from __future__ import annotations

import heapq
import math
import time
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


FLUSH_S = 5.0  # at most one popularity changelog write per partition per 5 s
RANK_REFRESH_S = 1.0  # a ranking is at most this old


class PopularityBoard:
    """The worker's recent popularity: one :class:`Popularity` per partition of ``events`` it holds,
    persisted in the ``item_popularity`` table (key ``p<partition>``), ranked across partitions.

    Event loop only. A crash loses at most ``FLUSH_S`` seconds of popularity, never user state."""

    def __init__(self, table, half_life_s: float, capacity: int) -> None:
        self.table, self.half_life_s, self.capacity = table, half_life_s, capacity
        self.trackers: dict[int, Popularity] = {}  # by partition of `events`
        self._flushed: dict[int, float] = {}  # partition -> monotonic time of the last write
        self._ranked: tuple[float, int, list] = (float("-inf"), 0, [])  # (monotonic time, n, top n)

    def tracker(self, partition: int) -> Popularity:
        tracker = self.trackers.get(partition)
        if tracker is None:
            saved = self.table.get(b"p%d" % partition)
            tracker = self.trackers[partition] = Popularity(self.half_life_s, self.capacity, saved)
        return tracker

    def count(self, partition: int, item_id: str, ts: float) -> None:
        """Count one accepted event; write the partition's scores at most every ``FLUSH_S``."""
        tracker = self.tracker(partition)
        tracker.add(item_id, ts)
        now = time.monotonic()
        if now - self._flushed.get(partition, 0.0) >= FLUSH_S:
            self._flushed[partition] = now
            self.table[b"p%d" % partition] = dict(tracker.log_scores)

    def forget(self, partition: int) -> None:
        """The partition was revoked: another worker counts it now."""
        self.trackers.pop(partition, None)

    def top(self, n: int) -> list[tuple[str, float]]:
        """(item_id, decayed count as of the latest event) over the worker's partitions, best first.

        Ranked at most every ``RANK_REFRESH_S``: ranking every partition's items for each
        micro-batch took 3-4 % of the event loop of a worker draining a backlog (py-spy). A ranking
        shorter than ``n`` (fewer items counted yet: cheap to rank) is never reused, so a new
        worker's first rankings, made from a handful of items, do not stand for a second."""
        now = time.monotonic()
        ranked_at, ranked_n, ranked = self._ranked
        if now - ranked_at < RANK_REFRESH_S and n <= ranked_n and len(ranked) >= n:
            return ranked[:n]
        trackers = list(self.trackers.values())
        if not trackers:
            return []
        latest = max(t.latest_ts for t in trackers)
        ranked = [(item, trackers[0].score(log_score, latest)) for item, log_score in merge_top(trackers, n)]
        self._ranked = (now, n, ranked)
        return ranked
