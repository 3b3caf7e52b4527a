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

from .guard import first_counts
from .user_state import stamps

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
        self.log_scores[item_id] = _log_add(self.log_scores.get(item_id), x)
        if len(self.log_scores) > self.capacity + self.capacity // 4:
            keep = heapq.nlargest(self.capacity, self.log_scores.items(), key=_SCORE)
            self.log_scores = dict(keep)

    def retract(self, item_id: str, ts: float) -> None:
        """Take back one count of ``item_id`` at ``ts`` (a quarantined user's: streams.ingest.guard);
        nothing if the item was dropped meanwhile."""
        old = self.log_scores.get(item_id)
        if old is not None:
            left = _log_sub(old, ts * self.rate)
            if left is None:
                del self.log_scores[item_id]
            else:
                self.log_scores[item_id] = left

    def score(self, log_score: float, now: float) -> float:
        """Decayed event count as of ``now`` (capped, for log scores far ahead of ``now``)."""
        return math.exp(min(log_score - now * self.rate, 700.0))

    def top(self, n: int) -> list[tuple[str, float]]:
        """The n most popular (item_id, log_score), best first."""
        return heapq.nlargest(n, self.log_scores.items(), key=_SCORE)

    def __len__(self) -> int:
        return len(self.log_scores)


def _log_add(log_a: float | None, log_b: float) -> float:
    """log(exp(log_a) + exp(log_b)); log_a None: nothing yet."""
    if log_a is None:
        return log_b
    return max(log_a, log_b) + math.log1p(math.exp(-abs(log_a - log_b)))


def _log_sub(log_a: float | None, log_b: float) -> float | None:
    """log(exp(log_a) - exp(log_b)); None when nothing (or rounding's dust) is left."""
    if log_a is None or log_b >= log_a - 1e-9:
        return None
    return log_a + math.log1p(-math.exp(log_b - log_a))


def popular_set(trackers: list["Popularity"], n: int) -> frozenset:
    """The n most popular items over ``trackers``."""
    return frozenset(item for item, _ in merge_top(trackers, n))


def merge_top(trackers: Iterable[Popularity], n: int) -> list[tuple[str, float]]:
    """Top n (item_id, log_score) over several partitions' trackers (scores of one item add up)."""
    merged: dict[str, float] = {}
    for tracker in trackers:
        for item, log_score in tracker.top(n):
            merged[item] = _log_add(merged.get(item), log_score)
    return heapq.nlargest(n, merged.items(), key=_SCORE)


class Settling:
    """Counts that wait ``settle_s`` of event time before they land in the served popularity, so
    that a user quarantined meanwhile (streams.ingest.guard) never moves what everyone is shown:
    fake users at a human pace are caught by their second or third event, minutes after their
    first. The clock is the stream's: the latest event time counted, so a backlog settles as fast
    as it is read, and an idle stream lands its counts with its next event. Not persisted: a
    restarted worker (or the next owner of a partition) settles them again from the stored user
    states (:meth:`PopularityBoard.resettle`)."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self.clock = float("-inf")  # the latest event time counted
        self.since = float("inf")  # the event time of the first count that settled: all before landed at once
        self._heap: list[tuple[float, int, int, str, float, bytes]] = []  # (due, seq, partition, item, ts, user)
        self._seq = 0
        self._cancelled: dict[bytes, float] = {}  # user -> clock when quarantined

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, partition: int, item_id: str, ts: float, user: bytes) -> None:
        self.clock = max(self.clock, ts)
        self.since = min(self.since, ts)
        self._seq += 1
        heapq.heappush(self._heap, (ts + self.settle_s, self._seq, partition, item_id, ts, user))

    def cancel(self, user: bytes) -> None:
        """The user was quarantined: none of their settling counts lands."""
        self._cancelled[user] = self.clock

    def landed(self, ts: float) -> bool:
        """Whether a count at event time ``ts`` has landed by now (else it is settling)."""
        return ts + self.settle_s <= self.clock or ts < self.since

    def due(self) -> list[tuple[int, str, float]]:
        """The (partition, item, ts) whose time has come, but a quarantined user's."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= self.clock:
            _, _, partition, item, ts, user = heapq.heappop(heap)
            if user not in self._cancelled:
                out.append((partition, item, ts))
        if self._cancelled and len(self._cancelled) > 1024:  # none of theirs can be settling any more
            horizon = self.clock - 2 * self.settle_s
            self._cancelled = {user: at for user, at in self._cancelled.items() if at >= horizon}
        return out


FLUSH_S = 5.0  # at most one popularity changelog write per partition per 5 s
RANK_REFRESH_S = 1.0  # a ranking is at most this old


