"""The live quality gate: every source scored test-then-train on the stream, the best one served
per user segment.

For every record the worker sends, the top-k of EVERY source for that user (the model's, the
co-visitation board's, the two fused (``streams.serving.recommend.fuse``), the popularity in the
category of the user's last event (``streams.ingest.categories``), popularity's; all with the
user's seen items removed) is remembered. When
the user's next event is accepted, each remembered list is scored: a hit if it held the event's
item (an item the user had seen before is not scored: the seen-item rule serving uses). Hits and
trials are decayed per segment and source on the segment's clock of scored events, so the scores
follow the stream, and a source scored on a sample of the records forgets as fast as one scored
on all of them. The half-life is ``half_life_events`` scored events, or longer where hits are rare:
long enough for the source serving the segment to have ``half_life_hits`` hits in it (at a hit
rate of 0.002, 20 hits take 10,000 events; with less, two sources a few times apart cannot be told
apart and the choice would be stuck on chance).

Each segment starts served by popularity, the baseline a consumer has for free. Another source
takes over once the two have been scored side by side (both in the same records) on
``min_evidence`` events there and it is better by ``switch_z`` standard errors: a paired test on
the events where exactly one of the two hit (McNemar's; each side counts half an event more, so
that a source with one lucky hit is not taken for certain), decayed on the segment's clock. A clear
difference switches within tens of events; sources that score alike do not flap on single hits.
Because unserved sources are scored too, the choice can always change back.

Paired, because a sampled source is scored on other events than the served one: compared with
the served source's rate over every event, a sampled source's rate also differs by which events
(and users) the sample caught, and on a stream of few users that difference can outweigh the
sources' own (``bench/live_quality.py`` on ML-1M: see :meth:`Gate.samples`).

A source that costs work to list and does not serve a user's segment (co-visitation, and with it
the blend; the category list) is listed, and so scored, in one record in ``sample`` only (:meth:`Gate.samples`, at
random): the choice stays unbiased, at a fraction of the cost. Records, not users: when a quarter
of the users was sampled by a hash of their id, on ML-1M that quarter scored co-visitation below
popularity through a stretch where it was better on all users, so the gate switched about 1,500
records late (and the verdict changed from run to run: Python salts its string hash per
process). A source absent from a remembered record is not scored on the user's next event.

With suspicion on (``keep_scored``), each user's last scored events are kept, and a user
quarantined as a promotion's fake user is taken back out of the scores (:meth:`forget`): their
events, scored until then like anyone's, are on popular filler, and on the Taobao sample a 1 %
promotion moved the records from the category source to popularity that way (BENCHMARKS.md,
attack).

With suspicion and ``settle_s`` (the setting ``popularity_settle_s``: the wait popularity's
counts have), a scored event also waits that long of event time before it counts in the
*settled* evidence, so that a user quarantined meanwhile never moves it, and the choice rests on
the settled evidence once the source serving a segment has ``min_evidence`` events there (on
every scored event until then, so that a new stream's first choices are not held back as long).
At a human pace a promotion's fake users are caught minutes after their first event (a median
568 s at 3 % of the users of the Taobao sample, bench/attack.py), and until then their hits on
filler held the choice on popularity: real users' HR@10 was 0.58x the clean replay's, and 1.0x
with the fakes' events left out of the gate. The price: a switch the stream calls for comes
``settle_s`` later (BENCHMARKS.md, attack).

Segments are by what is known of the user when the record is made: ``cold`` (no event),
``short`` (fewer than ``long_from`` events), ``long``.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field

SOURCES = ("model", "blend", "covisit", "category", "popular")  # blend: the model's list fused with co-visitation's
SEGMENTS = ("cold", "short", "long")
DEFAULT = "popular"
# scored events per user kept for Gate.forget with suspicion on: a promotion's fake users are
# quarantined by their 2nd to 6th event (bench/attack.py, whose fakes send 10)
FORGET_EVENTS = 16
_BIT = {source: 1 << n for n, source in enumerate(SOURCES)}  # a source's bit in a logged event's masks


def segment(history_len: int, long_from: int = 5) -> str:
    return "cold" if history_len == 0 else "short" if history_len < long_from else "long"


@dataclass
class Score:
    trials: float = 0.0  # decayed to the segment's time ``at``
    hits: float = 0.0
    events: int = 0  # scored events, undecayed
    at: float = 0.0  # the segment's time (in half-lives) when last updated

    @property
    def hit_rate(self) -> float:  # decay scales hits and trials alike: the rate needs no clock
        return self.hits / self.trials if self.trials else 0.0

    def add(self, hit: bool, now: float) -> None:
        factor = 0.5 ** (now - self.at)
        self.trials = self.trials * factor + 1.0
        self.hits = self.hits * factor + hit
        self.events += 1
        self.at = now


@dataclass
class Pair:
    """Two sources scored on the same events: of those, the (decayed) ones where only the first
    hit and where only the second did."""
    first_only: float = 0.0
    second_only: float = 0.0
    events: int = 0  # scored side by side, undecayed
    at: float = 0.0

    def add(self, first: bool, second: bool, now: float) -> None:
        factor = 0.5 ** (now - self.at)
        self.first_only = self.first_only * factor + (first and not second)
        self.second_only = self.second_only * factor + (second and not first)
        self.events += 1
        self.at = now


def paired_z(pair: Pair, challenger_first: bool, now: float) -> float:
    """Standard errors by which the challenger beats (> 0) or trails (< 0) the incumbent on the
    events both were scored on (McNemar's z on the decayed discordant events, half an event added
    to each side)."""
    factor = 0.5 ** (now - pair.at)
    won, lost = pair.first_only * factor, pair.second_only * factor
    if not challenger_first:
        won, lost = lost, won
    return (won - lost) / math.sqrt(won + lost + 1.0)


def _hits(scored: int, hit: int) -> dict[str, bool]:
    """A scored event's masks (of the sources scored, of those that hit) as source -> hit."""
    return {source: bool(hit & bit) for source, bit in _BIT.items() if scored & bit}


