"""The model a worker serves: a Recommender and the FAISS index of its item vectors, swapped
together when a new version is announced on ``model-updates``.

Threads (never the event loop):
- the serving thread (``StreamRec.executor``) calls :meth:`LiveModel.recommend`;
- one swap thread loads announced versions (checksum, ``weights_only`` load, index build) and
  adds new items; the pair (model, index) becomes visible by one reference assignment, so a
  query sees either the old pair or the new one, and serving never waits for a rebuild;
- one watcher thread reads ``model-updates`` (every worker reads every record: no consumer
  group) and hands the newest record to the swap thread. The record in force is the last one,
  not the highest version, so ``streamrec rollback`` works by re-announcing an older version.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .memory import freeze_long_lived
from .metrics import Metrics
from .model_store import ModelUpdate, verify
from .serving import History
from .settings import Settings

log = logging.getLogger(__name__)


def lower_thread_priority(niceness: int = 10) -> None:
    """Background work (swaps, training) yields the CPU to serving and ingestion (Linux: a
    thread has its own nice value; elsewhere this does nothing)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


@dataclass(frozen=True)
class Served:
    recommender: object  # model.recommender.Recommender
    index: object  # index.ItemIndex
    update: ModelUpdate


class LiveModel:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        import torch

        torch.set_num_threads(settings.torch_threads)  # process-wide; see Settings.torch_threads
        self.settings, self.metrics = settings, metrics
        self.served: Served | None = None
        self._swap = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-swap",
                                        initializer=lower_thread_priority)
        self._index_builds = 0
        self._new_items: dict[str, tuple[float, list[str]]] = {}  # item -> (first seen, co-items)
        self._new_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.latest_update: ModelUpdate | None = None  # the record in force on model-updates
        self.last_refusal: str | None = None  # why the last refused version was refused
        self.caught_up = threading.Event()  # set once the watcher has read model-updates to its end

    # --- what serving reads --------------------------------------------------------------------
    @property
    def model_version(self) -> int:
        served = self.served
        return served.update.version if served else 0

    @property
    def index_version(self) -> int:
        served = self.served
        return served.index.version if served else 0

    def recommend(self, histories: Sequence[History], k: int) -> list[list[tuple[str, float]] | None]:
        """Top-k per history with seen items excluded; None where the model has no answer."""
        served = self.served
        answers: list[list[tuple[str, float]] | None] = [None] * len(histories)
        if served is None:
            return answers
        vectors, known = served.recommender.user_vectors_and_known(histories)
        known = np.flatnonzero(known)
        if len(known) == 0:
            return answers
        seen = [{item for item, _ in histories[i]} for i in known]
        hits = served.index.search(vectors[known], k, exclude=seen)
        for row, found in zip(known.tolist(), hits):
            answers[row] = found or None  # (item_id, score as a Python float) pairs
        return answers

    # --- new versions --------------------------------------------------------------------------
    def load(self, update: ModelUpdate) -> bool:
        """Verify, load and swap in ``update`` (blocking; the swap thread calls it)."""
        from index import ItemIndex
        from model.recommender import Recommender

        started = time.perf_counter()
        previous = self.served
        try:
            path = verify(update)
            rec = Recommender.from_checkpoint(
                str(path), vocab_base=previous.recommender.vocab if previous else None)
            rec.prepare_serving()
        except Exception as exc:  # a bad checkpoint must never take serving down
            self.last_refusal = f"{type(exc).__name__}: {exc}"
            log.error("refusing model version %d: %s; still serving version %d",
                      update.version, exc, self.model_version)
            return False
        self._index_builds += 1
        ids, vectors = rec.item_matrix()
        index = ItemIndex.build(ids, vectors, version=self._index_builds,
                                base=previous.index if previous else None)
        if previous is not None:
            # before the pair is served: adding items takes the recommender's lock, which serving
            # would wait for (tens of ms for a grown 100k-item table)
            self._carry_new_items(previous, rec, index)
        self.served = Served(rec, index, update)
        del previous
        freeze_long_lived()  # the new version's objects live until the next swap
        took = time.perf_counter() - started
        self.metrics.swap_seconds.observe(took)
        self.metrics.model_version.set(update.version)
        self.metrics.index_version.set(index.version)
        log.info("serving model version %d (%d items, index v%d) after %.2f s%s", update.version, len(ids),
                 index.version, took, " [rollback]" if update.rollback else "")
        return True

    def load_async(self, update: ModelUpdate):
        return self._swap.submit(self.load, update)

    # --- items first seen in the stream --------------------------------------------------------
    def note_item(self, item_id: str, co_items: list[str]) -> None:
        """Called on the event loop for each accepted event: remember items the model lacks."""
        served = self.served
        if served is None or item_id in served.recommender.vocab:
            return
        with self._new_lock:
            if item_id not in self._new_items:
                self._new_items[item_id] = (time.time(), co_items[-20:])

    def add_new_items(self) -> int:
        """Give the remembered new items cold-start vectors and add them to the index (swap thread)."""
        return len(self.add_noted_items())

    def add_noted_items(self) -> list[str]:
        """``add_new_items``, returning the ids it added."""
        served = self.served
        with self._new_lock:
            pending, self._new_items = self._new_items, {}
        if served is None or not pending:
            return []
        ids = list(pending)
        vectors = served.recommender.add_items(ids, co_items={i: pending[i][1] for i in ids})
        served.index.add(ids, vectors)
        now = time.time()
        for item in ids:
            self.metrics.freshness.observe(now - pending[item][0])
        return ids

    def add_new_items_async(self):
        return self._swap.submit(self.add_new_items)

    @staticmethod
    def _carry_new_items(previous: Served, rec, index) -> None:
        """Items the old pair had gained in the stream but the new version (``rec``, ``index``, not
        served yet) lacks: cold-start them. The swap thread is the only one that adds items, so
        none can reach the old pair after this."""
        new_vocab = rec.vocab
        # rows 1..reused_rows are the same in both (ItemVocab.from_state was given the old one)
        missing = [i for i in previous.recommender.vocab.ids(new_vocab.reused_rows) if i not in new_vocab]
        if missing:
            index.add(missing, rec.add_items(missing))

    # --- model-updates watcher -----------------------------------------------------------------
    def start_watching(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="streamrec-model-updates", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        from .consume import watch_consumer

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
                self.load_async(self.latest_update)
            except Exception as exc:  # broker gone for a moment: retry
                log.warning("model-updates watcher: %s; retrying", exc)
                consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()

    def staleness(self) -> float | None:
        served = self.served
        return None if served is None else max(0.0, time.time() - served.update.created_ts)

    def close(self) -> None:
        self._stop.set()
        self._swap.shutdown(wait=False, cancel_futures=True)
