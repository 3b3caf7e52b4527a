"""Per-user state (streams/ingest/user_state.py): dedupe by event_id, window and sequence bounds."""

from __future__ import annotations

import json

from streams.ingest.events import Event
from streams.ingest.user_state import apply_event, empty_state, event_key, history


def event(n: int, *, user: str = "u1", item: str | None = None, kind: str = "click",
          event_id: str | None = None) -> Event:
    return Event(user_id=user, item_id=item or f"i{n}", type=kind, ts=1000.0 + n, event_id=event_id or f"e{n}")


def apply_all(events, state=None, *, seq_len=50, dedupe_window=256):
    applied = 0
    for ev in events:
        new = apply_event(state, ev, seq_len=seq_len, dedupe_window=dedupe_window)
        if new is not None:
            state, applied = new, applied + 1
    return state, applied


def test_first_event_on_no_state():
    state = apply_event(None, event(1), seq_len=5, dedupe_window=5)
    assert state == {"items": [["i1", "click", 1001.0]], "eids": [event_key("e1")], "n": 1, "v": 2}
    assert history(state) == [("i1", "click")]
    assert {item for item, _ in history(state)} == {"i1"}


def test_empty_state_and_none_have_no_history():
    assert history(None) == history(empty_state()) == []
    assert history(None) == history(empty_state()) == []


def test_replay_is_applied_once():
    events = [event(n) for n in range(10)]
    state, applied = apply_all(events)
    replayed, again = apply_all(events, state)
    assert applied == 10 and again == 0
    assert replayed == state and state["n"] == 10


def test_duplicate_returns_none_and_leaves_state_untouched():
    state = apply_event(None, event(1), seq_len=5, dedupe_window=5)
    before = json.loads(json.dumps(state))
    assert apply_event(state, event(1), seq_len=5, dedupe_window=5) is None
    # Same id, different content: still the same event (the id decides).
    assert apply_event(state, event(2, event_id="e1"), seq_len=5, dedupe_window=5) is None
    assert state == before


def test_apply_does_not_mutate_its_input():
    state = apply_event(None, event(1), seq_len=5, dedupe_window=5)
    before = json.loads(json.dumps(state))
    apply_event(state, event(2), seq_len=5, dedupe_window=5)
    assert state == before


def test_sequence_keeps_the_last_seq_len_items_oldest_first():
    state, applied = apply_all([event(n) for n in range(20)], seq_len=4, dedupe_window=100)
    assert applied == 20 and state["n"] == 20
    assert [item for item, _ in history(state)] == ["i16", "i17", "i18", "i19"]
    assert len(state["eids"]) == 20  # the dedupe window is independent of seq_len


def test_dedupe_window_bounds_the_remembered_ids():
    state, _ = apply_all([event(n) for n in range(10)], seq_len=50, dedupe_window=3)
    assert state["eids"] == [event_key(f"e{n}") for n in (7, 8, 9)]
    # Within the window: applied once. Older than the window: not recognised (documented limit).
    assert apply_event(state, event(8), seq_len=50, dedupe_window=3) is None
    assert apply_event(state, event(2), seq_len=50, dedupe_window=3) is not None


def test_repeated_item_with_new_event_ids_counts_every_time():
    state, applied = apply_all([event(n, item="same") for n in range(3)])
    assert applied == 3
    assert history(state) == [("same", "click")] * 3
    assert {item for item, _ in history(state)} == {"same"}


def test_state_is_json_round_trippable():
    state, _ = apply_all([event(n, kind="purchase") for n in range(3)])
    restored = json.loads(json.dumps(state))
    assert restored == state
    assert apply_event(restored, event(2), seq_len=50, dedupe_window=256) is None


def test_event_keys_are_short_stable_and_distinct():
    ids = [f"u{n}|item-{n % 7}|click|{1.7e9 + n!r}" for n in range(10_000)]  # derived ids, ~30 chars
    keys = [event_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert all(len(k) == 11 and k.replace("-", "").replace("_", "").isalnum() for k in keys)
    assert event_key(ids[0]) == keys[0]  # the same id, the same key (a replay is recognised)


def test_state_written_with_raw_event_ids_still_dedupes_and_is_converted():
    """States written before event keys (no "v") hold the ids themselves: they are matched, and
    the next write holds their keys."""
    old = {"items": [["i1", "click", 1001.0], ["i2", "click", 1002.0]], "eids": ["e1", "e2"], "n": 2}
    assert apply_event(old, event(2), seq_len=50, dedupe_window=256) is None
    state = apply_event(old, event(3), seq_len=50, dedupe_window=256)
    assert state["eids"] == [event_key(e) for e in ("e1", "e2", "e3")] and state["n"] == 3 and state["v"] == 2
    assert apply_event(state, event(1), seq_len=50, dedupe_window=256) is None
    assert apply_event(state, event(3), seq_len=50, dedupe_window=256) is None
    assert apply_event(state, event(4), seq_len=50, dedupe_window=256)["n"] == 4
