"""What the continuous trainer decides, without its threads or Kafka: train on the sequences it is
given, hold the newest back once a version is in force, and at each publish interval say whether
there is a version to announce (``streams/lifecycle/promotion.py`` judges it).

:class:`~streams.lifecycle.trainer.StreamTrainer` runs one on the leader, fed by its reader and
timed by the clock; ``bench/live_quality.py --online`` runs the same one over a replayed stream,
timed by events, so the bench measures the worker's own training and promotion.
"""

from __future__ import annotations

import logging
import time

from model.incremental import OnlineTrainer
from model.recommender import Recommender

from ..settings import Settings
from .promotion import HeldBackTail, scorable, score_tail

log = logging.getLogger(__name__)

UPDATE_BATCH = 128  # sequences per incremental update


class Training:
    def __init__(self, settings: Settings, rec: Recommender, trainer: OnlineTrainer, metrics,
                 in_force: Recommender | None = None) -> None:
        """``rec`` is trained in place by ``trainer``; ``in_force``: the version serving now (None:
        nothing announced yet, so the first version is announced without a judgement)."""
        self.settings, self.rec, self.trainer, self.metrics = settings, rec, trainer, metrics
        self.in_force = in_force
        self.tail = HeldBackTail(settings.promotion_tail)
        self.losses: list[float] = []

    @property
    def promoting(self) -> bool:
        return self.in_force is not None and self.settings.promotion_tail > 0

    def learn(self, seqs: list) -> None:
        """New training sequences: the newest are held back to judge the next version on, once one
        is in force; the rest are trained on now."""
        self.update(self.tail.push(seqs) if self.promoting else seqs)

    def update(self, seqs: list) -> None:
        for start in range(0, len(seqs), UPDATE_BATCH):
            started, cpu = time.perf_counter(), time.thread_time()
            self.losses.append(self.trainer.update(seqs[start:start + UPDATE_BATCH]))
            self.metrics.update_seconds.observe(time.perf_counter() - started)
            self.metrics.stage_seconds.labels("train_update").observe(time.thread_time() - cpu)
            self.metrics.training_loss.set(self.losses[-1])

    def judge(self) -> tuple[bool, Recommender | None, dict | None]:
        """At a publish interval: ``(done, version, metrics)``. ``version`` (a snapshot, now the
        version in force) is to be announced with ``metrics``; None when it was held back.
        ``done`` is False when there was nothing to judge yet (no update since the last version,
        or too small a tail): the interval is then not over."""
        losses = self.losses
        summary = {"loss": sum(losses) / len(losses) if losses else None, "updates": len(losses)}
        if not self.promoting:
            if not losses:
                return False, None, None
            self.losses = []
            self.in_force = self.rec.snapshot()
            return True, self.in_force, summary
        s = self.settings
        tail = self.tail.release()
        if len(scorable(tail)[0]) < s.promotion_min_events and len(tail) < s.promotion_tail:
            self.tail.push(tail)
            return False, None, None
        candidate = self.rec.snapshot()
        scores = score_tail(candidate, self.in_force, tail)
        for name, value in (("candidate", scores.candidate), ("in_force", scores.in_force),
                            ("popular", scores.popular)):
            self.metrics.promotion_hit_rate.labels(model=name).set(value)
        self.update(tail)  # judged on: now trained on (the candidate is a snapshot from before)
        self.losses = []
        if scores.promote:
            self.in_force = candidate
            return True, candidate, {**summary, "tail": scores.as_dict()}
        self.metrics.versions_held_back.inc()
        log.info("candidate held back: HR@10 %.4f vs %.4f in force on %d held-back events",
                 scores.candidate, scores.in_force, scores.events)
        return True, None, None
