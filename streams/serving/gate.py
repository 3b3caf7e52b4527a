"""The live quality gate: every source scored test-then-train on the stream, the best one served
per user segment.

For every record the worker sends, the top-k of EVERY source for that user (the model's, the
co-visitation board's, popularity's; all with the user's seen items removed) is remembered. When
the user's next event is accepted, each remembered list is scored: a hit if it held the event's
item (an item the user had seen before is not scored: the seen-item rule serving uses). Hits and
trials are decayed per segment and source (half-life ``half_life_events`` scored events), so the
scores follow the stream. Each segment is served by the source with the best hit rate once every
source has been scored on ``min_evidence`` events there; until then by popularity, the baseline a consumer has
for free. Because unserved sources are scored too, the choice can always change back.

A source that costs work to list and does not serve a user's segment (co-visitation) is listed,
and so scored, for one user in ``sample`` only (:meth:`Gate.samples`): the choice stays unbiased
(users are sampled by a hash of their id), at a fraction of the cost. A source absent from a
remembered record is not scored on the user's next event.

Segments are by what is known of the user when the record is made: ``cold`` (no event),
``short`` (fewer than ``long_from`` events), ``long``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

SOURCES = ("model", "covisit", "popular")
SEGMENTS = ("cold", "short", "long")
DEFAULT = "popular"


def segment(history_len: int, long_from: int = 5) -> str:
    return "cold" if history_len == 0 else "short" if history_len < long_from else "long"


@dataclass
class Score:
    trials: float = 0.0
    hits: float = 0.0
    events: int = 0  # scored events, undecayed

    @property
    def hit_rate(self) -> float:
        return self.hits / self.trials if self.trials else 0.0


@dataclass
class Gate:
    half_life_events: float = 5000.0
    min_evidence: float = 200.0
    long_from: int = 5
    capacity: int = 200_000  # users whose lists are remembered (least recently served dropped)
    sample: int = 4  # 1 user in ``sample`` gets the lists of sources that do not serve their segment
    scores: dict[tuple[str, str], Score] = field(
        default_factory=lambda: {(seg, src): Score() for seg in SEGMENTS for src in SOURCES})
    _lists: OrderedDict = field(default_factory=OrderedDict)  # user -> (segment, {source: set of ids})

    def __post_init__(self) -> None:
        self._decay = 0.5 ** (1.0 / self.half_life_events)

    def segment(self, history_len: int) -> str:
        return segment(history_len, self.long_from)

    def remember(self, user_id: str, seg: str, lists: dict[str, list[str]]) -> None:
        """The lists of every source in the user's record just sent (event loop)."""
        self._lists.pop(user_id, None)
        self._lists[user_id] = (seg, {source: set(items) for source, items in lists.items()})
        if len(self._lists) > self.capacity:
            self._lists.popitem(last=False)

    def score(self, user_id: str, item_id: str, seen_before: bool) -> None:
        """The user's next accepted event: score what each source had recommended."""
        remembered = self._lists.pop(user_id, None)
        if remembered is None or seen_before:
            return
        seg, lists = remembered
        for source, items in lists.items():
            score = self.scores[seg, source]
            score.trials = score.trials * self._decay + 1.0
            score.hits = score.hits * self._decay + (item_id in items)
            score.events += 1

    def samples(self, user_id: str) -> bool:
        """Whether the user's records list every source, serving their segment or not."""
        return hash(user_id) % self.sample == 0

    def choice(self, seg: str) -> str:
        """The source serving ``seg``: the best hit rate once every source has enough evidence."""
        scored = [(self.scores[seg, source].hit_rate, source == DEFAULT, -n, source) for n, source in enumerate(SOURCES)
                  if self.scores[seg, source].events >= self.min_evidence]
        if len(scored) < len(SOURCES):
            return DEFAULT
        return max(scored)[-1]  # a tie goes to the default, then to the earlier source

    def choices(self) -> dict[str, str]:
        return {seg: self.choice(seg) for seg in SEGMENTS}

    def report(self) -> dict:
        """Scores per segment and source, and the choice (for /health and model-updates)."""
        return {seg: {"serving": self.choice(seg),
                      "hr": {src: round(self.scores[seg, src].hit_rate, 5) for src in SOURCES},
                      "events": self.scores[seg, SOURCES[0]].events} for seg in SEGMENTS}
