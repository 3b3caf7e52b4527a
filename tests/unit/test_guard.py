"""Limits per user (streams/ingest/guard.py): the token bucket in event time, and one count per
user and item; through the ingest agent, a user over the limit has the excess in events.suspect
(reason and original bytes), not in state, popularity or the trainer."""

from __future__ import annotations

import base64
import json
import time

from streams.ingest.guard import RATE_LIMITED, RELEASE_HEADER, counts, released, signature, take, within_cap
from streams.lifecycle.trainer import StreamTrainer
from streams.metrics import Metrics
from streams.settings import load_settings

from test_ingest_agent import Sent, SentNow, _metric, event


def test_a_burst_then_the_rate():
    bucket, allowed = None, 0
    for _ in range(10):  # ten events at one instant: the burst of 5 passes
        result = take(bucket, 100.0, rate_per_s=1.0, burst=5)
        if result is not None:
            bucket, allowed = result, allowed + 1
    assert allowed == 5
    assert take(bucket, 100.5, 1.0, 5) is None  # half a token back
    bucket = take(bucket, 102.0, 1.0, 5)  # two tokens back, one taken
    assert bucket == [1.0, 102.0]
    assert take(bucket, 50.0, 1.0, 5) == [0.0, 102.0]  # an older event refills nothing
    assert take(None, 0.0, rate_per_s=0, burst=5) is None and take([0.0, 1.0], 1.0, 0, 5) == [0.0, 1.0]  # 0: no limit


def test_only_a_signature_under_the_release_key_releases():
    key, raw = b"user", b'{"user_id": "user"}'
    good = [(RELEASE_HEADER, signature(b"k" * 16, key, raw))]
    assert released(b"k" * 16, key, raw, good)
    assert not released(None, key, raw, good)  # no key set: nothing is released
    assert not released(b"x" * 16, key, raw, good)  # another key
    assert not released(b"k" * 16, key, raw + b" ", good)  # other bytes
    assert not released(b"k" * 16, b"other", raw, good)  # under another user's key
    assert not released(b"k" * 16, key, raw, [("other-header", good[0][1])]) and not released(b"k" * 16, key, raw, None)


def test_one_count_per_user_and_item():
    assert counts({"a", "b"}, "c") and not counts({"a", "b"}, "a") and counts((), "a")


def guarded_app(make_settings, monkeypatch, **limits):
    """A worker app (one partition unless ``limits`` say otherwise) with ``limits``, whose sends are
    recorded in the returned ``now``."""
    import streams.ingest.agent
    import streams.kafka.direct_writes
    import streams.serving.service
    import streams.wiring

    app = streams.wiring.create(make_settings(**{"partitions": 1, "http_port": 1, "serving_processes": False, **limits}))
    now = SentNow()
    monkeypatch.setattr(app.core.events_topic, "send", Sent())
    for module in (streams.kafka.direct_writes, streams.ingest.agent):
        monkeypatch.setattr(module, "send_now", now)
    monkeypatch.setattr(streams.serving.service, "send_many", now.many)
    monkeypatch.setattr(streams.kafka.direct_writes, "send_many", now.many)
    return app, now


async def test_a_user_over_the_limit_is_held_back_in_the_suspect_topic(make_settings, monkeypatch):
    app, now = guarded_app(make_settings, monkeypatch, rate_limit_per_s=1.0, rate_burst=3)
    ts = time.time() - 100
    raws = [event(user="bot", item="target", ts=ts, event_id=f"e{n}") for n in range(5)]
    raws.append(event(user="bot", item="later", ts=ts + 2, event_id="e5"))  # two tokens back
    raws.append(event(user="human", item="x", ts=ts, event_id="h"))
    try:
        async with app.app.agents["ingest"].test_context() as ingest:
            for raw in raws:
                await ingest.put(raw, key=json.loads(raw)["user_id"].encode())
        state = app.user_state("bot")
        assert [item for item, _, _ in state["items"]] == ["target"] * 3 + ["later"]
        suspects = [json.loads(v) for _, v in now[app.settings.topic_suspect].calls]
        assert [s["reason"] for s in suspects] == [RATE_LIMITED] * 2
        assert [base64.b64decode(s["raw"]) for s in suspects] == raws[3:5]  # the original bytes
        assert now[app.settings.topic_dlq].calls == []
        assert _metric(app, 'streamrec_suspect_events_total{reason="rate_limited"}') == 2
        # the target counted once for the bot (one count per user and item), once for nobody else
        assert _metric(app, "streamrec_uncounted_repeats_total") == 2
        assert app.user_state("human")["n"] == 1
    finally:
        app.close()


