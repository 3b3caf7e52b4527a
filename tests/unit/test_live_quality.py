"""The demo's live quality (streams/cli/live_quality.py): the record in force before each event,
seen items excluded, against all-time popularity with seen items removed."""

from __future__ import annotations

import math

import pytest

from streams.cli import live_quality
from streams.cli.live_quality import LiveQuality, mcnemar_p


def test_scores_the_record_in_force_and_the_popularity_baseline(monkeypatch):
    monkeypatch.setattr(live_quality, "RANK_EVERY_S", 0.0)  # rank popularity at every event
    q = LiveQuality(k=2)
    q.event("u1", "a")  # no record yet for u1: not scored, but counted
    q.event("u2", "a")
    q.event("u2", "b")
    assert q.events == 0 and q.counts == {"a": 2, "b": 1}
    q.record("u1", "model", ["b", "c", "d"])  # only the first k count
    q.event("u1", "c")  # in the model's top 2 (b, c): a hit
    q.event("u1", "a")  # seen before: not scored
    q.record("u3", "popular", ["x", "y"])
    q.event("u3", "a")  # miss for the served record; a is the most popular item: popularity hits
    assert q.events == 2 and q.scored == {"model": 1, "popular": 1} and q.hits == {"model": 1, "popular": 0}
    assert q.hit_rate() == 0.5 and q.hit_rate("model") == 1.0 and q.hit_rate("popular") == 0.0
    # popularity for u1 before "c": counts a 2, b 1, minus seen {a} -> [b]: miss; for u3: [a, b]: hit
    assert q.popular_hits == 1 and q.popular_hit_rate() == 0.5
    assert "HR@2 served 0.5000 vs popularity 0.5000 (1.00x; 1 against 1 hits) over 2 events" in q.summary()


def test_nothing_scored_is_not_a_number():
    q = LiveQuality()
    assert math.isnan(q.hit_rate()) and math.isnan(q.popular_hit_rate())
    assert "n/a" in q.summary()


def test_the_paired_test_counts_events_hit_by_one_side_only(monkeypatch):
    monkeypatch.setattr(live_quality, "RANK_EVERY_S", 0.0)
    q = LiveQuality(k=1)
    for n in range(3):
        q.event(f"v{n}", "a")  # "a" is the most popular item
    q.record("u1", "model", ["a"])
    q.event("u1", "a")  # both hit: not discordant
    q.record("u2", "model", ["z"])
    q.event("u2", "a")  # popularity only
    q.record("u3", "model", ["b"])
    q.event("u3", "b")  # served only
    assert (q.only_served, q.only_popular) == (1, 1)
    assert q.difference_p() == 1.0 and "no difference" in q.summary()


def test_mcnemar_exact_p_values():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(9, 13) == pytest.approx(0.5235, abs=1e-4)  # 2 * P(X <= 9), X ~ Bin(22, 1/2)
    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_p(10, 0) == mcnemar_p(0, 10)
    q = LiveQuality()
    q.events, q.hits, q.popular_hits, q.only_served, q.only_popular = 100, {"popular": 9}, 13, 2, 6
    assert "popularity better, within chance: p = 0.29" in q.summary()
    q.only_served, q.only_popular = 0, 10
    assert "popularity better (p = 0.002)" in q.summary()
