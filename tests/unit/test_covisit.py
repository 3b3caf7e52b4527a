"""Item-to-item co-visitation (streams/ingest/covisit.py)."""

from __future__ import annotations

from streams.ingest.covisit import CoVisitation


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
