"""Item-to-item co-visitation (streams/ingest/covisit.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from streams.ingest.covisit import CoVisitation, restore_partition


def test_next_items_are_recommended_and_seen_items_excluded():
    board = CoVisitation(half_life_s=3600)
    for user in range(5):  # everyone goes a -> b -> c
        board.add([], "a", 100.0 + user)
        board.add(["a"], "b", 101.0 + user)
        board.add(["a", "b"], "c", 102.0 + user)
    board.add(["a"], "z", 200.0)  # once: a -> z
    assert [item for item, _ in board.recommend(["a"], 2)] == ["b", "c"]
    assert [item for item, _ in board.recommend(["a", "b"], 3)] == ["c", "z"]  # a and b seen
    assert board.recommend(["unknown"], 5) == []


def test_recent_events_outweigh_old_ones():
    board = CoVisitation(half_life_s=10)
    for n in range(3):
        board.add(["a"], "old", 0.0 + n)  # three times, long ago
    board.add(["a"], "new", 100.0)  # once, ten half-lives later
    assert [item for item, _ in board.recommend(["a"], 2)] == ["new", "old"]


def test_weights_are_rebased_without_changing_rankings():
    board = CoVisitation(half_life_s=1)
    board.add(["a"], "x", 0.0)
    board.add(["a"], "y", 1.0)
    before = [item for item, _ in board.recommend(["a"], 2)]
    board.add(["q"], "r", 1000.0)  # 1000 half-lives later: rebased, no overflow
    assert board.t0 == 1000.0 and [item for item, _ in board.recommend(["a"], 2)] == before == ["y", "x"]


def test_neighbours_and_items_are_bounded():
    board = CoVisitation(half_life_s=3600, max_neighbours=3, capacity=8)
    for n in range(40):
        board.add(["hub"], f"i{n}", float(n))
    assert len(board.next["hub"]) <= 6
    assert len(board) <= 10


def _live(board: CoVisitation, users: dict[str, list[tuple[str, float]]]) -> None:
    """What ingest does: each event after the user's earlier items, once per user and item."""
    for events in users.values():
        previous: list[str] = []
        for item, ts in events:
            if item not in previous:
                board.add(previous, item, ts)
            previous.append(item)


USERS = {"u1": [("a", 1.0), ("b", 2.0), ("a", 3.0), ("c", 4.0)],
         "u2": [("b", 1.5), ("c", 2.5), ("d", 3.5)],
         "u3": [("c", 5.0), ("a", 6.0)]}


def test_a_board_restored_from_stored_histories_equals_the_one_counted_live():
    live, restored = CoVisitation(half_life_s=60), CoVisitation(half_life_s=60)
    _live(live, USERS)
    for events in USERS.values():
        restored.add_history(events)
    # t0 is the first event time each board saw; scale both to one t0 before comparing
    assert set(restored.next) == set(live.next)
    for source, neighbours in live.next.items():
        factor = 2.0 ** ((live.t0 - restored.t0) / 60)
        assert restored.next[source] == pytest.approx({t: w * factor for t, w in neighbours.items()})


def test_restoring_a_partition_leaves_out_what_was_counted_live_and_skips_bad_states():
    board = CoVisitation(half_life_s=60)
    states = [orjson.dumps({"items": [[item, "click", ts] for item, ts in events]}) for events in USERS.values()]
    states.insert(1, b"not json")
    users, events = asyncio.run(restore_partition(board, iter(states), before=4.0))
    assert users == 3 and events == 5  # u1: a, b (a again: a repeat), not c at 4.0; u2: b, c, d; u3: none
    assert set(board.next) == {"a", "b", "c", "d"}
    assert "c" not in board.next["a"] and "a" not in board.next["c"]  # u1's c and u3's events: at or after 4.0
