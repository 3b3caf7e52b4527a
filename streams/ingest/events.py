"""The input event contract: decoding and validation of raw ``events`` messages.

Every message either becomes an :class:`Event` or raises :class:`InvalidEvent` with a reason
from :data:`REASONS`; the ingest agent sends the latter to the dead-letter topic.

Decisions where DESIGN.md is silent:
- unknown extra fields are ignored (producers may add fields before consumers know them);
- a missing ``ts`` is the Kafka record timestamp (the broker's/producer's time of the message),
  which, unlike the wall clock at consumption, is the same when the message is re-read after a
  crash, so the derived ``event_id`` stays stable;
- integer ids are turned into strings; booleans and floats are not ids.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from model.interactions import DEFAULT_SCENARIO, EVENT_TYPES, MAX_ID_LEN, Interaction

from ..errors import StreamRecError

# Deeper JSON is rejected as not_json before decoding: Python's decoder recurses, so without a
# limit of our own the outcome (RecursionError, or an accepted event with a deep extra field)
# would depend on how much stack the calling thread happens to have left.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")

REASONS = (
    "too_large",  # over the message size limit
    "not_json",  # not UTF-8 or not JSON
    "not_object",  # JSON, but not an object
    "missing_field",  # user_id / item_id / type absent or null
    "empty_field",  # an id or the type is an empty string
    "invalid_field",  # wrong JSON type, id too long
    "unknown_type",  # type is not click / purchase
    "invalid_ts",  # ts not a number, not finite, or too far in the future
)


class InvalidEvent(StreamRecError):
    """A message that does not satisfy the event contract."""

    def __init__(self, reason: str, error: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


@dataclass(frozen=True, slots=True)
class Event(Interaction):
    """An accepted event: the interaction (``category``: the item's category where the event names
    one, else None) plus its ``event_id`` (given, or derived from user_id|item_id|type|ts)."""

    event_id: str = ""

    def step(self) -> tuple:
        """What a user's history holds of this event: ``(item_id, type)``, with the scenario
        third when the event names one (``model.recommender.Recommender`` reads both forms)."""
        if self.scenario == DEFAULT_SCENARIO:
            return (self.item_id, self.type)
        return (self.item_id, self.type, self.scenario)

    def to_json(self) -> dict:
        return {
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
            "ts": self.ts,
            "event_id": self.event_id,
            "scenario": self.scenario,
            **({"category": self.category} if self.category is not None else {}),
        }


def _ident(obj: dict, name: str, *, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"field {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidEvent("invalid_field", f"field {name!r} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise InvalidEvent("empty_field", f"field {name!r} is empty")
    if len(text) > MAX_ID_LEN:
        raise InvalidEvent("invalid_field", f"field {name!r} is longer than {MAX_ID_LEN} characters")
    try:
        text.encode("utf-8")  # JSON may escape lone surrogates ("\\ud800"): no UTF-8, no Kafka key
    except UnicodeEncodeError:
        raise InvalidEvent("invalid_field", f"field {name!r} is not valid Unicode (lone surrogate)") from None
    return text


def _timestamp(obj: dict, *, default_ts: float, now: float, max_future_s: float) -> float:
    value = obj.get("ts")
    if value is None:
        return default_ts
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("invalid_ts", f"ts must be epoch seconds, got {type(value).__name__}")
    try:
        ts = float(value)
    except OverflowError:
        raise InvalidEvent("invalid_ts", "ts is out of range") from None
    if not math.isfinite(ts):
        raise InvalidEvent("invalid_ts", f"ts is not finite: {value!r}")
    if ts > now + max_future_s:
        raise InvalidEvent("invalid_ts", f"ts {ts} is more than {max_future_s:g} s in the future")
    return ts


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in ``raw`` (brackets inside strings ignored)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        if bracket in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_event(
    raw: bytes | None,
    *,
    max_bytes: int,
    max_future_s: float,
    now: float,
    default_ts: float | None = None,
) -> Event:
    """Decode and validate one raw message; raise :class:`InvalidEvent` if it breaks the contract.

    ``now`` is the wall clock (for the future check); ``default_ts`` the time used when the event
    has no ``ts`` (the Kafka record timestamp; ``now`` if not given).
    """
    if raw is None:
        raise InvalidEvent("not_json", "message has no value")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"message is {len(raw)} bytes, limit {max_bytes}")
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidEvent("not_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidEvent("not_json", f"{type(exc).__name__}: {exc}"[:300]) from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(obj).__name__}")
    user_id = _ident(obj, "user_id")
    item_id = _ident(obj, "item_id")
    kind = obj.get("type")
    if kind is None:
        raise InvalidEvent("missing_field", "field 'type' is missing")
    if not isinstance(kind, str):
        raise InvalidEvent("invalid_field", f"field 'type' must be a string, got {type(kind).__name__}")
    if not kind:
        raise InvalidEvent("empty_field", "field 'type' is empty")
    if kind not in EVENT_TYPES:
        raise InvalidEvent("unknown_type", f"type {kind[:40]!r} is not one of {', '.join(EVENT_TYPES)}")
    ts = _timestamp(obj, default_ts=now if default_ts is None else default_ts, now=now,
                    max_future_s=max_future_s)
    event_id = _ident(obj, "event_id", required=False) or f"{user_id}|{item_id}|{kind}|{ts!r}"
    scenario = _ident(obj, "scenario", required=False) or DEFAULT_SCENARIO
    category = _ident(obj, "category", required=False)
    return Event(user_id=user_id, item_id=item_id, type=kind, ts=ts, event_id=event_id, scenario=scenario,
                 category=category)
