"""Building a worker: :func:`create` makes each part and connects them.

::

    events ──► Ingest ──(accepted event)──► Serving.accept ──► PendingRequests ──► Serving.emit ──► recommendations
                 │  PopularityBoard ─────────────(popular(n))──────►┘
                 └► events.dlq                 Lifecycle: model-updates ──► Serving.load_async
    HTTP /recommend ──► Serving.recommend (the same call as the stream)

The parts know each other only through the callables passed here, so ``ingest``, ``serving`` and
``lifecycle`` import none of each other's agents.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial

from .app import WorkerApp
from .ingest.agent import Ingest
from .ingest.categories import CategoryPopularity
from .ingest.covisit import CoVisitation, restore_partition
from .ingest.events import Event
from .ingest.popularity import PopularityBoard
from .ingest.user_state import State, history, lookup, stamps
from .kafka import faust_patches
from .kafka.faust_patches.internals import partition_values
from .kafka.monitoring import consumer_lag, table_entries
from .kafka.table_store import memory_in_use as rocksdb_memory_in_use
from .lifecycle.leader import Lifecycle
from .serving import views
from .serving.recommend import Backend
from .serving.service import Serving
from .settings import Settings

log = logging.getLogger(__name__)

TABLE_SIZES_EVERY_S = 10.0
_RESTORING: set[asyncio.Future] = set()
LAG_EVERY_S = 2.0


@dataclass
class Worker:
    """Everything one worker holds."""

    core: WorkerApp
    popularity: PopularityBoard
    covisit: CoVisitation | None
    ingest: Ingest
    serving: Serving
    lifecycle: Lifecycle

    @property
    def app(self):
        return self.core.app

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def metrics(self):
        return self.core.metrics

    def user_state(self, user_id: str | bytes) -> State | None:
        return lookup(self.core.user_sequences, user_id)

    def close(self) -> None:
        """Stop the threads and serving processes (Faust stops the rest)."""
        self.lifecycle.close()
        self.serving.close()


def create(settings: Settings, backend: Backend | None = None) -> Worker:
    """A worker's app with its agents, timers and views registered (``backend``: serving's, if
    not the one the settings choose). Stops with ``FaustPatchError`` if a private Faust/aiokafka
    name it relies on has changed."""
    faust_patches.check()
    s = settings
    core = WorkerApp(s)
    popularity = PopularityBoard(core.item_popularity, s.popularity_half_life_s, s.popularity_capacity,
                                 settle_s=s.popularity_settle_s if s.suspect_surprise else 0.0)
    covisit = CoVisitation(s.covisit_half_life_s) if s.covisit else None
    categories = CategoryPopularity(s.popularity_half_life_s) if s.categories else None
    serving = Serving(s, core.metrics, popularity.top, backend, covisit, categories)

    async def accepted(event: Event, state: State, arrived: float, msg_ts: float | None, counted: bool) -> None:
        items = history(state)
        core.metrics.stages.mark("state")
        if counted:
            if covisit is not None:
                covisit.add([item for item, *_ in items[:-1]], event.item_id, event.ts)
            if categories is not None and event.category is not None:
                categories.add(event.category, event.item_id, event.ts)
            core.metrics.stages.mark("covisit")
        await serving.accept(event.user_id, items, event.ts, arrived, msg_ts, state.get("c"))

    def count_history(key: bytes, items: list, sign: float) -> None:
        """A user quarantined (sign -1) or released (+1): their stored events' counts taken back or
        counted again (categories only taken back: a stored history holds none), and a quarantined
        user's scored events taken back out of the gate."""
        if covisit is not None:
            covisit.add_history(stamps(items), sign=sign)
        if sign < 0:
            if categories is not None:
                categories.retract_history(stamps(items))
            if serving.gate is not None:
                serving.gate.forget(key.decode(errors="replace"))

    restore = partial(restore_covisit, core, covisit, popularity) if covisit is not None else None
    worker = Worker(core, popularity, covisit, Ingest(core, popularity, accepted, restore, count_history), serving,
                    Lifecycle(core, on_update=serving.load_async, staleness=serving.staleness,
                              quality=lambda: serving.gate.report() if serving.gate is not None else {}))
    worker.ingest.register()
    serving.register(core.app)
    worker.lifecycle.register()
    views.register(core, serving, partial(lookup, core.user_sequences), history)
    _register_gauges(core)
    return worker


def restore_covisit(core: WorkerApp, covisit: CoVisitation, popularity: PopularityBoard, partition: int,
                    before: float) -> None:
    """Count the stored histories of ``partition`` into co-visitation and settle popularity's
    counts again, in the background of the event loop (streams/ingest/covisit.py)."""
    states = partition_values(core.user_sequences, partition)
    if states is None:
        return

    async def restore() -> None:
        started = time.monotonic()
        try:
            users, events = await restore_partition(covisit, states, before,
                                                    partial(popularity.resettle, partition, before=before))
        except Exception:  # the board is only a candidate source: ingestion goes on
            log.exception("co-visitation of partition %d not restored", partition)
            return
        if users:
            log.info("co-visitation: %d events of %d users of partition %d restored in %.2f s",
                     events, users, partition, time.monotonic() - started)

    task = asyncio.ensure_future(restore())
    _RESTORING.add(task)  # the event loop holds tasks weakly
    task.add_done_callback(_RESTORING.discard)


def _register_gauges(core: WorkerApp) -> None:
    app, metrics, s = core.app, core.metrics, core.settings

    @app.timer(TABLE_SIZES_EVERY_S)
    async def table_sizes():
        for name, table in (("user_sequences", core.user_sequences), ("item_popularity", core.item_popularity)):
            metrics.table_entries.labels(name).set(table_entries(table))
        metrics.rocksdb_memory.set(rocksdb_memory_in_use())

    @app.timer(LAG_EVERY_S)
    async def lag():
        metrics.consumer_lag.set(consumer_lag(app, s.topic_events))