def test_the_hourly_cap_counts_a_window_s_first_events_and_opens_a_new_one_after_an_hour():
    window, fits = None, []
    for ts in (0.0, 10.0, 20.0, 30.0, 3599.0, 3600.0, 3601.0):
        ok, window = within_cap(window, ts, 3)
        fits.append(ok)
    assert fits == [True, True, True, False, False, True, True]
    assert window == [3600.0, 2]


async def test_a_user_over_the_hourly_cap_stops_counting_but_keeps_their_history(make_settings, monkeypatch):
    """A bot cycling through more items than its recent events hold, under the rate limit: each
    event is on an item new to its history, so only the cap keeps it from counting each one."""
    app, now = guarded_app(make_settings, monkeypatch, count_cap_per_hour=5, seq_len=3, covisit=True)
    ts = time.time() - 5000
    raws = [event(user="bot", item=f"c{n % 4}", ts=ts + n, event_id=f"b{n}") for n in range(12)]
    raws.append(event(user="bot", item="next-hour", ts=ts + 3700, event_id="late"))
    try:
        async with app.app.agents["ingest"].test_context() as ingest:
            for raw in raws:
                await ingest.put(raw, key=b"bot")
        assert app.user_state("bot")["n"] == 13  # every event in the history
        assert _metric(app, "streamrec_capped_events_total") == 7  # events 6-12 of the first hour
        assert _metric(app, "streamrec_uncounted_repeats_total") == 0  # each item left the 3 recent ones
        tracker = app.popularity.trackers[0]
        counted = {item: round(tracker.score(tracker.log_scores[item], ts + 5), 1) for item in ("c0", "c1", "c2", "c3")}
        assert counted == {"c0": 2.0, "c1": 1.0, "c2": 1.0, "c3": 1.0}  # events 1-5: c0 c1 c2 c3 c0
        assert "next-hour" in tracker.log_scores  # a new hour, a new window
    finally:
        app.close()


async def test_a_signed_release_is_taken_without_the_limit_and_a_forged_one_is_not(make_settings, monkeypatch):
    app, now = guarded_app(make_settings, monkeypatch, rate_limit_per_s=1.0, rate_burst=2, release_key="k" * 16)
    ts = time.time() - 100
    raws = [event(user="u", item=f"i{n}", ts=ts, event_id=f"e{n}") for n in range(5)]
    try:
        async with app.app.agents["ingest"].test_context() as ingest:
            await ingest.put(raws[0], key=b"u")
            await ingest.put(raws[1], key=b"u")  # the burst of 2 is spent
            await ingest.put(raws[2], key=b"u", headers=[(RELEASE_HEADER, signature(b"k" * 16, b"u", raws[2]))])
            await ingest.put(raws[3], key=b"u", headers=[(RELEASE_HEADER, signature(b"x" * 16, b"u", raws[3]))])
            await ingest.put(raws[4], key=b"u")
        assert [item for item, _, _ in app.user_state("u")["items"]] == ["i0", "i1", "i2"]
        suspects = [json.loads(v) for _, v in now[app.settings.topic_suspect].calls]
        assert [base64.b64decode(s["raw"]) for s in suspects] == raws[3:]  # the forged one and the next
        assert _metric(app, "streamrec_released_events_total") == 1
    finally:
        app.close()


def test_the_trainer_leaves_out_what_ingest_holds_back(tmp_path):
    s = load_settings({"data_dir": tmp_path, "store": "memory", "rate_limit_per_s": 1.0, "rate_burst": 3},
                      environ={})
    metrics = Metrics()
    trainer = StreamTrainer(s, metrics, publish=lambda update: None)
    ts = time.time() - 100
    for n in range(5):
        trainer.observe(event(user="bot", item=f"i{n}", ts=ts, event_id=f"e{n}"), None)
    assert [item for item, _ in trainer.histories["bot"]] == ["i0", "i1", "i2"]
    assert metrics.train_suspect._value.get() == 2


def test_the_trainer_takes_released_events_without_the_limit(tmp_path):
    s = load_settings({"data_dir": tmp_path, "store": "memory", "rate_limit_per_s": 1.0, "rate_burst": 3,
                       "release_key": "k" * 16}, environ={})
    trainer = StreamTrainer(s, Metrics(), publish=lambda update: None)
    ts = time.time() - 100
    for n in range(5):
        raw = event(user="bot", item=f"i{n}", ts=ts, event_id=f"e{n}")
        trainer.observe(raw, None, b"bot", [(RELEASE_HEADER, signature(b"k" * 16, b"bot", raw))] if n >= 3 else [])
    assert [item for item, _ in trainer.histories["bot"]] == [f"i{n}" for n in range(5)]
