"""The ingest agent (streams/ingest/agent.py) and the records serving sends for what it accepted,
without a broker: ``agent.test_context()`` with ``store="memory://"``; the topics' ``send`` and
``streams.kafka.direct_writes.send_now`` / ``send_many`` are replaced by recorders, so nothing
reaches Kafka. Requests queued for recommendation are read back from ``sr.serving.pending``."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from types import SimpleNamespace

import pytest

import streams.ingest.agent
import streams.ingest.popularity
import streams.kafka.direct_writes
import streams.serving.service
import streams.wiring
from streams.kafka.monitoring import table_entries
from streams.ingest.dead_letters import DeadLetterMarks
from streams.serving.recommend import Request
from streams.ingest.user_state import event_key

NOW = time.time()


class Sent:
    """Records the ``send(key=..., value=...)`` calls of one topic."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes | None, object]] = []

    async def __call__(self, key=None, value=None, **kwargs):
        self.calls.append((key, value))

    @property
    def values(self) -> list:
        return [value for _, value in self.calls]


class SentNow:
    """Records ``send_now`` calls by topic; each is "delivered" at the next offset of its partition."""

    def __init__(self) -> None:
        self.by_topic: dict[str, Sent] = {}
        self.offsets: dict[tuple[str, int | None], int] = {}

    async def __call__(self, app, topic, key, value, partition=None, what=""):
        self.by_topic.setdefault(topic, Sent()).calls.append((key, value))
        offset = self.offsets[topic, partition] = self.offsets.get((topic, partition), -1) + 1
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(SimpleNamespace(topic=topic, partition=partition, offset=offset))
        return delivered

    async def many(self, app, topic, records, what="", partition=None):
        """Stands in for ``send_many``: one "delivery" per record."""
        return [(await self(app, topic, key, value, partition, what=what), 1) for key, value in records]

    def __getitem__(self, topic: str) -> Sent:
        return self.by_topic.setdefault(topic, Sent())


@pytest.fixture
def sr(make_settings, monkeypatch):
    app = streams.wiring.create(make_settings(partitions=1, http_port=1, serving_processes=False))
    now = SentNow()
    sent = SimpleNamespace(dlq=now[app.settings.topic_dlq], events=Sent(), recs=now[app.settings.topic_recommendations],
                           now=now)
    monkeypatch.setattr(app.core.events_topic, "send", sent.events)
    monkeypatch.setattr(streams.kafka.direct_writes, "send_now", now)
    monkeypatch.setattr(streams.ingest.agent, "send_now", now)
    monkeypatch.setattr(streams.serving.service, "send_many", now.many)
    monkeypatch.setattr(streams.kafka.direct_writes, "send_many", now.many)
    app.sent = sent
    yield app
    app.close()


def event(user="u1", item="i1", kind="click", ts=None, **extra) -> bytes:
    return json.dumps({"user_id": user, "item_id": item, "type": kind, "ts": ts or NOW - 60, **extra}).encode()


async def test_valid_event_updates_user_sequences_and_queues_a_request(sr):
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(event(item="i1", ts=NOW - 2, event_id="e1"), key=b"u1")
        await ingest.put(event(item="i2", kind="purchase", ts=NOW - 1, event_id="e2"), key=b"u1")
    state = sr.user_state("u1")
    assert state["items"] == [["i1", "click", NOW - 2], ["i2", "purchase", NOW - 1]]
    assert state["eids"] == [event_key("e1"), event_key("e2")] and state["n"] == 2
    [first, second] = await queued(sr)
    assert isinstance(second, Request)
    assert second.user_id == "u1" and second.history == [("i1", "click"), ("i2", "purchase")]
    assert second.event_ts == NOW - 1
    assert sr.sent.dlq.calls == [] and sr.sent.events.calls == []
    assert sr.popularity.tracker(0).top(1)[0][0] in ("i1", "i2")
    assert _metric(sr, 'streamrec_events_total{outcome="accepted"}') == 2