@dataclass
class Evidence:
    """What a choice rests on: per segment and source the decayed hits and trials, per pair of
    sources the events where only one hit, each segment on its own clock (in half-lives)."""
    scores: dict[tuple[str, str], Score] = field(
        default_factory=lambda: {(seg, src): Score() for seg in SEGMENTS for src in SOURCES})
    # per segment, (source, later source in SOURCES): the two scored on the same events
    pairs: dict[str, dict[tuple[str, str], Pair]] = field(
        default_factory=lambda: {seg: {(a, b): Pair() for i, a in enumerate(SOURCES) for b in SOURCES[i + 1:]}
                                 for seg in SEGMENTS})
    time: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SEGMENTS, 0.0))

    def add(self, seg: str, scored: int, hit: int, half_life: float) -> float:
        """One scored event, ``half_life`` events after the last being one half-life; returns
        the segment's time it was added at."""
        self.time[seg] = now = self.time[seg] + 1.0 / half_life
        hits = _hits(scored, hit)
        for source, was_hit in hits.items():
            self.scores[seg, source].add(was_hit, now)
        for (a, b), pair in self.pairs[seg].items():
            if a in hits and b in hits:
                pair.add(hits[a], hits[b], now)
        return now

    def take_back(self, seg: str, at: float, scored: int, hit: int) -> None:
        """What :meth:`add` at the segment's time ``at`` added, decayed since."""
        hits = _hits(scored, hit)
        for source, was_hit in hits.items():
            score = self.scores[seg, source]
            weight = 0.5 ** (score.at - at)
            score.trials = max(0.0, score.trials - weight)
            score.hits = max(0.0, score.hits - weight * was_hit)
            score.events -= 1
        for (a, b), pair in self.pairs[seg].items():
            if a in hits and b in hits:
                weight = 0.5 ** (pair.at - at)
                pair.first_only = max(0.0, pair.first_only - weight * (hits[a] and not hits[b]))
                pair.second_only = max(0.0, pair.second_only - weight * (hits[b] and not hits[a]))
                pair.events -= 1


