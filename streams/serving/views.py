"""HTTP views on the worker: ``/recommend/{user_id}``, ``/users/{user_id}``, ``/health``, ``/metrics``,
``/openapi.json`` (their description, :mod:`streams.serving.openapi`).

``/recommend`` makes the same call as the stream (:meth:`Serving.recommend`) and answers with the
same record bytes. Every path answers with and without a trailing slash: DESIGN.md and the README
write ``/recommend/{user_id}?k=10``, Faust's own style is ``/health/``, and aiohttp matches a path
exactly.

With ``http_token`` set, ``/users/...`` (a user's history) and ``/metrics`` answer 401 with
``WWW-Authenticate: Bearer`` unless the request carries ``Authorization: Bearer <token>``. The
check comes before Faust's table routing, so a request is refused by the worker it reaches and
never forwarded with a wrong token.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from functools import wraps
from importlib.metadata import PackageNotFoundError, version

from model.interactions import MAX_ID_LEN

from ..app import WorkerApp
from ..kafka.monitoring import assigned_partitions
from . import openapi
from .recommend import Request
from .service import Serving

JSON = "application/json"
UNAUTHORIZED = {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}


def bearer_ok(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer credential
    (the scheme is case-insensitive, RFC 7235; the token is compared in constant time)."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def parse_k(raw: str | None, default: int) -> int | None:
    """``k`` of ``/recommend``: ``default`` when absent, None (a 400) unless it is ASCII digits
    for a number in 1..MAX_K. Python's ``int()`` alone also took ``" 5"``, ``"1_000"``, ``"+5"``
    and non-ASCII digits such as ``"\u0665"``, none of which is an integer to the OpenAPI schema."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()):
        return None
    k = int(raw)
    return k if 1 <= k <= openapi.MAX_K else None


def guarded(token: str | None):
    """A view decorator: the view answers 401 unless the request carries the bearer ``token``;
    ``token`` None: the view is open."""
    def decorate(fun):
        if token is None:
            return fun

        @wraps(fun)
        async def get(view, request, *args, **kwargs):
            if not bearer_ok(request.headers.get("Authorization"), token):
                return view.json(UNAUTHORIZED, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="streamrec"'})
            return await fun(view, request, *args, **kwargs)
        return get
    return decorate


def _package_version() -> str:
    try:
        return version("streamrec")
    except PackageNotFoundError:
        return "0"


def register(core: WorkerApp, serving: Serving, user_state: Callable[[str], dict | None],
             history: Callable[[dict | None], list[tuple]]) -> None:
    """``user_state(user_id)``: the user's state record (None: unknown user); ``history(state)``:
    its events (``Event.step``: item_id, type and any scenario), oldest first (both from ``streams.ingest.user_state``)."""
    app, metrics, settings = core.app, core.metrics, core.settings
    token = settings.http_token.get_secret_value() if settings.http_token is not None else None
    protected = guarded(token)
    document = openapi.spec(_package_version())

    @app.page("/recommend/{user_id}")
    @app.page("/recommend/{user_id}/")
    @app.table_route(table=core.user_sequences, match_info="user_id")
    async def recommend_view(web, request, user_id: str):
        started = time.perf_counter()
        k = parse_k(request.query.get("k"), settings.top_k)
        if k is None:
            return web.json({"error": f"k must be an integer between 1 and {openapi.MAX_K}"}, status=400)
        scenario = request.query.get("scenario")
        if scenario is not None and not 1 <= len(scenario) <= MAX_ID_LEN:
            return web.json({"error": f"scenario must be 1 to {MAX_ID_LEN} characters"}, status=400)
        state = user_state(user_id)
        asked = Request(user_id, history(state), scenario=scenario, category=state.get("c") if state else None)
        [(_, _, record)] = await serving.recommend([asked], k=k)
        metrics.http_latency.labels("/recommend").observe(time.perf_counter() - started)
        return web.bytes(record, content_type=JSON)

    @app.page("/users/{user_id}")
    @app.page("/users/{user_id}/")
    @protected
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
            "covisit_items": len(serving.covisit) if serving.covisit is not None else None,
            "categories": len(serving.categories) if serving.categories is not None else None,
        })

    @app.page("/metrics")
    @app.page("/metrics/")
    @protected
    async def prometheus(web, request):
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/openapi.json")
    async def openapi_view(web, request):
        return web.json(document)
