"""Decayed item popularity (streams/ingest/popularity.py)."""

from __future__ import annotations

import math

import pytest

from streams.ingest.popularity import Popularity, merge_top

EPOCH = 1_711_965_600.0  # a real epoch timestamp: 2 ** (t / half_life) would overflow a float


def ranking(tracker_or_top) -> list[str]:
    top = tracker_or_top.top(100) if isinstance(tracker_or_top, Popularity) else tracker_or_top
    return [item for item, _ in top]


def test_recent_events_outweigh_older_ones():
    pop = Popularity(half_life_s=60.0, capacity=100)
    for _ in range(3):
        pop.add("old", EPOCH)  # three events two half-lives ago are worth 0.75 now
    pop.add("new", EPOCH + 120.0)
    assert ranking(pop) == ["new", "old"]
    now = EPOCH + 120.0
    scores = {item: pop.score(log, now) for item, log in pop.top(2)}
    assert scores["new"] == pytest.approx(1.0)
    assert scores["old"] == pytest.approx(0.75)


def test_counts_add_up_within_a_half_life():
    pop = Popularity(half_life_s=3600.0, capacity=100)
    for n in range(5):
        pop.add("a", EPOCH + n)
    pop.add("b", EPOCH + 4)
    assert ranking(pop) == ["a", "b"]
    (item, log_a), (_, log_b) = pop.top(2)
    assert pop.score(log_a, EPOCH + 4) == pytest.approx(5.0, rel=1e-3)
    assert pop.score(log_b, EPOCH + 4) == pytest.approx(1.0)


def test_decay_half_life():
    pop = Popularity(half_life_s=10.0, capacity=100)
    pop.add("a", EPOCH)
    [(_, log)] = pop.top(1)
    assert pop.score(log, EPOCH + 10.0) == pytest.approx(0.5)
    assert pop.score(log, EPOCH + 30.0) == pytest.approx(0.125)


def test_no_overflow_with_real_timestamps_and_short_half_life():
    pop = Popularity(half_life_s=1.0, capacity=100)
    for n in range(1000):
        pop.add(f"i{n % 7}", EPOCH + n * 0.01)
    for _, log in pop.top(7):
        assert math.isfinite(log)
        score = pop.score(log, EPOCH + 10.0)
        assert math.isfinite(score) and score > 0
    # A score far ahead of "now" is capped, not inf.
    assert math.isfinite(pop.score(max(log for _, log in pop.top(1)), 0.0))


def test_capacity_is_bounded_and_keeps_the_most_popular():
    pop = Popularity(half_life_s=3600.0, capacity=10)
    for _ in range(5):
        for hot in range(3):
            pop.add(f"hot{hot}", EPOCH)
    for n in range(1000):
        pop.add(f"cold{n}", EPOCH)
        assert len(pop) <= 10 + 10 // 4
    assert {"hot0", "hot1", "hot2"} <= set(ranking(pop))


def test_top_n_is_best_first():
    pop = Popularity(half_life_s=3600.0, capacity=100)
    for n in range(5):
        for _ in range(n + 1):
            pop.add(f"i{n}", EPOCH)
    assert ranking(pop.top(3)) == ["i4", "i3", "i2"]


def test_merge_across_partitions_adds_scores_of_one_item():
    p0, p1 = Popularity(3600.0, 100), Popularity(3600.0, 100)
    for _ in range(3):
        p0.add("a", EPOCH)
    p0.add("b", EPOCH)
    for _ in range(3):
        p1.add("b", EPOCH)  # b: 1 + 3 = 4 over both partitions, more than a's 3
    p1.add("c", EPOCH)
    merged = merge_top([p0, p1], 3)
    assert ranking(merged) == ["b", "a", "c"]
    scores = dict(merged)
    assert p0.score(scores["b"], EPOCH) == pytest.approx(4.0)
    assert p0.score(scores["a"], EPOCH) == pytest.approx(3.0)
    assert merge_top([p0, p1], 2) == merged[:2]
    assert merge_top([], 5) == []


def test_restored_tracker_ranks_like_the_original():
    pop = Popularity(3600.0, 100)
    for n in range(20):
        pop.add(f"i{n % 4}", EPOCH + n)
    restored = Popularity(3600.0, 100, dict(pop.log_scores))
    assert restored.top(4) == pop.top(4)
    restored.add("i3", EPOCH + 30)
    pop.add("i3", EPOCH + 30)
    assert restored.top(4) == pop.top(4)


class Writes(dict):
    """A table that records the keys written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def __setitem__(self, key, value) -> None:
        self.written.append(key)
        super().__setitem__(key, value)


def test_a_partition_s_scores_are_written_only_with_its_own_events(monkeypatch):
    """Faust's ``table[key]`` writes to the current event's partition: counts of partition 0 that
    land while partition 1's event is handled wait for partition 0's next event to be written."""
    import streams.ingest.popularity as popularity

    monkeypatch.setattr(popularity, "FLUSH_S", 0.0)
    table = Writes()
    board = popularity.PopularityBoard(table, 3600, 100, settle_s=10)
    board.count(0, "a", EPOCH, b"u0")           # settling: nothing of partition 0 served yet
    board.count(1, "b", EPOCH + 20, b"u1")      # partition 1's event lands partition 0's count
    assert [item for item, _ in board.top(10)] == ["a"]
    assert table.written == []                  # partition 1 has nothing served; partition 0 waits
    board.count(0, "c", EPOCH + 40, b"u2")      # lands b (partition 1) and writes partition 0
    assert table.written == [b"p0"] and set(table[b"p0"]) == {"a"}
    board.count(1, "d", EPOCH + 41, b"u3")
    assert table.written == [b"p0", b"p1"] and set(table[b"p1"]) == {"b"}
