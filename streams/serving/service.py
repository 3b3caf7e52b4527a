"""Serving: one ``recommend`` call for the stream and for HTTP, over one backend.

:class:`Serving` owns the threads around a :class:`~streams.serving.recommend.recommend.Backend`
(:class:`~streams.serving.live_model.LiveModel` in this process, or
:class:`~streams.serving.processes.ProcessBackend` with two children; setting
``serving_processes``):

- the serving thread (``executor``): every query, so encoding and search never run on the event loop;
- the swap thread, at a lower priority: loading announced versions and adding new items, one at a
  time, so serving never waits for a rebuild;
- the queue of accepted events waiting for their record (:class:`PendingRequests`) and the task
  that sends their records to ``recommendations`` in micro-batches.

Besides the model, three sources maintained by ingest make records: recent popularity
(``popular(n)``), item-to-item co-visitation (``covisit``) and recent popularity in the category
of the user's last event (``categories``). The quality gate (:mod:`streams.serving.gate`, setting
``serving_gate``) scores them all on every user's next event (co-visitation and the category
list, where they do not serve, in a sample of the records: ``gate_sample``) and chooses the
source per user segment; without it, the model answers where it can and popularity elsewhere
(and no co-visitation or category lists are made).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from ..kafka.direct_writes import send_many
from ..lifecycle.model_store import ModelUpdate
from ..metrics import Metrics
from ..settings import Settings
from ..tuning import lower_thread_priority
from .live_model import LiveModel
from .pending import PendingRequests
from .processes import ProcessBackend
from .gate import FORGET_EVENTS, Gate
from .recommend import (Backend, Candidates, CandidateSource, CategorySource, ModelIds, Payload, Ranked, Request,
                        fuse, unseen)

log = logging.getLogger(__name__)

GATE_METRICS_EVERY_S = 5.0
NEW_ITEMS_EVERY_S = 0.5  # how often items first seen in the stream are added to the index
CO_ITEMS = 20  # the user's most recent items given with a new item (its cold-start vector)


class Serving:
    def __init__(self, settings: Settings, metrics: Metrics, popular: Callable[[int], Ranked],
                 backend: Backend | None = None, covisit: CandidateSource | None = None,
                 categories: CategorySource | None = None) -> None:
        """``popular(n)``: the n most popular items now, best first; ``backend``: the settings'
        choice if not given; ``covisit``, ``categories``: the co-visitation and category boards
        ingest keeps (None: no such source)."""
        self.settings, self.metrics, self.popular, self.covisit = settings, metrics, popular, covisit
        self.categories = categories
        # None: the model wherever it has an answer, else popularity (setting serving_gate)
        self.gate = Gate(half_life_events=settings.gate_half_life_events,
                         half_life_hits=settings.gate_half_life_hits, min_evidence=settings.gate_min_evidence,
                         switch_z=settings.gate_switch_z,
                         long_from=settings.gate_long_from, sample=settings.gate_sample,
                         keep_scored=FORGET_EVENTS if settings.suspect_surprise else 0,
                         settle_s=settings.popularity_settle_s if settings.suspect_surprise else 0.0,
                         ) if settings.serving_gate else None
        self.app = None  # the Faust app records are sent with (register)
        s = settings
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-serve")
        self._swap = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-swap",
                                        initializer=lower_thread_priority)
        if backend is None:
            backend = ProcessBackend(s, on_lost=self.load_async) if s.serving_processes else LiveModel(s)
        self.backend = backend
        # Accepted events waiting for their recommendation (a few batches: then ingestion waits).
        self.pending = PendingRequests(maxsize=4 * s.batch_size)
        self.in_force: ModelUpdate | None = None  # the version served
        self._new_items: dict[str, tuple[float, list[str]]] = {}  # item -> (first seen, co-items)
        self._new_lock = threading.Lock()
        self.update_gate_metrics()  # every (segment, source) is exported from the start

    @property
    def model_version(self) -> int:
        return self.backend.model_version

    @property
    def index_version(self) -> int:
        return self.backend.index_version

    # --- answering -----------------------------------------------------------------------------
    def _batch(self, requests: list[Request], k: int | None, scored: bool) -> tuple[list[Request], Candidates, int]:
        """The latest request per user, and what their records are made from besides the model
        (on the event loop: the popularity and co-visitation boards are the event loop's);
        ``scored``: the gate will score the records (the stream's, not an HTTP answer), so a sample
        of them also gets the lists of the sources that do not serve them."""
        latest: dict[str, Request] = {}
        for request in requests:
            latest[request.user_id] = request
        batch, k = list(latest.values()), k or self.settings.top_k
        candidates = Candidates(self.popular(k + self.settings.seq_len))
        gate = self.gate
        if gate is not None:  # without the gate, co-visitation lists would serve nobody
            candidates.choice, candidates.long_from = gate.choices(), gate.long_from
            # each stream source for the users it serves, and a sample of the rest (to score it)
            items = [[item for item, *_ in r.history] for r in batch]
            if self.covisit is not None:
                serves = {seg for seg, source in candidates.choice.items() if source in ("covisit", "blend")}
                candidates.covisit = [
                    self.covisit.recommend(items[n], k)
                    if gate.segment(len(r.history)) in serves or (scored and gate.samples()) else None
                    for n, r in enumerate(batch)]
            if self.categories is not None:
                serves = {seg for seg, source in candidates.choice.items() if source == "category"}
                candidates.category = [
                    self.categories.recommend(r.category, items[n], k)
                    if r.category is not None and (gate.segment(len(r.history)) in serves or
                                                   (scored and gate.samples())) else None
                    for n, r in enumerate(batch)]
        return batch, candidates, k

    async def _serve(self, requests: list[Request], k: int | None,
                     scored: bool) -> tuple[list[Request], Candidates, list[Payload], ModelIds]:
        stages, started = self.metrics.stages, time.perf_counter()
        batch, candidates, k = self._batch(requests, k, scored)
        stages.add("candidates", time.perf_counter() - started)
        loop = asyncio.get_running_loop()
        sent, ids, timings = await loop.run_in_executor(self.executor, self.backend.serve, batch, candidates, k)
        for stage, seconds in timings.items():
            stages.add(stage, seconds)
        return batch, candidates, sent, ids

    async def recommend(self, requests: list[Request], k: int | None = None) -> list[Payload]:
        """The records (as bytes) of the latest request per user, computed on the serving thread."""
        return (await self._serve(requests, k, scored=False))[2]

    async def emit(self, requests: list[Request]) -> None:
        """Compute and send the records of one micro-batch; remember every source's lists for the
        gate; observe the latencies (the worker-added one when the broker has acknowledged them all)."""
        metrics, stages = self.metrics, self.metrics.stages
        batch, candidates, sent, ids = await self._serve(requests, None, scored=True)
        started = time.perf_counter()
        # one batch per partition, handed straight to the producer: see streams/kafka/direct_writes.py
        deliveries = await send_many(self.app, self.settings.topic_recommendations,
                                     [(user_id.encode(), value) for user_id, _, value in sent], what="recommendations")
        asyncio.gather(*(future for future, _ in deliveries)).add_done_callback(partial(self._acknowledged, requests))
        remembered = time.perf_counter()
        stages.add("produce", remembered - started)
        if self.gate is not None:
            self._remember(batch, candidates, ids)
            stages.add("gate", time.perf_counter() - remembered)
        sources: dict[str, int] = {}
        for _, source, _ in sent:
            sources[source] = sources.get(source, 0) + 1
        for source, n in sources.items():
            metrics.recommendations.labels(source).inc(n)
        done = time.time()
        metrics.batch_size.observe(len(sent))
        for request in requests:
            metrics.latency.observe(done - request.arrived)
            if request.msg_ts:
                metrics.event_age.observe(max(0.0, done - request.msg_ts))
                metrics.event_delivery.observe(max(0.0, request.arrived - request.msg_ts))

    def _acknowledged(self, requests: list[Request], delivered: asyncio.Future) -> None:
        if delivered.cancelled() or delivered.exception() is not None:
            return  # send_many logged it
        now = time.time()
        for request in requests:
            self.metrics.worker_latency.observe(now - request.arrived)

    def _remember(self, batch: list[Request], candidates: Candidates, ids: ModelIds) -> None:
        k = self.settings.top_k
        covisit = candidates.covisit or [None] * len(batch)
        category = candidates.category or [None] * len(batch)
        for n, request in enumerate(batch):
            lists = {"model": ids[n] or [],
                     "popular": [item for item, _ in unseen(request.history, candidates.popular, k)]}
            if covisit[n] is not None:  # listed for this user (see Gate.samples)
                lists["covisit"] = [item for item, _ in covisit[n]]
                if ids[n] and lists["covisit"]:  # the blend exists where both lists do
                    lists["blend"] = [item for item, _ in fuse(ids[n], lists["covisit"], k)]
            if category[n] is not None:
                lists["category"] = [item for item, _ in category[n]]
            self.gate.remember(request.user_id, self.gate.segment(len(request.history)), lists)

    async def accept(self, user_id: str, history: list[tuple[str, str]], event_ts: float,
                     arrived: float, msg_ts: float | None, category: str | None = None) -> None:
        """An accepted event (its item last in ``history``): note the item, queue the user's
        record (waits while the queue is full: backpressure on ingestion)."""
        item, stages = history[-1][0], self.metrics.stages
        if self.gate is not None:  # test, then train: the record in force before this event
            self.gate.score(user_id, item, seen_before=any(i == item for i, *_ in history[:-1]), ts=event_ts)
            stages.mark("gate")
        self.note_item(item, [i for i, *_ in history[-CO_ITEMS - 1:-1]])
        request = Request(user_id, history, event_ts, arrived, msg_ts, category=category)
        stages.mark("queue")
        await self.pending.put(request)

    def note_item(self, item_id: str, co_items: list[str]) -> None:
        """Remember an item the served model lacks, for the next :meth:`add_new_items`."""
        if not self.backend.wants(item_id):
            return
        with self._new_lock:
            if item_id not in self._new_items:
                self._new_items[item_id] = (time.time(), co_items[-CO_ITEMS:])

    # --- the swap thread -----------------------------------------------------------------------
    def load(self, update: ModelUpdate) -> bool:
        """Verify, load and swap in ``update`` (blocking: the swap thread)."""
        started = time.perf_counter()
        if not self.backend.load(update):
            return False
        self.in_force = update
        took = time.perf_counter() - started
        self.metrics.swap_seconds.observe(took)
        self.metrics.model_version.set(update.version)
        self.metrics.index_version.set(self.index_version)
        log.info("serving model version %d (index v%d) after %.2f s%s", update.version,
                 self.index_version, took, " [rollback]" if update.rollback else "")
        return True

    def load_async(self, update: ModelUpdate) -> Future:
        return self._swap.submit(self.load, update)

    def add_new_items(self) -> int:
        """Give the noted new items cold-start vectors and add them to the index (swap thread)."""
        with self._new_lock:
            pending, self._new_items = self._new_items, {}
        if not pending:
            return 0
        added = self.backend.add_items([(item, co) for item, (_, co) in pending.items()])
        now = time.time()
        for item in added:
            self.metrics.freshness.observe(now - pending[item][0])
        return len(added)

    def add_new_items_async(self) -> Future:
        return self._swap.submit(self.add_new_items)

    def staleness(self) -> float | None:
        update = self.in_force
        return None if update is None else max(0.0, time.time() - update.created_ts)

    # --- in the worker -------------------------------------------------------------------------
    def register(self, app) -> None:
        """The task that sends records to ``recommendations`` (with ``app``'s producer), and the
        timer that adds new items."""
        self.app, s = app, self.settings

        @app.task
        async def recommend_loop():
            """Requests still queued when the worker stops get no record (their events are in state)."""
            while True:
                requests = await self.pending.batch(s.batch_size, s.batch_window_s)
                try:
                    await self.emit(requests)
                except Exception:  # a bug or a send failure must not stop recommendations for good
                    log.exception("recommendations for a batch of %d events were not sent", len(requests))

        @app.timer(NEW_ITEMS_EVERY_S)
        async def add_new_items():
            await asyncio.wrap_future(self.add_new_items_async())

        @app.timer(GATE_METRICS_EVERY_S)
        async def gate_metrics():
            self.update_gate_metrics()

    def update_gate_metrics(self) -> None:
        if self.gate is None:
            return
        for (seg, source), score in self.gate.scores.items():
            self.metrics.gate_hit_rate.labels(seg, source).set(score.hit_rate)
            self.metrics.gate_serving.labels(seg, source).set(float(self.gate.choice(seg) == source))

    def close(self) -> None:
        self._swap.shutdown(wait=False, cancel_futures=True)
        self.executor.shutdown(wait=False)
        self.backend.close()
