"""How good the served recommendations are, measured from outside the worker as a consumer sees
them: for each event, was its item in the user's recommendation in force when it was sent?

Test-then-train over a replay, seen items excluded: an event counts when its user already has a
record and the item is new to the user. Beside each record's own source, the same events score the
baseline a consumer gets for free: all-time popularity of what was replayed so far, with the
user's seen items removed. ``streamrec demo`` prints the result, with the exact McNemar test on the
events where only one of the two hit: over a short replay the hits are few (about ten each on the
Taobao sample), and a ratio of such counts says little by itself.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from dataclasses import dataclass, field

RANK_EVERY_S = 0.5  # the popularity baseline is re-ranked this often (as a consumer would cache it)


@dataclass
class LiveQuality:
    k: int = 10
    latest: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # user -> (source, items)
    seen: dict[str, set[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)  # source -> hits of the served records
    scored: dict[str, int] = field(default_factory=dict)  # source -> events scored
    popular_hits: int = 0
    events: int = 0  # events scored (all sources)
    only_served: int = 0  # events the served record hit and popularity missed
    only_popular: int = 0  # and the other way round
    _ranked: list[str] = field(default_factory=list)
    _ranked_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, user_id: str, source: str, items: list[str]) -> None:
        """A recommendation record read back (the reader's thread)."""
        with self._lock:
            self.latest[user_id] = (source, items[:self.k])

    def event(self, user_id: str, item_id: str) -> None:
        """An event about to be sent (the producer's thread): score, then learn."""
        seen = self.seen.setdefault(user_id, set())
        with self._lock:
            served = self.latest.get(user_id)
        if served is not None and item_id not in seen:
            source, items = served
            self.events += 1
            self.scored[source] = self.scored.get(source, 0) + 1
            served_hit, popular_hit = item_id in items, item_id in self._popular_for(seen)
            self.hits[source] = self.hits.get(source, 0) + served_hit
            self.popular_hits += popular_hit
            self.only_served += served_hit and not popular_hit
            self.only_popular += popular_hit and not served_hit
        seen.add(item_id)
        self.counts[item_id] = self.counts.get(item_id, 0) + 1

    def _popular_for(self, seen: set[str]) -> list[str]:
        now = time.monotonic()
        if now - self._ranked_at >= RANK_EVERY_S:
            self._ranked = [i for i, _ in heapq.nlargest(self.k + 200, self.counts.items(), key=lambda kv: kv[1])]
            self._ranked_at = now
        return [i for i in self._ranked if i not in seen][:self.k]

    def hit_rate(self, source: str | None = None) -> float:
        """HR@k of the served records (of one source), or ``float('nan')`` with nothing scored."""
        if source is None:
            n, h = self.events, sum(self.hits.values())
        else:
            n, h = self.scored.get(source, 0), self.hits.get(source, 0)
        return h / n if n else float("nan")

    def popular_hit_rate(self) -> float:
        return self.popular_hits / self.events if self.events else float("nan")

    def difference_p(self) -> float:
        """Two-sided exact McNemar p-value of served against popularity on the same events: how
        likely a split of the discordant events at least this uneven is when neither is better."""
        return mcnemar_p(self.only_served, self.only_popular)

    def summary(self) -> str:
        served, popular = self.hit_rate(), self.popular_hit_rate()
        parts = ", ".join(f"{s} {self.hit_rate(s):.4f} on {self.scored[s]:,}" for s in sorted(self.scored))
        known = not (math.isnan(served) or math.isnan(popular))
        ratio = f"{served / popular:.2f}x" if known and popular else "n/a"
        p = self.difference_p()
        if self.only_served == self.only_popular:
            verdict = "no difference"
        else:
            better = "served" if self.only_served > self.only_popular else "popularity"
            verdict = f"{better} better (p = {p:.2g})" if p < 0.05 else f"{better} better, within chance: p = {p:.2f}"
        return (f"HR@{self.k} served {served:.4f} vs popularity {popular:.4f} ({ratio}; {sum(self.hits.values()):,} "
                f"against {self.popular_hits:,} hits) over {self.events:,} events with a record in force, seen items "
                f"excluded; {verdict} ({self.only_served:,} events hit by served only, {self.only_popular:,} by "
                f"popularity only); by source: {parts or 'none'}")


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: P(a split of b + c discordant pairs at least as uneven as
    (b, c)) when each pair goes either way with probability 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