async def test_user_state_writes_reach_the_changelog_and_offsets_are_persisted(sr, monkeypatch):
    persisted = {}
    monkeypatch.setattr(sr.core.user_sequences.data, "set_persisted_offset",
                        lambda tp, offset: persisted.__setitem__((tp.topic, tp.partition), offset))
    changelog = sr.ingest.state_writer.topic
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(event(item="i1", ts=NOW - 2, event_id="e1"), key=b"u1")
        await ingest.put(event(item="i2", ts=NOW - 1, event_id="e2"), key=b"u1")
    # one batch: the changelog gets the user's latest state once, what the table holds
    assert [key for key, _ in sr.sent.now[changelog].calls] == [b"u1"]
    assert sr.sent.now[changelog].calls[-1][1] == sr.core.user_sequences.data[b"u1"]
    assert sr.user_state("u1")["n"] == 2
    assert persisted == {(changelog, 0): 0}       # each delivered offset, as Faust persists it


async def test_a_delivered_changelog_batch_persists_its_last_offset(sr, monkeypatch):
    persisted = {}
    monkeypatch.setattr(sr.core.user_sequences.data, "set_persisted_offset",
                        lambda tp, offset: persisted.__setitem__((tp.topic, tp.partition), offset))
    writer = sr.ingest.state_writer
    delivered = asyncio.get_running_loop().create_future()
    delivered.set_result(SimpleNamespace(topic=writer.topic, partition=0, offset=40))
    writer._on_delivered(5, delivered)            # a batch of 5 records at offsets 40..44
    assert persisted == {(writer.topic, 0): 44}
    failed = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("broker gone"))
    writer._on_delivered(3, failed)               # an undelivered batch persists nothing
    assert persisted == {(writer.topic, 0): 44}


async def test_duplicate_event_id_is_applied_once(sr):
    async with sr.app.agents["ingest"].test_context() as ingest:
        for _ in range(3):
            await ingest.put(event(event_id="same"), key=b"u1")
        await ingest.put(event(ts=NOW - 5), key=b"u1")  # derived id, replayed
        await ingest.put(event(ts=NOW - 5), key=b"u1")
    state = sr.user_state("u1")
    assert state["n"] == 2 and len(state["items"]) == 2
    assert len(await queued(sr)) == 2
    assert _metric(sr, 'streamrec_events_total{outcome="duplicate"}') == 3


async def test_duplicate_writes_the_state_to_the_changelog_again(sr):
    """After a kill, RocksDB can hold a state whose changelog record was never delivered; the
    event then comes back as a duplicate, which must put that state in the changelog."""
    changelog = sr.ingest.state_writer.topic
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(event(item="i1", event_id="e1"), key=b"u1")
        sr.sent.now[changelog].calls.clear()  # as if its changelog record had been lost
        await ingest.put(event(item="i1", event_id="e1"), key=b"u1")
    assert sr.sent.now[changelog].calls == [(b"u1", sr.core.user_sequences.data[b"u1"])]
    assert sr.user_state("u1")["n"] == 1


@pytest.mark.parametrize("raw, reason", [
    (b"this is not json", "not_json"),
    (b'["an", "array"]', "not_object"),
    (b'{"user_id": "u1", "type": "click"}', "missing_field"),
    (b'{"user_id": "", "item_id": "i1", "type": "click"}', "empty_field"),
    (b'{"user_id": "\\ud800", "item_id": "i1", "type": "click"}', "invalid_field"),
    (b'{"user_id": "u1", "item_id": "i1", "type": "like"}', "unknown_type"),
    (b'{"user_id": "u1", "item_id": "i1", "type": "click", "ts": 1e300}', "invalid_ts"),
    (b'{"user_id": "u1", "item_id": "' + b"x" * 70_000 + b'", "type": "click"}', "too_large"),
])
async def test_malformed_message_goes_to_the_dlq_with_its_reason(sr, raw, reason):
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(raw, key=b"u1")
        await ingest.put(event(), key=b"u1")  # the agent goes on after bad input
    [(key, value)] = sr.sent.dlq.calls
    assert key == b"u1"
    letter = json.loads(value)  # what goes on the wire
    assert letter["reason"] == reason and letter["error"]
    assert letter["topic"] == sr.settings.topic_events and letter["partition"] == 0 and letter["offset"] == 0
    limit = sr.settings.max_message_bytes
    assert base64.b64decode(letter["raw"]) == raw[:limit]
    assert letter["raw_truncated"] == (len(raw) > limit)
    assert sr.user_state("u1")["n"] == 1
    assert _metric(sr, f'streamrec_dlq_total{{reason="{reason}"}}') == 1
    assert _metric(sr, 'streamrec_events_total{outcome="rejected"}') == 1


