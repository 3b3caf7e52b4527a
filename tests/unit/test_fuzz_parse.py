"""Property tests of the event contract (issue 7 item 2): for any input, ``parse_event`` returns
an :class:`Event` or raises :class:`InvalidEvent` with a known reason, never anything else; a
returned event always satisfies the contract."""

from __future__ import annotations

import json
import math

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.ingest.events import EVENT_TYPES, MAX_ID_LEN, MAX_JSON_DEPTH, REASONS, Event, InvalidEvent, parse_event

NOW = 1_700_000_000.0
LIMIT = 4096
FIELDS = ("user_id", "item_id", "type", "ts", "event_id", "scenario")

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
                | st.sampled_from(list(EVENT_TYPES) + ["", "view", "CLICK"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
event_like = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=8)


def _check(raw: bytes) -> None:
    try:
        ev = parse_event(raw, max_bytes=LIMIT, max_future_s=86_400, now=NOW, default_ts=NOW - 5)
    except InvalidEvent as err:
        assert err.reason in REASONS
        return
    assert isinstance(ev, Event)
    assert ev.type in EVENT_TYPES
    for ident in (ev.user_id, ev.item_id, ev.event_id, ev.scenario):
        assert isinstance(ident, str) and ident
    assert len(ev.user_id) <= MAX_ID_LEN and len(ev.item_id) <= MAX_ID_LEN
    assert math.isfinite(ev.ts) and ev.ts <= NOW + 86_400
    json.dumps(ev.to_json())  # re-publishable (the re-key path sends it as JSON)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=LIMIT + 64))
def test_arbitrary_bytes(raw):
    _check(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_values(value):
    _check(json.dumps(value, allow_nan=True).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_like)
def test_event_like_objects(obj):
    _check(json.dumps(obj, allow_nan=True).encode())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "surrogatepass"]))
def test_odd_unicode_and_encodings(text, encoding):
    body = json.dumps({"user_id": text, "item_id": "i", "type": "click"}, ensure_ascii=False)
    if encoding == "surrogatepass":
        raw = (body[:-1] + ', "x": "\ud800"}').encode("utf-8", "surrogatepass")  # a lone surrogate
    else:
        raw = body.encode(encoding, "replace")
    _check(raw)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from("[{"))
def test_deep_nesting(depth, opener):
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"a": ' if opener == "{" else ""
    raw = ((opener + inner) * depth + "1" + closer * depth).encode() if opener == "[" else \
        ('{"a": ' * depth + "1" + "}" * depth).encode()
    try:
        parse_event(raw, max_bytes=10_000_000, max_future_s=86_400, now=NOW)
    except InvalidEvent as err:
        assert err.reason in REASONS
        # deterministic whatever the stack: too deep is not_json, shallow JSON is decoded
        shallow = "not_object" if opener == "[" else "missing_field"
        assert err.reason == ("not_json" if depth > MAX_JSON_DEPTH else shallow)
    else:
        raise AssertionError("nested JSON is never an event")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 5_000])
def test_an_event_with_a_deep_extra_field_is_rejected_only_past_the_depth_limit(depth):
    # the event object itself is one level
    raw = b'{"user_id": "u", "item_id": "i", "type": "click", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    strings = b'{"user_id": "u", "item_id": "i", "type": "click", "x": "' + b"[" * 5_000 + b'"}'
    assert parse_event(strings, max_bytes=10_000_000, max_future_s=86_400, now=NOW).user_id == "u"
    if depth > MAX_JSON_DEPTH:
        with pytest.raises(InvalidEvent) as err:
            parse_event(raw, max_bytes=10_000_000, max_future_s=86_400, now=NOW)
        assert err.value.reason == "not_json" and "deeper" in err.value.error
    else:
        assert parse_event(raw, max_bytes=10_000_000, max_future_s=86_400, now=NOW).item_id == "i"
