"""Suspicion of a promotion's fake users (streams/ingest/guard.py): the rule, what is taken back
from popularity and co-visitation, the quarantine in ingest, release, and the trainer."""

from __future__ import annotations

import base64
import json
import time

import orjson
import pytest

import streams.ingest.popularity
from streams.ingest.covisit import CoVisitation, restore_partition
from streams.ingest.guard import RELEASE_HEADER, SECOND_LOOK_S, SUSPICIOUS, BaseRate, evidence, signature, surprise, suspicious
from streams.ingest.popularity import Popularity, PopularityBoard
from streams.kafka.faust_patches.internals import partition_store
from streams.lifecycle.trainer import StreamTrainer
from streams.metrics import Metrics
from streams.serving.gate import FORGET_EVENTS
from streams.settings import load_settings

from test_guard import guarded_app
from test_ingest_agent import _metric, event


def evidence_of(hits: list[bool], memory: int = 50) -> list:
    ev = None
    for hit in hits:
        ev = evidence(ev, hit, memory)
    return ev


def test_a_user_mostly_on_popular_items_is_suspicious_only_against_a_low_base_rate():
    bandwagon = evidence_of([True, True, False, True, True, True, True])  # 6 of 7 on popular items
    assert suspicious(bandwagon, 0.02, lift=10, min_surprise=6)
    assert not suspicious(bandwagon, 0.2, lift=10, min_surprise=6)  # where everyone clicks them: the lift
    assert not suspicious(bandwagon, None, lift=10, min_surprise=6)  # no base rate yet
    few = evidence_of([True, True])  # too few events for chance not to explain them
    assert surprise(few, 0.02) < 6 and not suspicious(few, 0.02, lift=10, min_surprise=6)
    ordinary = evidence_of([False] * 40 + [True] * 3)
    assert not suspicious(ordinary, 0.02, lift=10, min_surprise=6)
    # the bound grows with the evidence and is 0 at or below the base rate
    assert surprise(evidence_of([True] * 8), 0.02) > surprise(evidence_of([True] * 4), 0.02) > 0
    assert surprise(evidence_of([True, False, False, False]), 0.25) == 0.0


def test_evidence_forgets_old_events():
    old_habit = evidence_of([True] * 20 + [False] * 200, memory=50)
    assert old_habit[1] / old_habit[0] < 0.01


def test_the_base_rate_is_the_share_of_first_events_on_popular_items_once_warm():
    rate = BaseRate(memory=1000, warm=10)
    for n in range(9):
        rate.observe(n == 0)
    assert rate.rate is None
    rate.observe(False)
    assert rate.rate == pytest.approx(0.1, abs=0.005)


def test_a_retracted_count_leaves_the_others_as_they_were():
    both, alone = Popularity(3600, 100), Popularity(3600, 100)
    for board in (both, alone):
        board.add("x", 1000.0)
        board.add("y", 1500.0)
    both.add("x", 2000.0)  # the quarantined user's
    both.retract("x", 2000.0)
    assert both.log_scores["x"] == pytest.approx(alone.log_scores["x"])
    both.retract("y", 1500.0)  # its only count: gone
    both.retract("gone", 10.0)  # never counted (or dropped): nothing
    assert "y" not in both.log_scores and set(both.log_scores) == {"x"}


def test_co_visitation_taken_back_leaves_only_the_other_users_weights():
    real = [("a", 10.0), ("b", 20.0), ("c", 30.0)]
    fake = [("a", 40.0), ("target", 50.0), ("b", 60.0)]
    both, alone = CoVisitation(3600), CoVisitation(3600)
    both.add_history(real)
    both.add_history(fake)
    alone.add_history(real)
    assert "target" in both.next["a"]
    both.retract_history(fake)
    assert "target" not in both.next and "target" not in both.next["a"]
    for source, neighbours in alone.next.items():
        assert both.next[source] == pytest.approx(neighbours)
        assert both.totals[source] == pytest.approx(alone.totals[source])


async def test_a_restored_partition_leaves_out_quarantined_users():
    board = CoVisitation(3600)
    fake = {"items": [["a", "click", 1.0], ["t", "click", 2.0]], "q": 3.0}
    real = {"items": [["a", "click", 1.0], ["b", "click", 2.0]]}
    assert await restore_partition(board, [orjson.dumps(fake), orjson.dumps(real)], before=100.0) == (1, 2)
    assert "t" not in board.next