async def test_message_keyed_by_another_user_is_republished_under_its_user(sr):
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(event(user="u2", ts=NOW - 3), key=b"not-u2")
        await ingest.put(event(user=7, ts=NOW - 3), key=None)
    assert sr.user_state("u2") is None  # applied when the re-keyed copy arrives
    [(key, value), (key7, _)] = sr.sent.events.calls
    assert key == b"u2" and key7 == b"7"
    copy = json.loads(value)
    assert copy["event_id"] == f"u2|i1|click|{NOW - 3!r}" and copy["ts"] == NOW - 3
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(value, key=key)
        await ingest.put(value, key=key)  # the copy dedupes like the original
    assert sr.user_state("u2")["n"] == 1


async def test_recommendations_one_record_per_user_excluding_seen_items(sr):
    async with sr.app.agents["ingest"].test_context() as ingest:
        for n in range(12):  # popularity: i0 (most events) .. i11
            for m in range(12 - n):
                await ingest.put(event(user=f"p{n}-{m}", item=f"i{n}", ts=NOW - 100), key=f"p{n}-{m}".encode())
        await ingest.put(event(user="u1", item="i0", ts=NOW - 1), key=b"u1")
    requests = [request for request in await queued(sr) if request.user_id in ("u1", "p3-0")]
    await sr.serving.emit(requests + requests[:1])  # a user twice in a batch: one record
    records = {key: json.loads(value) for key, value in sr.sent.recs.calls}
    assert len(sr.sent.recs.calls) == 2 and set(records) == {b"u1", b"p3-0"}
    rec = records[b"u1"]
    assert rec["source"] == "popular" and rec["user_id"] == "u1"
    ids = [item["item_id"] for item in rec["items"]]
    assert len(ids) == sr.settings.top_k and "i0" not in ids  # seen items excluded
    assert ids == [f"i{n}" for n in range(1, 11)]
    assert [item["item_id"] for item in records[b"p3-0"]["items"]][:3] == ["i0", "i1", "i2"]
    assert rec["event_ts"] == NOW - 1 and rec["model_version"] == 0
    assert _metric(sr, 'streamrec_recommendations_total{source="popular"}') == 2


async def test_malformed_message_read_again_is_not_dead_lettered_twice(sr):
    changelog = sr.core.dead_letters.changelog_topic.get_topic_name()
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(b"not json", key=b"u1")  # offset 0
        await ingest.put(b"{", key=b"u2")  # 1
        await ingest.put(event(event_id="e1"), key=b"u1")  # 2
        await handled(sr, 3)
        # the mark is written by the next message of the partition once the dead letter is delivered
        await ingest.put(event(event_id="e0"), key=b"u0")  # 3
        await handled(sr, 4)
        assert sr.sent.now[changelog].calls == [(b"p0", b"1")]
        ingest.sent_offset = 0  # a crash before the offsets were committed: read again
        await ingest.put(b"not json", key=b"u1")
        await ingest.put(b"{", key=b"u2")
        await ingest.put(event(event_id="e1"), key=b"u1")
        sr.ingest.dead_letter_marks = DeadLetterMarks()  # a new process: the mark comes from the table
        ingest.sent_offset = 1
        await ingest.put(b"{", key=b"u2")
        await ingest.put(event(event_id="e1"), key=b"u1")
        ingest.sent_offset = 4
        await ingest.put(b"[1]", key=b"u3")  # 4: new
    assert [key for key, _ in sr.sent.dlq.calls] == [b"u1", b"u2", b"u3"]
    assert [json.loads(value)["offset"] for _, value in sr.sent.dlq.calls] == [0, 1, 4]
    assert sr.user_state("u1")["n"] == 1
    assert _metric(sr, 'streamrec_events_total{outcome="rejected"}') == 3
    assert _metric(sr, 'streamrec_events_total{outcome="duplicate"}') == 3 + 2  # 3 malformed, 2 e1


