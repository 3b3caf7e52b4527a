"""Per-user state kept in the ``user_sequences`` table: pure functions, no Faust.

A state is a JSON-able dict (the table's value)::

    {"items": [[item_id, type, ts], ...],   # the last ``seq_len`` events, oldest first; an event
                                            # that names a scenario has it fourth
     "eids":  [event_key, ...],             # keys of the last ``dedupe_window`` applied event ids
     "n":     total events applied,
     "v":     2,                            # eids are keys (absent: eids are raw ids)
     "c":     category,                     # of the last event that named one (absent: none did)
     ...}                                   # the limits' keys: "rl", "sx", "q", "ok" (streams.ingest.guard)

Event ids and items live in one record so that applying an event is one table write: after a
crash the changelog holds either both the item and its id or neither, and a replayed message
is applied once. A replay older than the last ``dedupe_window`` events of that user is not
recognised (documented limit; crash replays span seconds, far inside the window).

An event id is remembered by its key (:func:`event_key`: 8 bytes of BLAKE2b, 11 characters)
rather than in full: ids derived from the event (``user|item|type|ts``, ~40 characters) made the
256 remembered ids ~10 KB of a full user's ~12 KB state, written to RocksDB and to the changelog
with every event (``bench/user_state_cost.py``). A state written before keys (no ``"v"``) holds
raw ids: the next event is matched against them, and the state is written back with their keys.
A worker of the earlier version reading a new state finds no raw ids in it: it would apply a
replayed event again, but it does not fail.

The table holds the state as compact JSON bytes (:func:`encode` / :func:`decode`): encoded once
here, the same bytes go to RocksDB and to the changelog (Faust's JSON serializer encoded twice).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from model.interactions import DEFAULT_SCENARIO

from .events import Event

State = dict[str, Any]


def encode(state: State) -> bytes:
    return orjson.dumps(state)


def decode(raw: bytes | None) -> State | None:
    return None if raw is None else orjson.loads(raw)


def event_key(event_id: str) -> str:
    """What a state remembers of an event id: 64 bits of BLAKE2b in URL-safe base64. A new event
    is taken for a duplicate only if its key equals one of the user's ``dedupe_window`` remembered
    ones: ~2**-56 per event with 256 remembered."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest)[:11].decode("ascii")


KEYED = 2  # the state format whose "eids" are event keys


def empty_state() -> State:
    return {"items": [], "eids": [], "n": 0, "v": KEYED}


def apply_event(state: State | None, event: Event, *, seq_len: int, dedupe_window: int) -> State | None:
    """Return the new state, or ``None`` if ``event`` was already applied (a duplicate)."""
    state = empty_state() if state is None else state
    remembered = state["eids"]
    if state.get("v") != KEYED:  # written before event keys: raw ids
        if event.event_id in remembered:
            return None
        remembered = [event_key(eid) for eid in remembered]
    key = event_key(event.event_id)
    if key in remembered:
        return None
    entry = [event.item_id, event.type, event.ts]
    if event.scenario != DEFAULT_SCENARIO:
        entry.append(event.scenario)
    items = state["items"] + [entry]
    eids = remembered + [key]
    # the other keys (streams.ingest.guard's) stay as they were
    new = {**state, "items": items[-seq_len:], "eids": eids[-dedupe_window:], "n": state["n"] + 1, "v": KEYED}
    if event.category is not None:
        new["c"] = event.category
    return new


def history(state: State | None) -> list[tuple]:
    """The user's recent events as ``Event.step`` makes them (``(item_id, type)``, the scenario
    third where the event named one), oldest first."""
    return [] if state is None else [(e[0], e[1], e[3]) if len(e) > 3 else (e[0], e[1]) for e in state["items"]]


def stamps(items: list) -> Iterator[tuple[str, float]]:
    """The ``(item_id, ts)`` of stored events (a state's ``items``), oldest first."""
    return ((e[0], e[2]) for e in items)


def lookup(table, user_id: str | bytes) -> State | None:
    """The state of ``user_id`` in the ``user_sequences`` table (None: no event applied yet)."""
    return decode(table.get(user_id.encode() if isinstance(user_id, str) else user_id))
