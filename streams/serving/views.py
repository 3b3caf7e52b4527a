"""HTTP views on the worker: ``/recommend/{user_id}``, ``/users/{user_id}``, ``/health``, ``/metrics``.

``/recommend`` makes the same call as the stream (:meth:`Serving.recommend`) and answers with the
same record bytes. Every path answers with and without a trailing slash: DESIGN.md and the README
write ``/recommend/{user_id}?k=10``, Faust's own style is ``/health/``, and aiohttp matches a path
exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..app import WorkerApp
from ..kafka.monitoring import assigned_partitions
from .recommend import Request
from .service import Serving

JSON = "application/json"


def register(core: WorkerApp, serving: Serving, user_state: Callable[[str], dict | None],
             history: Callable[[dict | None], list[tuple[str, str]]]) -> None:
    """``user_state(user_id)``: the user's state record (None: unknown user); ``history(state)``:
    its (item_id, type) pairs, oldest first (both from ``streams.ingest.user_state``)."""
    app, metrics, settings = core.app, core.metrics, core.settings

    @app.page("/recommend/{user_id}")
    @app.page("/recommend/{user_id}/")
    @app.table_route(table=core.user_sequences, match_info="user_id")
    async def recommend_view(web, request, user_id: str):
        started = time.perf_counter()
        try:
            k = int(request.query.get("k", settings.top_k))
            if not 1 <= k <= 1000:
                raise ValueError
        except ValueError:
            return web.json({"error": "k must be an integer between 1 and 1000"}, status=400)
        [(_, _, record)] = await serving.recommend([Request(user_id, history(user_state(user_id)))], k=k)
        metrics.http_latency.labels("/recommend").observe(time.perf_counter() - started)
        return web.bytes(record, content_type=JSON)

    @app.page("/users/{user_id}")
    @app.page("/users/{user_id}/")
    @app.table_route(table=core.user_sequences, match_info="user_id")
    async def user_state_view(web, request, user_id: str):
        """The user's state record: ``n`` events applied, the recent items, the recent event ids."""
        state = user_state(user_id)
        if state is None:
            return web.json({"error": f"no state for user {user_id!r}"}, status=404)
        return web.json({"user_id": user_id, **state})

    @app.page("/health")
    @app.page("/health/")
    async def health(web, request):
        return web.json({
            "status": "ok",
            "partitions": assigned_partitions(app, settings.topic_events),
            "model_version": serving.model_version,
            "index_version": serving.index_version,
            "gate": serving.gate.report() if serving.gate is not None else None,
        })

    @app.page("/metrics")
    @app.page("/metrics/")
    async def prometheus(web, request):
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")
