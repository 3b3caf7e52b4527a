"""The ``model-updates`` topic: announcing versions (:class:`UpdatePublisher`) and following them
(:class:`UpdateWatcher`).

Every record has the key ``model`` (compaction keeps the one in force) and a
:class:`~streams.lifecycle.model_store.ModelUpdate` as JSON. Every worker reads every record (no
consumer group). The record in force is the last one, not the highest version, so
``streamrec rollback`` works by announcing an older version again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..kafka.clients import make_producer, watch_consumer
from ..settings import Settings
from .model_store import ModelUpdate

log = logging.getLogger(__name__)

MODEL_KEY = b"model"
SEND_TIMEOUT_S = 30.0


class UpdatePublisher:
    """Announces versions (kafka-python, acks=all; callable from any one thread at a time)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic_model_updates
        self._producer = make_producer(settings)

    def publish(self, update: ModelUpdate) -> None:
        """Send ``update`` and wait until the broker has it."""
        self._producer.send(self.topic, key=MODEL_KEY, value=update.to_bytes()).get(timeout=SEND_TIMEOUT_S)

    def close(self) -> None:
        self._producer.close()


class UpdateWatcher:
    """A thread that reads ``model-updates`` from the beginning and hands the newest record of each
    poll to ``on_update`` (the worker: ``Serving.load_async``)."""

    def __init__(self, settings: Settings, on_update: Callable[[ModelUpdate], object]) -> None:
        self.settings, self.on_update = settings, on_update
        self.latest_update: ModelUpdate | None = None  # the record in force on model-updates
        self.caught_up = threading.Event()  # set once the topic has been read to its end
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="streamrec-model-updates", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = watch_consumer(self.settings, [self.settings.topic_model_updates])
                polled = consumer.poll(timeout_ms=500)
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    self.caught_up.set()
                    continue
                latest = records[-1]
                try:
                    self.latest_update = ModelUpdate.from_bytes(latest.value)
                except Exception as exc:
                    log.error("ignoring model-updates record at offset %d: %s", latest.offset, exc)
                    continue
                self.on_update(self.latest_update)
            except Exception as exc:  # broker gone for a moment: retry
                log.warning("model-updates watcher: %s; retrying", exc)
                consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()

    def close(self) -> None:
        self._stop.set()