async def test_popularity_ranking_is_reused_for_popular_refresh_s_then_redone(sr):
    async def clicks(item, n):
        async with sr.app.agents["ingest"].test_context() as ingest:
            for m in range(n):
                await ingest.put(event(user=f"{item}-{m}", item=item), key=f"{item}-{m}".encode())

    for n in range(6):
        await clicks(f"i{n}", 6 - n)  # i0 (6 events) .. i5 (1)
    assert [item for item, _ in sr.popularity.top(3)] == ["i0", "i1", "i2"]
    await clicks("hit", 10)
    assert [item for item, _ in sr.popularity.top(3)] == ["i0", "i1", "i2"]  # ranked less than a second ago
    assert [item for item, _ in sr.popularity.top(4)][0] == "hit"  # more than was ranked: ranked again
    ranked_at, n, ranked = sr.popularity._ranked
    sr.popularity._ranked = (ranked_at - streams.ingest.popularity.RANK_REFRESH_S, n, ranked)
    await clicks("hotter", 12)
    assert [item for item, _ in sr.popularity.top(3)] == ["hotter", "hit", "i0"]  # the old ranking expired


async def test_a_ranking_shorter_than_asked_is_not_reused(sr):
    async with sr.app.agents["ingest"].test_context() as ingest:
        await ingest.put(event(user="a", item="first"), key=b"a")
        await handled(sr, 1)
        assert [item for item, _ in sr.popularity.top(10)] == ["first"]
        await ingest.put(event(user="b", item="second"), key=b"b")
        await ingest.put(event(user="c", item="second"), key=b"c")
    # a user who saw "first" must still get something: the ranking of one item is not kept
    assert [item for item, _ in sr.popularity.top(10)] == ["second", "first"]


async def queued(sr) -> list:
    """The requests queued for recommendation now (at least one)."""
    return await sr.serving.pending.batch(100_000, 0.0)


async def handled(sr, n: int, timeout: float = 5.0) -> None:
    """Wait until the ingest agent has handled ``n`` messages in all and flushed their batches
    (``put`` returns once a message is buffered for the next batch)."""
    deadline = time.monotonic() + timeout
    while _metric(sr, "streamrec_ingest_batch_size_sum") < n:
        assert time.monotonic() < deadline, f"the ingest agent did not handle {n} messages in {timeout} s"
        await asyncio.sleep(0.005)


def _metric(sr, name: str) -> float:
    for line in sr.metrics.exposition().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_table_entries_of_a_rocksdb_store_is_rocksdb_s_estimate(tmp_path):
    import rocksdict

    dbs = [rocksdict.Rdict(str(tmp_path / f"p{n}")) for n in range(2)]
    for n, db in enumerate(dbs):
        for k in range(100 * (n + 1)):
            db[b"user-%d" % k] = b"{}"
    store = SimpleNamespace(_dbs_for_actives=lambda: iter(dbs))  # the one part of faust's Store used
    assert table_entries(SimpleNamespace(data=store)) == 300
    assert table_entries(SimpleNamespace(data={b"a": 1, b"b": 2})) == 2  # memory store: len()
    for db in dbs:
        db.close()


async def test_accepted_events_feed_co_visitation_and_the_gate_scores_the_record_in_force(sr):
    sr.serving.gate.sample = 1  # every user gets every source's list (the default samples: see below)
    async with sr.app.agents["ingest"].test_context() as ingest:
        for user in ("v1", "v2", "v3"):  # everyone goes a -> b
            await ingest.put(event(user=user, item="a", ts=NOW - 20), key=user.encode())
            await ingest.put(event(user=user, item="b", ts=NOW - 19), key=user.encode())
        await handled(sr, 6)
        assert [item for item, _ in sr.covisit.recommend(["a"], 1)] == ["b"]
        await sr.serving.emit(await queued(sr))  # records for v1..v3: the gate remembers every source's list
        await ingest.put(event(user="v1", item="c", ts=NOW - 18), key=b"v1")  # new to v1: scored
        await ingest.put(event(user="v2", item="a", ts=NOW - 18), key=b"v2")  # seen by v2: not scored
        await handled(sr, 8)
    gate = sr.serving.gate
    assert {src: gate.scores["short", src].events for src in ("model", "covisit", "popular")} == \
        {"model": 1, "covisit": 1, "popular": 1}
    assert gate.scores["short", "popular"].hits == 0.0  # c had never been seen: no source had it
    assert sr.serving.gate.report()["short"]["serving"] == "popular"  # not enough evidence yet