POPULAR = [f"p{n}" for n in range(5)]


async def quarantine_scene(make_settings, monkeypatch, **settings):
    """800 real users (one event each, 20 of them on one of five popular items), then a fake user
    sending the five popular items and a target, interleaved; returns the app, its sends, the fake's events."""
    app, now = guarded_app(make_settings, monkeypatch, suspect_top_items=5, release_key="k" * 16, **settings)
    monkeypatch.setattr(streams.ingest.popularity, "RANK_REFRESH_S", 0.0)
    app.ingest.base_rate = BaseRate(memory=1000, warm=50)
    ts = time.time() - 1000
    fake = [event(user="fake", item=item, ts=ts + 100 + n, event_id=f"f{n}", category="shoes")
            for n, item in enumerate(["p0", "target", "p1", "p2", "p3", "p4", "target2"])]
    async with app.app.agents["ingest"].test_context() as ingest:
        for n in range(800):
            item = POPULAR[n // 2 % 5] if n < 20 else f"rare{n}"  # p0..p4: 4 real events each
            await ingest.put(event(user=f"real{n}", item=item, ts=ts + n * 0.1, category="shoes"),
                             key=f"real{n}".encode())
        for raw in fake:
            await ingest.put(raw, key=b"fake")
    return app, now, fake


async def test_a_fake_user_is_quarantined_and_their_counts_taken_back(make_settings, monkeypatch):
    app, now, fake = await quarantine_scene(make_settings, monkeypatch, popularity_settle_s=0)
    try:
        state = app.user_state("fake")
        assert "q" in state  # quarantined after a few of its events on popular items (p ~ 0.01)
        kept = len(state["items"])
        assert 2 <= kept <= len(fake) - 2
        assert [item for item, _, _ in state["items"]] == [json.loads(raw)["item_id"] for raw in fake[:kept]]
        suspects = [json.loads(v) for _, v in now[app.settings.topic_suspect].calls]
        assert [s["reason"] for s in suspects] == [SUSPICIOUS] * (len(fake) - kept)
        assert [base64.b64decode(s["raw"]) for s in suspects] == fake[kept:]  # this and every later event
        assert _metric(app, "streamrec_quarantined_users_total") == 1
        assert _metric(app, 'streamrec_suspect_events_total{reason="suspicious"}') == len(fake) - kept
        # what the fake added is gone: the target from popularity and co-visitation, and the
        # popular items count what the real users gave them
        tracker = app.popularity.trackers[0]
        assert "target" not in tracker.log_scores
        p0 = tracker.score(tracker.log_scores["p0"], tracker.latest_ts)
        assert 3.8 < p0 < 4.01  # its 4 real events, decayed a little; the fake's made it ~5
        assert not any("target" in neighbours for neighbours in app.covisit.next.values())
        assert "target" not in app.covisit.next
        shoes = dict(app.serving.categories.recommend("shoes", [], 1000))  # and from the category board
        assert "target" not in shoes and 3.8 < shoes["p0"] < 4.01
        # real users of the same items are not suspected
        assert all("q" not in app.user_state(f"real{n}") for n in range(800))
    finally:
        app.close()


async def test_a_quarantined_user_s_settling_counts_never_land_and_the_others_do(make_settings, monkeypatch):
    app, now, fake = await quarantine_scene(make_settings, monkeypatch, popularity_settle_s=600)
    try:
        assert "q" in app.user_state("fake")
        board = app.popularity
        served = board.trackers[0].log_scores
        # counted at once until the base rate was known (the first 50 users), settling since
        assert "rare20" in served and "rare700" not in served
        assert "target" not in board.raw[0].log_scores  # taken back from what suspicion ranks, too
        later = time.time() - 1000 + 800  # 600 s of event time after every event so far
        async with app.app.agents["ingest"].test_context() as ingest:
            await ingest.put(event(user="late", item="rare-late", ts=later), key=b"late")
        served = board.trackers[0].log_scores
        assert "rare700" in served and "rare-late" not in served  # the latest still settles
        assert "target" not in served
        p0 = board.trackers[0].score(served["p0"], board.trackers[0].latest_ts)
        assert 3.5 < p0 < 4.01  # the real users' 4, decayed over ~800 s; never the fake's
    finally:
        app.close()


async def test_without_suspicion_the_fake_user_counts(make_settings, monkeypatch):
    app, now, _ = await quarantine_scene(make_settings, monkeypatch, suspect_surprise=0)
    try:
        assert "q" not in app.user_state("fake") and now[app.settings.topic_suspect].calls == []
        assert "target" in app.popularity.trackers[0].log_scores
    finally:
        app.close()


async def test_a_released_user_is_trusted_from_then_on_and_counts_again(make_settings, monkeypatch):
    app, now, fake = await quarantine_scene(make_settings, monkeypatch, popularity_settle_s=0)
    try:
        kept = len(app.user_state("fake")["items"])
        assert "target" not in app.popularity.trackers[0].log_scores and "target" not in app.covisit.next
        held = fake[kept]
        later = event(user="fake", item="p9", ts=time.time() - 500, event_id="f9")
        async with app.app.agents["ingest"].test_context() as ingest:
            await ingest.put(held, key=b"fake", headers=[(RELEASE_HEADER, signature(b"k" * 16, b"fake", held))])
            await ingest.put(later, key=b"fake")
        state = app.user_state("fake")
        assert "q" not in state and state["ok"] == 1
        assert [item for item, _, _ in state["items"]][-2:] == [json.loads(held)["item_id"], "p9"]
        assert len(now[app.settings.topic_suspect].calls) == len(fake) - kept  # nothing more held
        # what the quarantine took back counts again: the target (the fake's second event) in
        # popularity and as p0's co-visited neighbour; p0 with the fake's event again: 5 counts
        # against one real user's item of the same minutes (4 without the fake's)
        tracker = app.popularity.trackers[0]
        assert "target" in tracker.log_scores

        def score(item: str) -> float:
            return tracker.score(tracker.log_scores[item], tracker.latest_ts)

        assert 4.9 < score("p0") / score("rare30") < 5.2
        assert "target" in app.covisit.next["p0"]
    finally:
        app.close()


def test_the_trainer_leaves_out_a_user_ingest_quarantined_until_released(tmp_path):
    s = load_settings({"data_dir": tmp_path, "store": "memory", "release_key": "k" * 16}, environ={})
    metrics = Metrics()
    trainer = StreamTrainer(s, metrics, publish=lambda update: None)
    ts = time.time() - 100
    for n in range(3):
        trainer.observe(event(user="fake", item=f"i{n}", ts=ts + n, event_id=f"e{n}"), None, b"fake")
    assert len(trainer.histories["fake"]) == 3
    trainer.observe_suspect(orjson.dumps({"reason": SUSPICIOUS, "raw": ""}), b"fake")
    trainer.observe_suspect(orjson.dumps({"reason": "rate_limited", "raw": ""}), b"other")
    assert "fake" not in trainer.histories and "other" not in trainer.quarantined
    trainer.observe(event(user="fake", item="i3", ts=ts + 3, event_id="e3"), None, b"fake")
    assert "fake" not in trainer.histories and metrics.train_suspect._value.get() == 1
    raw = event(user="fake", item="i4", ts=ts + 4, event_id="e4")
    trainer.observe(raw, None, b"fake", [(RELEASE_HEADER, signature(b"k" * 16, b"fake", raw))])
    trainer.observe(event(user="fake", item="i5", ts=ts + 5, event_id="e5"), None, b"fake")
    assert [item for item, _ in trainer.histories["fake"]] == ["i4", "i5"]


def test_what_was_settling_settles_again_on_a_restored_partition():
    board = PopularityBoard({}, 3600, 100, settle_s=600)
    stored = [["old", "click", 100.0], ["a", "click", 900.0], ["b", "click", 950.0], ["a", "click", 960.0]]
    board.resettle(0, stored, before=1000.0)
    assert len(board.settling) == 2 and set(board.raw[0].log_scores) == {"a", "b"}  # "old" landed before
    board.count(0, "live", 1520.0, b"u")  # the stream's clock passes 900 + 600, not 950 + 600
    assert set(board.trackers[0].log_scores) == {"a"}
    board.count(0, "live2", 1600.0, b"v")
    assert set(board.trackers[0].log_scores) == {"a", "b"}
    assert board.trackers[0].score(board.trackers[0].log_scores["a"], 900.0) == pytest.approx(1.0)  # once


def early_users_app(make_settings, monkeypatch, **settings):
    """A guarded worker app whose suspicion ranks the 5 most popular items (refreshed with every
    event) and knows its base rate after 400 users' first events: the stream's first users are
    counted before it is known."""
    app, now = guarded_app(make_settings, monkeypatch, suspect_top_items=5, popularity_settle_s=0, **settings)
    monkeypatch.setattr(streams.ingest.popularity, "RANK_REFRESH_S", 0.0)
    app.ingest.base_rate = BaseRate(memory=1000, warm=400)
    return app, now


async def test_a_fake_user_counted_before_the_base_rate_is_known_is_judged_once_it_is(make_settings, monkeypatch):
    app, now = early_users_app(make_settings, monkeypatch)
    ts = time.time() - 1000
    try:
        async with app.app.agents["ingest"].test_context() as ingest:
            for n in range(20):  # p0..p4 popular
                await ingest.put(event(user=f"real{n}", item=POPULAR[n // 2 % 5], ts=ts + n * 0.1), key=f"real{n}".encode())
            for n, item in enumerate(["p0", "target", "p1", "p2", "p3", "p4"]):  # all before the base rate is known
                await ingest.put(event(user="early-fake", item=item, ts=ts + 5 + n, event_id=f"f{n}"), key=b"early-fake")
        assert "q" not in app.user_state("early-fake")
        assert "target" in app.popularity.trackers[0].log_scores
        async with app.app.agents["ingest"].test_context() as ingest:
            for n in range(20, 800):
                await ingest.put(event(user=f"real{n}", item=f"rare{n}", ts=ts + 20 + n * 0.1), key=f"real{n}".encode())
        state = app.user_state("early-fake")
        assert "q" in state and len(state["items"]) == 6  # its events stay its own; its counts go
        assert "target" not in app.popularity.trackers[0].log_scores
        assert _metric(app, "streamrec_quarantined_users_total") == 1
        assert now[app.settings.topic_suspect].calls == []  # nothing of it was held: it was taken
        assert all("q" not in app.user_state(f"real{n}") for n in range(800))
    finally:
        app.close()


async def test_an_early_user_whose_items_were_not_yet_popular_is_judged_again_later(make_settings, monkeypatch):
    """The first judgement (the base rate just known) finds the early fake's filler unremarkable:
    nobody has clicked it yet. ``SECOND_LOOK_S`` of event time later the filler is popular, and the
    second look quarantines the fake and takes its counts back."""
    app, now = early_users_app(make_settings, monkeypatch)
    ts = time.time() - 2 * SECOND_LOOK_S - 1000
    filler = [f"q{n}" for n in range(5)]
    try:
        async with app.app.agents["ingest"].test_context() as ingest:
            for n in range(20):  # p0..p4 popular
                await ingest.put(event(user=f"real{n}", item=POPULAR[n // 2 % 5], ts=ts + n * 0.1), key=f"real{n}".encode())
            for n, item in enumerate(filler + ["target"]):  # before the base rate is known
                await ingest.put(event(user="early-fake", item=item, ts=ts + 5 + n, event_id=f"f{n}"), key=b"early-fake")
            for n in range(20, 800):  # the base rate is known: the fake is judged, and passes
                await ingest.put(event(user=f"real{n}", item=f"rare{n}", ts=ts + 20 + n * 0.1), key=f"real{n}".encode())
            assert "q" not in app.user_state("early-fake")
            for n in range(800, 850):  # the fake's filler becomes the most popular, still within the look's delay
                await ingest.put(event(user=f"real{n}", item=filler[n % 5], ts=ts + 200 + n * 0.1), key=f"real{n}".encode())
            assert "q" not in app.user_state("early-fake")
            assert "target" in app.popularity.trackers[0].log_scores
            await ingest.put(event(user="late", item="rare-late", ts=ts + 100 + SECOND_LOOK_S), key=b"late")
        state = app.user_state("early-fake")
        assert "q" in state and len(state["items"]) == 6
        assert "target" not in app.popularity.trackers[0].log_scores
        assert app.ingest.second_look is None  # looked at once more, not again
        assert all("q" not in app.user_state(f"real{n}") for n in range(850))
    finally:
        app.close()


async def test_users_counted_before_the_base_rate_are_judged_in_their_own_partition(make_settings, monkeypatch):
    """With RocksDB, each table partition is a database of its own: the users judged when the base
    rate is known live in other partitions than the event that makes it known, and are read and
    quarantined there (a read through the current event's partition found no state and judged nobody)."""
    app, now = early_users_app(make_settings, monkeypatch, store="rocksdb", partitions=2)
    ts = time.time() - 1000
    try:
        async with app.app.agents["ingest"].test_context() as ingest:
            for n in range(20):  # p0..p4 popular
                await ingest.put(event(user=f"real{n}", item=POPULAR[n // 2 % 5], ts=ts + n * 0.1),
                                 key=f"real{n}".encode(), partition=0)
            for n, item in enumerate(["p0", "target", "p1", "p2", "p3", "p4"]):  # before the base rate is known
                await ingest.put(event(user="early-fake", item=item, ts=ts + 5 + n, event_id=f"f{n}"),
                                 key=b"early-fake", partition=1)
            for n in range(20, 800):  # the base rate becomes known on an event of partition 0
                await ingest.put(event(user=f"real{n}", item=f"rare{n}", ts=ts + 20 + n * 0.1),
                                 key=f"real{n}".encode(), partition=0)
        table = app.core.user_sequences
        state = orjson.loads(partition_store(table, 1).get(b"early-fake"))
        assert "q" in state and len(state["items"]) == 6
        assert partition_store(table, 0).get(b"early-fake") is None  # nothing written to another partition
        assert "target" not in app.popularity.trackers[1].log_scores
        assert _metric(app, "streamrec_quarantined_users_total") == 1
    finally:
        app.close()


async def test_with_popularity_settling_the_worker_s_gate_counts_an_event_once_it_has_waited(make_settings, monkeypatch):
    """The wait popularity's counts have (popularity_settle_s) holds the gate's scored events too,
    on the event times serving is given: a user quarantined meanwhile never moves the choice."""
    app, now = guarded_app(make_settings, monkeypatch, popularity_settle_s=600.0)
    try:
        gate, ts = app.serving.gate, time.time() - 3600
        assert gate.settle_s == 600.0 and gate.settled is not gate.fresh
        gate.remember("fake", "short", {"popular": ["p"]})
        await app.serving.accept("fake", [("p", "click", ts)], ts, time.time(), None)
        assert gate.fresh.scores["short", "popular"].hits == 1 and gate.settled.scores["short", "popular"].events == 0
        app.ingest.on_quarantine(b"fake", [["p", "click", ts]], -1.0)  # what ingest's quarantine calls
        gate.remember("real", "short", {"popular": ["p"]})
        await app.serving.accept("real", [("x", "click", ts + 700)], ts + 700, time.time(), None)
        assert gate.settled.scores["short", "popular"].events == 0  # the fake's event never landed
        assert gate.fresh.scores["short", "popular"].events == 1 and gate.fresh.scores["short", "popular"].hits == 0
    finally:
        app.close()


async def test_a_quarantine_takes_the_users_scored_events_back_out_of_the_gate(make_settings, monkeypatch):
    app, now = guarded_app(make_settings, monkeypatch)
    try:
        gate = app.serving.gate
        assert gate.keep_scored == FORGET_EVENTS  # suspicion on: the gate keeps what to take back
        gate.remember("fake", "short", {"popular": ["p"]})
        gate.score("fake", "p", seen_before=False)
        assert gate.scores["short", "popular"].events == 1
        app.ingest.on_quarantine(b"fake", [["p", "click", 1.0]], -1.0)  # what ingest's quarantine calls
        assert gate.scores["short", "popular"].events == 0 and gate.scores["short", "popular"].hits == 0.0
    finally:
        app.close()
