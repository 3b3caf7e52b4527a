"""Per-user state kept in the ``user_sequences`` table: pure functions, no Faust.

A state is a JSON-able dict (the table's value)::

    {"items": [[item_id, type, ts], ...],   # the last ``seq_len`` events, oldest first
     "eids":  [event_id, ...],              # the last ``dedupe_window`` applied event ids
     "n":     total events applied}

Event ids and items live in one record so that applying an event is one table write: after a
crash the changelog holds either both the item and its id or neither, and a replayed message
is applied once. A replay older than the last ``dedupe_window`` events of that user is not
recognised (documented limit; crash replays span seconds, far inside the window).

The table holds the state as compact JSON bytes (:func:`encode` / :func:`decode`): encoded once
here, the same bytes go to RocksDB and to the changelog (Faust's JSON serializer encoded twice).
"""

from __future__ import annotations

from typing import Any

import orjson

from .events import Event

State = dict[str, Any]


def encode(state: State) -> bytes:
    return orjson.dumps(state)


def decode(raw: bytes | None) -> State | None:
    return None if raw is None else orjson.loads(raw)


def empty_state() -> State:
    return {"items": [], "eids": [], "n": 0}


def apply_event(state: State | None, event: Event, *, seq_len: int, dedupe_window: int) -> State | None:
    """Return the new state, or ``None`` if ``event`` was already applied (a duplicate)."""
    state = empty_state() if state is None else state
    if event.event_id in state["eids"]:
        return None
    items = state["items"] + [[event.item_id, event.type, event.ts]]
    eids = state["eids"] + [event.event_id]
    return {"items": items[-seq_len:], "eids": eids[-dedupe_window:], "n": state["n"] + 1}


def history(state: State | None) -> list[tuple[str, str]]:
    """The user's recent (item_id, type) pairs, oldest first."""
    return [] if state is None else [(item, kind) for item, kind, _ in state["items"]]


def seen_items(state: State | None) -> set[str]:
    return set() if state is None else {item for item, _, _ in state["items"]}
