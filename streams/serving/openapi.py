"""The OpenAPI 3 description of the worker's HTTP API (served at ``/openapi.json``).

One home for the contract of :mod:`streams.serving.views`: the views answer what is written
here, and ``tests/integration/test_http_api.py`` fuzzes a running worker against it with
schemathesis (every response must conform, none may be a 5xx). Every path also answers with a
trailing slash; both spellings are listed so that the fuzzer calls both.

``/users/{user_id}`` and ``/metrics`` declare the bearer scheme; they require it only when the
worker has ``STREAMREC_HTTP_TOKEN`` set (the security list allows the empty requirement then
too, since an open worker answers without one).
"""

from __future__ import annotations

from copy import deepcopy

from model.interactions import MAX_ID_LEN

from .gate import SOURCES  # what a record's ``source`` may say

JSON = "application/json"
MAX_K = 1000

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}

_RECORD = {
    "type": "object",
    "required": ["user_id", "items", "source", "model_version", "index_version", "event_ts", "emitted_ts",
                 "purchase_weight", "scenario"],
    "properties": {
        "user_id": {"type": "string"},
        "items": {"type": "array", "items": {
            "type": "object", "required": ["item_id", "score"],
            "properties": {"item_id": {"type": "string"}, "score": {"type": "number"}}}},
        "source": {"type": "string", "enum": list(SOURCES)},
        "model_version": {"type": "integer"},
        "index_version": {"type": "integer"},
        "event_ts": {"type": "number", "nullable": True,
                     "description": "ts of the event that triggered the record; null for an HTTP answer"},
        "emitted_ts": {"type": "number"},
        "purchase_weight": {"type": "number", "minimum": 0, "maximum": 1,
                            "description": "the model's blend: (1 - w) next-item + w next-purchase score; "
                                           "0 for next-item only and for records not from the model"},
        "scenario": {"type": "string",
                     "description": "the scenario it is for: the one asked, else that of the user's last event"},
    },
}

_USER_STATE = {
    "type": "object",
    "required": ["user_id", "items", "eids", "n"],
    "properties": {
        "user_id": {"type": "string"},
        "items": {"type": "array", "description": "recent [item_id, type, ts] (and the scenario fourth "
                                                  "where the event named one), oldest first",
                  "items": {"type": "array", "minItems": 3, "maxItems": 4}},
        "eids": {"type": "array", "items": {"type": "string"},
                 "description": "keys (64-bit hashes) of the recent event ids"},
        "n": {"type": "integer", "minimum": 0, "description": "events applied"},
        "v": {"type": "integer", "description": "state format"},
    },
}

_HEALTH = {
    "type": "object",
    "required": ["status", "partitions", "model_version", "index_version", "gate"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "partitions": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "model_version": {"type": "integer"},
        "index_version": {"type": "integer"},
        "gate": {"type": "object", "nullable": True,
                 "description": "per segment: the source serving it, each source's hit rate, events scored, "
                                "and each other source's paired z against the one serving (against_serving)"},
        "covisit_items": {"type": "integer", "minimum": 0, "nullable": True,
                          "description": "items with co-visitation neighbours (null: the source is off)"},
        "categories": {"type": "integer", "minimum": 0, "nullable": True,
                       "description": "item categories counted for the category source (null: the source is off)"},
    },
}

_USER_ID = {"name": "user_id", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}}
_K = {"name": "k", "in": "query", "required": False,
      "description": "number of items (default: the worker's top_k)",
      "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K}}
_SCENARIO = {"name": "scenario", "in": "query", "required": False,
             "description": "the scenario to recommend for (default: that of the user's last event)",
             "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


_UNAUTHORIZED = {**_json("token required (the worker has STREAMREC_HTTP_TOKEN set) and missing or wrong",
                         {"$ref": "#/components/schemas/Error"}),
                 "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}
_PROTECTED = [{"bearer": []}, {}]

_OPERATIONS = {
    "/recommend/{user_id}": {"get": {
        "operationId": "recommend",
        "summary": "The user's recommendations (the same call and record as the stream's)",
        "parameters": [_USER_ID, _K, _SCENARIO],
        "responses": {
            "200": _json("the recommendation record", {"$ref": "#/components/schemas/Recommendation"}),
            "400": _json("k is not an integer between 1 and 1000, or scenario is empty or too long",
                         {"$ref": "#/components/schemas/Error"}),
        },
    }},
    "/users/{user_id}": {"get": {
        "operationId": "user_state",
        "summary": "The user's state record (history and remembered event keys)",
        "parameters": [_USER_ID],
        "security": _PROTECTED,
        "responses": {
            "200": _json("the user's state", {"$ref": "#/components/schemas/UserState"}),
            "401": _UNAUTHORIZED,
            "404": _json("no event of the user applied", {"$ref": "#/components/schemas/Error"}),
        },
    }},
    "/health": {"get": {
        "operationId": "health",
        "summary": "Liveness, assigned partitions, versions and the quality gate",
        "responses": {"200": _json("the worker is up", {"$ref": "#/components/schemas/Health"})},
    }},
    "/metrics": {"get": {
        "operationId": "metrics",
        "summary": "Prometheus exposition (text format 0.0.4)",
        "security": _PROTECTED,
        "responses": {
            "200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": _UNAUTHORIZED,
        },
    }},
    "/openapi.json": {"get": {
        "operationId": "openapi",
        "summary": "This description",
        "responses": {"200": _json("the OpenAPI document", {"type": "object"})},
    }},
}


def _with_slash(operations: dict) -> dict:
    copy = deepcopy(operations)
    for operation in copy.values():
        operation["operationId"] += "_slash"
    return copy


def spec(version: str = "0") -> dict:
    """The OpenAPI 3.0 document; ``version`` is the package version it describes."""
    paths = {}
    for path, operations in _OPERATIONS.items():
        paths[path] = deepcopy(operations)
        if path != "/openapi.json":
            paths[path + "/"] = _with_slash(operations)
    return {
        "openapi": "3.0.3",
        "info": {"title": "StreamRec worker", "version": version,
                 "description": "HTTP API of one `streamrec worker`. Each path also answers with a trailing slash."},
        "paths": paths,
        "components": {
            "schemas": {"Recommendation": _RECORD, "UserState": _USER_STATE, "Health": _HEALTH, "Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "STREAMREC_HTTP_TOKEN, when the worker has one"}},
        },
    }