@dataclass
class Gate:
    half_life_events: float = 1000.0
    half_life_hits: float = 20.0
    min_evidence: float = 30.0
    switch_z: float = 2.0
    long_from: int = 5
    capacity: int = 200_000  # users whose lists are remembered (least recently served dropped)
    sample: int = 4  # 1 record in ``sample``, at random, gets the lists of sources that do not serve its segment
    # with suspicion on: each user's last ``keep_scored`` scored events are kept for
    # :meth:`forget`, and the events wait ``settle_s`` of event time to count in the settled evidence
    keep_scored: int = 0
    settle_s: float = 0.0
    fresh: Evidence = field(default_factory=Evidence)  # every scored event, at once
    settled: Evidence | None = None  # those that waited settle_s (``fresh`` itself without a wait)
    _lists: OrderedDict = field(default_factory=OrderedDict)  # user -> (segment, {source: set of ids})
    _serving: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SEGMENTS, DEFAULT))
    _rng: random.Random = field(default_factory=lambda: random.Random(0))  # which records list everything
    # user -> their recent scored events [segment, fresh time, settled time (None while waiting),
    # bit mask of the sources scored (0 once taken back), of those that hit], for the ``capacity``
    # users scored most recently
    _scored: OrderedDict = field(default_factory=OrderedDict)
    _waiting: deque = field(default_factory=deque)  # (due, event) in order; the clock: the latest event time
    _clock: float = float("-inf")

    def __post_init__(self) -> None:
        if self.settled is None:
            self.settled = Evidence() if self.settle_s > 0 else self.fresh

    @property
    def scores(self) -> dict[tuple[str, str], Score]:
        """Every scored event's, at once (what /metrics shows)."""
        return self.fresh.scores

    def segment(self, history_len: int) -> str:
        return segment(history_len, self.long_from)

    def remember(self, user_id: str, seg: str, lists: dict[str, list[str]]) -> None:
        """The lists of every source in the user's record just sent (event loop)."""
        self._lists.pop(user_id, None)
        self._lists[user_id] = (seg, {source: set(items) for source, items in lists.items()})
        if len(self._lists) > self.capacity:
            self._lists.popitem(last=False)

    def score(self, user_id: str, item_id: str, seen_before: bool, ts: float | None = None) -> None:
        """The user's next accepted event (at event time ``ts``): score what each source had
        recommended."""
        if ts is not None and ts > self._clock:
            self._clock = ts
        remembered = self._lists.pop(user_id, None)
        if remembered is not None and not seen_before:
            seg, lists = remembered
            scored = sum(_BIT[source] for source in lists)
            hit = sum(_BIT[source] for source, items in lists.items() if item_id in items)
            at = self.fresh.add(seg, scored, hit, self.half_life(seg, self.fresh))
            waits = self.settled is not self.fresh
            event = [seg, at, None if waits else at, scored, hit]
            if waits:
                self._waiting.append((self._clock + self.settle_s, event))
            if self.keep_scored:
                log = self._scored.pop(user_id, None) or []
                log.append(event)
                self._scored[user_id] = log[-self.keep_scored:]
                if len(self._scored) > self.capacity:
                    self._scored.popitem(last=False)
        self._settle()

    def _settle(self) -> None:
        """The waiting events whose time has come into the settled evidence (beyond ``capacity``
        waiting, the oldest at once)."""
        waiting = self._waiting
        while waiting and (waiting[0][0] <= self._clock or len(waiting) > self.capacity):
            event = waiting.popleft()[1]
            seg, _, _, scored, hit = event
            if scored:  # else taken back by forget
                event[2] = self.settled.add(seg, scored, hit, self.half_life(seg, self.settled))

    def forget(self, user_id: str) -> int:
        """Take back what the user's recent scored events (the last ``keep_scored``) added to the
        evidence, or drop them while they wait: a user quarantined as a promotion's fake
        (streams.ingest.guard), whose next items, popular filler, would otherwise steer the choice
        towards popularity. Returns how many events were taken back."""
        log = self._scored.pop(user_id, None) or []
        for event in log:
            seg, fresh_at, settled_at, scored, hit = event
            self.fresh.take_back(seg, fresh_at, scored, hit)
            if self.settled is not self.fresh and settled_at is not None:
                self.settled.take_back(seg, settled_at, scored, hit)
            event[3] = 0
        self._lists.pop(user_id, None)
        return len(log)

    def evidence(self, seg: str) -> Evidence:
        """What the choice in ``seg`` rests on: the settled evidence once the source serving has
        ``min_evidence`` events in it, else every scored event."""
        settled = self.settled
        return settled if settled.scores[seg, self._serving[seg]].events >= self.min_evidence else self.fresh

    def half_life(self, seg: str, evidence: Evidence | None = None) -> float:
        """Scored events per half-life in ``seg``: ``half_life_events``, or as many as the serving
        source needs for ``half_life_hits`` hits at its (adjusted) hit rate."""
        serving = (evidence or self.evidence(seg)).scores[seg, self._serving[seg]]
        rate = (serving.hits + 1.0) / (serving.trials + 2.0)
        return max(self.half_life_events, self.half_life_hits / rate)

    def samples(self) -> bool:
        """Whether the record being made lists every source, serving its segment or not."""
        return self._rng.random() * self.sample < 1.0

    def choice(self, seg: str) -> str:
        """The source serving ``seg``: the one in place, unless another with enough evidence is
        better by ``switch_z`` standard errors (the most clearly better one then takes over)."""
        serving = self._serving[seg]
        incumbent = self.evidence(seg).scores[seg, serving]
        if incumbent.events < self.min_evidence:
            return serving
        best_z, best = self.switch_z, serving
        for source, (z, side_by_side) in self._against(seg, serving).items():
            if side_by_side >= self.min_evidence and z > best_z and z > 0:
                best_z, best = z, source
        self._serving[seg] = best
        return best

    def _against(self, seg: str, serving: str) -> dict[str, tuple[float, int]]:
        """Each other source against ``serving`` in ``seg``: its paired z and the events the two
        were scored on side by side."""
        out, evidence = {}, self.evidence(seg)
        for source in SOURCES:
            if source != serving:
                first = SOURCES.index(source) < SOURCES.index(serving)
                pair = evidence.pairs[seg][(source, serving) if first else (serving, source)]
                out[source] = (paired_z(pair, first, evidence.time[seg]), pair.events)
        return out

    def choices(self) -> dict[str, str]:
        return {seg: self.choice(seg) for seg in SEGMENTS}

    def report(self) -> dict:
        """Scores per segment and source, the choice, and what it rests on: each other source's
        paired z against the one serving (``switch_z`` or more, on ``min_evidence`` events side by
        side, switches; ``settled``: on the settled evidence) (for /health and model-updates). The hit
        rates are each source's over every event it was scored on, which for a sampled source are
        not the served one's."""
        out = {}
        for seg in SEGMENTS:
            serving = self.choice(seg)
            out[seg] = {"serving": serving,
                        "hr": {src: round(self.scores[seg, src].hit_rate, 5) for src in SOURCES},
                        "events": self.scores[seg, SOURCES[0]].events,
                        "half_life_events": round(self.half_life(seg)),
                        "settled": self.settled is not self.fresh and self.evidence(seg) is self.settled,
                        "against_serving": {src: {"z": round(z, 2), "side_by_side": n}
                                            for src, (z, n) in self._against(seg, serving).items()}}
        return out
