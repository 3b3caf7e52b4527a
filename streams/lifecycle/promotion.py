"""Promotion of a new model version: scored on a held-back tail of the stream, announced only when
it beats the version in force.

Once a version is in force, the trainer holds the most recent training sequences back (a
:class:`HeldBackTail` of ``promotion_tail`` sequences; older ones leave it for training as new
ones come). At each publish interval the candidate (the model as trained so far) and the version
in force both recommend, for every sequence of the tail, the next item from the sequence's prefix,
with the prefix's items removed (the seen-item rule serving uses); a sequence whose last item is
in its prefix is not scored. The candidate is announced only if its HR@k is higher. Popularity
(the trainer's counts) is scored on the same events beside them, and all three go into the
version's ``model-updates`` record. Then the tail is released for training, so every event is
trained on once, after it has been used to judge a version it was not trained on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

K = 10


class HeldBackTail:
    def __init__(self, size: int) -> None:
        self.size = size
        self._seqs: deque = deque()

    def __len__(self) -> int:
        return len(self._seqs)

    def push(self, seqs: list) -> list:
        """Hold ``seqs`` back; returns the oldest ones that no longer fit (to train on now)."""
        self._seqs.extend(seqs)
        over = max(0, len(self._seqs) - self.size)
        return [self._seqs.popleft() for _ in range(over)]

    def release(self) -> list:
        """Every sequence held (to train on, once a version has been judged on them)."""
        out = list(self._seqs)
        self._seqs.clear()
        return out


@dataclass(frozen=True)
class TailScores:
    candidate: float
    in_force: float
    popular: float
    events: int  # scored sequences

    @property
    def promote(self) -> bool:
        return self.events > 0 and self.candidate > self.in_force

    def as_dict(self) -> dict:
        return {"candidate": round(self.candidate, 5), "in_force": round(self.in_force, 5),
                "popular": round(self.popular, 5), "events": self.events}


def scorable(tail: list) -> tuple[list, list[str]]:
    """(prefixes, targets) of the sequences whose last item is new to the user."""
    prefixes, targets = [], []
    for seq in tail:
        prefix, target = seq[:-1], seq[-1][0]
        if prefix and target not in {i for i, *_ in prefix}:
            prefixes.append(prefix)
            targets.append(target)
    return prefixes, targets


def model_hits(rec, prefixes: list, targets: list[str], k: int = K) -> np.ndarray:
    """1 where ``rec``'s top-k for the prefix, seen items removed, holds the target: its exact
    answer (``Recommender.recommend``), popularity for a prefix without a known item, as serving
    gives it."""
    answers = rec.recommend(prefixes, k)
    return np.array([t in {item for item, _ in a["items"]} for a, t in zip(answers, targets)], dtype=bool)


def popular_hits(rec, prefixes: list, targets: list[str], k: int = K) -> np.ndarray:
    """1 where the trainer's most-counted items, the prefix's removed, hold the target."""
    longest = max((len(p) for p in prefixes), default=0)
    ranked = [i for i, _ in rec.popular(k + longest)]
    return np.array([t in [i for i in ranked if i not in {j for j, *_ in p}][:k] for p, t in zip(prefixes, targets)],
                    dtype=bool)


def score_tail(candidate, in_force, tail: list, k: int = K) -> TailScores:
    """HR@k of the candidate, the version in force and popularity on the tail's new items."""
    prefixes, targets = scorable(tail)
    if not prefixes:
        return TailScores(0.0, 0.0, 0.0, 0)
    return TailScores(candidate=float(model_hits(candidate, prefixes, targets, k).mean()),
                      in_force=float(model_hits(in_force, prefixes, targets, k).mean()),
                      popular=float(popular_hits(candidate, prefixes, targets, k).mean()),
                      events=len(prefixes))
