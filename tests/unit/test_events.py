"""The event contract (streams/ingest/events.py): every rejection reason, and the accepted edge cases."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from streams.ingest.events import MAX_ID_LEN, REASONS, Event, InvalidEvent, parse_event

NOW = 1_711_965_600.0
LIMIT = 1024


def parse(raw, **kwargs) -> Event:
    options = {"max_bytes": LIMIT, "max_future_s": 86_400.0, "now": NOW, **kwargs}
    return parse_event(raw, **options)


def encode(obj) -> bytes:
    return json.dumps(obj).encode()


def valid(**changes) -> dict:
    event = {"user_id": "u42", "item_id": "sku-981", "type": "click", "ts": NOW - 10.0}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()

# One or more messages per reason of REASONS; the test below checks that every reason is covered.
REJECTED = [
    ("too_large", encode(valid(pad="x" * LIMIT))),
    ("not_json", b"this is not json"),
    ("not_json", b""),
    ("not_json", None),
    ("not_json", b'{"user_id": "u1", "item_id": "\xff\xfe", "type": "click"}'),  # not UTF-8
    ("not_json", b'{"user_id": "u1",'),  # truncated
    ("not_object", b'["an", "array"]'),
    ("not_object", b'"a string"'),
    ("not_object", b"42"),
    ("not_object", b"null"),
    ("missing_field", encode(valid(user_id=_DROP))),
    ("missing_field", encode(valid(item_id=_DROP))),
    ("missing_field", encode(valid(type=_DROP))),
    ("missing_field", encode(valid(user_id=None))),
    ("empty_field", encode(valid(user_id=""))),
    ("empty_field", encode(valid(item_id=""))),
    ("empty_field", encode(valid(type=""))),
    ("empty_field", encode(valid(event_id=""))),
    ("invalid_field", encode(valid(user_id=1.5))),
    ("invalid_field", encode(valid(user_id=True))),
    ("invalid_field", encode(valid(item_id=["a"]))),
    ("invalid_field", encode(valid(item_id={"id": 1}))),
    ("invalid_field", encode(valid(user_id="u" * (MAX_ID_LEN + 1)))),
    ("invalid_field", encode(valid(type=1))),
    ("invalid_field", encode(valid(scenario=3.5))),
    # A lone surrogate is valid JSON but no UTF-8 string: it could not become a Kafka key.
    ("invalid_field", b'{"user_id": "\\ud800", "item_id": "i1", "type": "click"}'),
    ("invalid_field", b'{"user_id": "u1", "item_id": "i\\udfff", "type": "click"}'),
    ("unknown_type", encode(valid(type="like"))),
    ("unknown_type", encode(valid(type="Click"))),
    ("invalid_ts", encode(valid(ts="2024-04-01"))),
    ("invalid_ts", encode(valid(ts=True))),
    ("invalid_ts", encode(valid(ts=[1]))),
    ("invalid_ts", b'{"user_id": "u1", "item_id": "i1", "type": "click", "ts": NaN}'),
    ("invalid_ts", b'{"user_id": "u1", "item_id": "i1", "type": "click", "ts": Infinity}'),
    ("invalid_ts", b'{"user_id": "u1", "item_id": "i1", "type": "click", "ts": -Infinity}'),
    ("invalid_ts", b'{"user_id": "u1", "item_id": "i1", "type": "click", "ts": 1e400}'),
    ("invalid_ts", b'{"user_id": "u1", "item_id": "i1", "type": "click", "ts": 1' + b"0" * 400 + b"}"),
    ("invalid_ts", encode(valid(ts=NOW + 86_400.0 + 1.0))),
]


def test_every_reason_has_a_test():
    assert {reason for reason, _ in REJECTED} == set(REASONS)


@pytest.mark.parametrize("reason, raw", REJECTED, ids=[f"{r}-{n}" for n, (r, _) in enumerate(REJECTED)])
def test_rejected_with_reason(reason, raw):
    with pytest.raises(InvalidEvent) as info:
        parse(raw)
    assert info.value.reason == reason
    assert info.value.error  # a human-readable explanation
    assert str(info.value).startswith(reason + ": ")


def test_size_limit_is_inclusive():
    raw = encode(valid())
    assert parse(raw, max_bytes=len(raw)).user_id == "u42"
    with pytest.raises(InvalidEvent, match="too_large"):
        parse(raw, max_bytes=len(raw) - 1)


def test_future_limit_is_inclusive_and_configurable():
    assert parse(encode(valid(ts=NOW + 86_400.0))).ts == NOW + 86_400.0
    with pytest.raises(InvalidEvent, match="invalid_ts"):
        parse(encode(valid(ts=NOW + 61.0)), max_future_s=60.0)


def test_valid_event_fields():
    event = parse(encode(valid(type="purchase", event_id="e-1", scenario="home")))
    assert event == Event(user_id="u42", item_id="sku-981", type="purchase", ts=NOW - 10.0, event_id="e-1",
                         scenario="home")
    assert event.to_json() == {"user_id": "u42", "item_id": "sku-981", "type": "purchase",
                               "ts": NOW - 10.0, "event_id": "e-1", "scenario": "home"}


def test_integer_ids_become_strings():
    event = parse(encode(valid(user_id=42, item_id=0, event_id=7, scenario=1)))
    assert (event.user_id, event.item_id, event.event_id, event.scenario) == ("42", "0", "7", "1")
    assert isinstance(event.ts, float)


def test_integer_ts_is_a_float():
    event = parse(encode(valid(ts=1_711_965_600)))
    assert event.ts == 1_711_965_600.0 and isinstance(event.ts, float)


def test_missing_ts_uses_the_default_ts_else_now():
    assert parse(encode(valid(ts=_DROP)), default_ts=NOW - 5.0).ts == NOW - 5.0
    assert parse(encode(valid(ts=_DROP))).ts == NOW
    assert parse(encode(valid(ts=None)), default_ts=123.0).ts == 123.0


def test_extra_fields_are_ignored_and_scenario_defaults():
    event = parse(encode(valid(category="shoes", price=12.5, nested={"a": [1, 2]})))
    assert event.scenario == "default"
    assert event.user_id == "u42"


def test_derived_event_id_is_stable_and_distinguishes_events():
    first = parse(encode(valid()))
    assert first.event_id == f"u42|sku-981|click|{NOW - 10.0!r}"
    assert parse(encode(valid())).event_id == first.event_id  # a replay has the same id
    assert parse(encode(valid(type="purchase"))).event_id != first.event_id
    assert parse(encode(valid(ts=NOW - 9.0))).event_id != first.event_id
    # Without a ts, the id derives from the default ts (the Kafka record timestamp): a re-read
    # of the same record gives the same id, another record another one.
    no_ts = encode(valid(ts=_DROP))
    assert parse(no_ts, default_ts=100.0).event_id == parse(no_ts, default_ts=100.0, now=NOW + 1).event_id
    assert parse(no_ts, default_ts=100.0).event_id != parse(no_ts, default_ts=101.0).event_id


def test_ids_at_the_length_limit_and_unicode_are_accepted():
    event = parse(encode(valid(user_id="u" * MAX_ID_LEN, item_id="商品-ü")))
    assert len(event.user_id) == MAX_ID_LEN
    assert event.item_id == "商品-ü"


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_invalid_event(raw):
    try:
        event = parse(raw)
    except InvalidEvent as err:
        assert err.reason in REASONS
    else:
        event.user_id.encode()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@hsettings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={"user_id": _json, "item_id": _json, "type": _json | st.sampled_from(
    ["click", "purchase"]), "ts": _json, "event_id": _json, "scenario": _json}))
def test_arbitrary_objects_are_events_or_invalid(obj):
    try:
        event = parse(json.dumps(obj).encode())
    except InvalidEvent as err:
        assert err.reason in REASONS
    else:
        for text in (event.user_id, event.item_id, event.event_id, event.scenario):
            assert 0 < len(text) and isinstance(text, str)
            text.encode("utf-8")  # usable as a Kafka key
        assert event.type in ("click", "purchase") and math.isfinite(event.ts)
