"""The model lifecycle in a worker: follow ``model-updates``, and on the group leader only, run the
continuous trainer that publishes new versions there.

Every worker watches ``model-updates`` (:class:`~streams.lifecycle.updates.UpdateWatcher`) and
hands each announced version to serving. Every 2 s each worker asks whether it leads its consumer
group; the leader starts a :class:`~streams.lifecycle.trainer.StreamTrainer` (in a process of its
own: :mod:`streams.lifecycle.trainer_process`, setting ``trainer_process``) once it has read
``model-updates`` to its end (so it continues from the version in force), and stops it when it no
longer leads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..app import WorkerApp
from .model_store import ModelUpdate
from .trainer import StreamTrainer
from .trainer_process import TrainerProcess
from .updates import UpdatePublisher, UpdateWatcher

log = logging.getLogger(__name__)

LEAD_CHECK_S = 2.0


class Lifecycle:
    def __init__(self, core: WorkerApp, on_update: Callable[[ModelUpdate], object],
                 staleness: Callable[[], float | None], quality: Callable[[], dict] = dict) -> None:
        """``on_update(update)``: serve an announced version; ``staleness()``: the age of the
        version served (seconds, None before a first one); ``quality()``: the live quality gate's
        scores, part of every version the trainer announces."""
        self.quality = quality
        self.core, self.settings, self.metrics = core, core.settings, core.metrics
        self.watcher = UpdateWatcher(self.settings, self._announced)
        self._serve = on_update
        self.staleness = staleness
        self.trainer: StreamTrainer | TrainerProcess | None = None  # while this worker leads the group
        self._publisher: UpdatePublisher | None = None

    def _announced(self, update: ModelUpdate):
        trainer = self.trainer
        if trainer is not None:
            trainer.follow(update)  # a rollback becomes the version candidates must beat
        return self._serve(update)

    def lead(self, leader: bool) -> None:
        """Start or stop the trainer as this worker becomes or stops being the leader (and start
        it again if its process died)."""
        if isinstance(self.trainer, TrainerProcess) and not self.trainer.alive():
            log.error("the trainer process is gone; starting another")
            self.trainer.stop()
            self.trainer = None
        if leader and self.trainer is None and self.watcher.caught_up.is_set():
            if self.settings.trainer_process:
                self.trainer = TrainerProcess(self.settings, self.metrics, quality=self.quality)
            else:
                if self._publisher is None:
                    self._publisher = UpdatePublisher(self.settings)
                self.trainer = StreamTrainer(self.settings, self.metrics, publish=self._publisher.publish,
                                             quality=self.quality)
            self.trainer.start(self.watcher.latest_update)
            log.info("this worker leads the group: continuous training started%s",
                     " (trainer process)" if self.settings.trainer_process else "")
        elif not leader and self.trainer is not None:
            self.trainer.stop()
            self.trainer = None
            log.info("no longer the leader: continuous training stopped")

    def register(self) -> None:
        app = self.core.app

        @app.task
        async def watch_model_updates():
            self.watcher.start()

        @app.timer(LEAD_CHECK_S)
        async def lead_training():
            """Run the trainer on the group leader only (started once model-updates is read)."""
            self.lead(self.settings.train and app.is_leader())
            staleness = self.staleness()
            if staleness is not None:
                self.metrics.staleness.set(staleness)

    def close(self) -> None:
        self.watcher.close()
        if self.trainer is not None:
            self.trainer.stop()
        if self._publisher is not None:
            self._publisher.close()
