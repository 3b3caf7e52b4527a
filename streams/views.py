"""HTTP views on the worker: ``/recommend/{user_id}``, ``/health``, ``/metrics``.

Every path answers with and without a trailing slash: DESIGN.md and the README write
``/recommend/{user_id}?k=10``, Faust's own style is ``/health/``, and aiohttp matches a path exactly.
"""

from __future__ import annotations

import time

from faust.exceptions import ConsumerNotStarted

from .app import StreamRec
from .serving import Request
from .user_state import history


def assigned_partitions(app, topic: str) -> list[int]:
    """The partitions of ``topic`` this worker holds; none while its consumer is still starting."""
    try:
        return sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)
    except ConsumerNotStarted:
        return []


def register(sr: StreamRec) -> None:
    app, metrics = sr.app, sr.metrics
    from .agents import recommend_batch

    @app.page("/recommend/{user_id}")
    @app.page("/recommend/{user_id}/")
    @app.table_route(table=sr.user_sequences, match_info="user_id")
    async def recommend_view(web, request, user_id: str):
        started = time.perf_counter()
        try:
            k = int(request.query.get("k", sr.settings.top_k))
            if not 1 <= k <= 1000:
                raise ValueError
        except ValueError:
            return web.json({"error": "k must be an integer between 1 and 1000"}, status=400)
        state = sr.user_state(user_id)
        req = Request(user_id, history(state), None)
        [record] = await recommend_batch(sr, [req], k=k)
        metrics.http_latency.labels("/recommend").observe(time.perf_counter() - started)
        return web.json(record.to_json())

    @app.page("/users/{user_id}")
    @app.page("/users/{user_id}/")
    @app.table_route(table=sr.user_sequences, match_info="user_id")
    async def user_state_view(web, request, user_id: str):
        """The user's state record: ``n`` events applied, the recent items, the recent event ids."""
        state = sr.user_state(user_id)
        if state is None:
            return web.json({"error": f"no state for user {user_id!r}"}, status=404)
        return web.json({"user_id": user_id, **state})

    @app.page("/health")
    @app.page("/health/")
    async def health(web, request):
        model = sr.model
        return web.json({
            "status": "ok",
            "partitions": assigned_partitions(app, sr.settings.topic_events),
            "model_version": getattr(model, "model_version", 0),
            "index_version": getattr(model, "index_version", 0),
        })

    @app.page("/metrics")
    @app.page("/metrics/")
    async def prometheus(web, request):
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")