async def test_co_visitation_is_listed_where_it_serves_and_for_a_sample_elsewhere(sr):
    from streams.serving.recommend import Request

    gate = sr.serving.gate
    requests = [Request(f"user-{n}", [("a", "click")]) for n in range(400)]
    _, candidates, _ = sr.serving._batch(requests, None, scored=True)
    listed = [c is not None for c in candidates.covisit]
    assert 60 < sum(listed) < 140  # popularity serves "short": a sample, about 1 in gate_sample (4)
    _, candidates, _ = sr.serving._batch(requests, None, scored=False)
    assert candidates.covisit == [None] * len(requests)  # an HTTP answer: nobody scores it
    for n in range(int(gate.min_evidence)):  # now co-visitation is the best source for "short", clearly
        gate.remember(f"scored-{n}", "short", {"model": [], "covisit": ["c"], "popular": ["p"]})
        gate.score(f"scored-{n}", "c", False)
    assert gate.choice("short") == "covisit"
    for scored in (True, False):
        _, candidates, _ = sr.serving._batch(requests, None, scored=scored)
        assert all(c is not None for c in candidates.covisit)  # where it serves: everyone
    sr.serving.gate = None  # without the gate nothing would use the lists
    assert sr.serving._batch(requests, None, scored=True)[1].covisit is None


async def test_the_gate_is_given_the_blend_where_the_model_and_co_visitation_both_listed(sr):
    from streams.serving.recommend import Candidates, Request

    gate = sr.serving.gate
    requests = [Request("both", [("a", "click")]), Request("model-only", [("a", "click")]),
                Request("unlisted", [("a", "click")])]
    candidates = Candidates([("p", 1.0)], covisit=[[("c", 1.0)], [], None])
    sr.serving._remember(requests, candidates, [["m"], ["m"], ["m"]])
    for user in ("both", "model-only", "unlisted"):
        gate.score(user, "c", seen_before=False)
    scored = {src: gate.scores["short", src].events for src in ("model", "blend", "covisit", "popular")}
    assert scored == {"model": 3, "blend": 1, "covisit": 2, "popular": 3}
    assert gate.scores["short", "blend"].hits == 1.0   # fused ["m", "c"] held c


async def test_events_with_a_category_feed_the_category_source_and_the_users_last_category_lists_it(sr):
    sr.serving.gate.sample = 1  # every record lists every source
    async with sr.app.agents["ingest"].test_context() as ingest:
        for n, user in enumerate(("a", "b", "c")):
            await ingest.put(event(user=user, item="sneaker", ts=NOW - 30 + n, category="shoes"), key=user.encode())
        await ingest.put(event(user="d", item="boot", ts=NOW - 20, category="shoes"), key=b"d")
        await ingest.put(event(user="d", item="cap", ts=NOW - 19), key=b"d")  # no category: the last one stays
        await handled(sr, 5)
    assert sr.user_state("d")["c"] == "shoes" and "c" in sr.user_state("a")
    requests = await queued(sr)
    assert requests[-1].category == "shoes"
    batch, candidates, _ = sr.serving._batch(requests, None, scored=True)
    lists = dict(zip([r.user_id for r in batch], candidates.category))
    assert [item for item, _ in lists["d"]] == ["sneaker"]  # boot is d's own (cap has no category)
    assert [item for item, _ in lists["a"]] == ["boot"]
    sr.serving._remember(batch, candidates, [None] * len(batch))
    sr.serving.gate.score("d", "sneaker", seen_before=False)
    assert sr.serving.gate.scores["short", "category"].hits == 1.0