class PopularityBoard:
    """The worker's recent popularity: one :class:`Popularity` per partition of ``events`` it holds,
    persisted in the ``item_popularity`` table (key ``p<partition>``), ranked across partitions.

    With ``settle_s`` a count lands there only after it has settled (:class:`Settling`); the
    suspicion of streams.ingest.guard ranks every count at once, in ``raw`` (not persisted).

    Event loop only. A crash loses at most ``FLUSH_S`` seconds of landed popularity, never user
    state; what was settling settles again where co-visitation restores the partition
    (:meth:`resettle`; with the RocksDB store only)."""

    def __init__(self, table, half_life_s: float, capacity: int, settle_s: float = 0.0) -> None:
        self.table, self.half_life_s, self.capacity = table, half_life_s, capacity
        self.trackers: dict[int, Popularity] = {}  # by partition of `events`: what is served
        self.settling = Settling(settle_s) if settle_s > 0 else None
        # every count at once, by partition: the served trackers themselves when nothing settles
        self.raw: dict[int, Popularity] = {} if self.settling is not None else self.trackers
        self._flushed: dict[int, float] = {}  # partition -> monotonic time of the last write
        self._ranked: tuple[float, int, list] = (float("-inf"), 0, [])  # (monotonic time, n, top n)
        self._popular: tuple[float, frozenset] = (float("-inf"), frozenset())

    def tracker(self, partition: int) -> Popularity:
        tracker = self.trackers.get(partition)
        if tracker is None:
            saved = self.table.get(b"p%d" % partition)
            tracker = self.trackers[partition] = Popularity(self.half_life_s, self.capacity, saved)
        return tracker

    def count(self, partition: int, item_id: str, ts: float, user: bytes = b"", settle: bool = True) -> None:
        """Count one accepted event of ``user``: it lands when settled (with those now due), or at
        once without ``settle`` (ingest: while nobody can be suspected yet, streams.ingest.guard)."""
        if self.settling is not None:
            self._raw(partition).add(item_id, ts)
        if self.settling is None or not settle:
            self._land(partition, item_id, ts)
        else:
            self.settling.add(partition, item_id, ts, user)
            for due in self.settling.due():
                if due[0] in self.raw:  # not revoked meanwhile
                    self._land(*due)
        self._flush(partition)

    def _raw(self, partition: int) -> Popularity:
        raw = self.raw.get(partition)
        if raw is None:
            raw = self.raw[partition] = Popularity(self.half_life_s, self.capacity)
        return raw

    def _land(self, partition: int, item_id: str, ts: float) -> None:
        """Add one count to what is served."""
        self.tracker(partition).add(item_id, ts)

    def _flush(self, partition: int) -> None:
        """Write the scores of ``partition`` (the current event's: Faust's ``table[key]`` writes
        to its database and changelog partition) at most every ``FLUSH_S``. Counts of other
        partitions landing meanwhile are written with their partition's next event."""
        now = time.monotonic()
        if partition in self.trackers and now - self._flushed.get(partition, 0.0) >= FLUSH_S:
            self._flushed[partition] = now
            self.table[b"p%d" % partition] = dict(self.trackers[partition].log_scores)

    def retract(self, partition: int, item_id: str, ts: float) -> None:
        """Take back one count of a quarantined user (streams.ingest.guard), landed or settling."""
        if self.settling is not None:
            if partition in self.raw:
                self.raw[partition].retract(item_id, ts)
            if not self.settling.landed(ts):
                return  # settling: cancel() keeps it from landing
        self.tracker(partition).retract(item_id, ts)

    def resettle(self, partition: int, items: list, before: float) -> None:
        """A restored user's stored events ``[[item, type, ts], ...]``: those counted less than
        ``settle_s`` before ``before`` (the partition's first live event here) were settling when
        the worker that counted them stopped; they settle again here (one count per item)."""
        if self.settling is None:
            return
        for item, ts in first_counts(stamps(items)):
            if before - self.settling.settle_s < ts < before:
                self._raw(partition).add(item, ts)
                self.settling.add(partition, item, ts, b"")

    def cancel(self, user: bytes) -> None:
        """``user`` was quarantined: their settling counts never land."""
        if self.settling is not None:
            self.settling.cancel(user)

    def popular(self, n: int) -> frozenset:
        """The n most popular items over the worker's partitions (suspicion's, streams.ingest.guard),
        refreshed at most every ``RANK_REFRESH_S``."""
        now = time.monotonic()
        if now - self._popular[0] >= RANK_REFRESH_S or len(self._popular[1]) < n:
            self._popular = (now, popular_set(list(self.raw.values()), n))
        return self._popular[1]

    def forget(self, partition: int) -> None:
        """The partition was revoked: another worker counts it now."""
        self.trackers.pop(partition, None)
        self.raw.pop(partition, None)

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
