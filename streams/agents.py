"""Faust agents: thin ``async for`` loops that call plain functions.

- ``ingest`` (topic ``events``, in batches of ``ingest_batch_size`` events, each handled in order
  as the current event, so every table write lands in the store and changelog partition of its
  own event): decode + validate (bad input -> ``events.dlq``, once per source offset even
  across crashes: ``streams.dead_letters``), apply the event to the user's state once (dedupe by
  ``event_id``; written with ``streams.direct_writes``), update popularity, queue the user; then
  send the batch's changelog records, before Faust acknowledges its events.
- ``recommend`` (a task reading :class:`streams.pending.PendingRequests` in micro-batches): one
  record per user of the batch (its latest event), computed in a worker thread, sent to
  ``recommendations``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from functools import partial
from typing import Any

from faust.streams import _current_event

from .app import StreamRec
from .direct_writes import send_many, send_now
from .events import Event, InvalidEvent, parse_event
from .popularity import merge_top
from .records import DeadLetter
from .serving import Payload, Request, recommend, record_payloads
from .user_state import apply_event, decode, encode, history

log = logging.getLogger(__name__)

POPULARITY_FLUSH_S = 5.0  # at most one popularity changelog write per partition per 5 s
DEAD_LETTER_MARK = b"p%d"  # key of a partition's mark in the dead_letters table
POPULAR_REFRESH_S = 1.0  # the popularity fallback's ranking is at most this old


async def handle_events(sr: StreamRec, events: list) -> None:
    """Process a batch of ``events`` messages in order, then send the table changes they made to
    the changelogs; Faust acknowledges the events after this returns."""
    for event in events:
        # Faust's stores write to and read from the database of the current event's partition,
        # which Stream.__aiter__ sets for one event at a time and take_events does not set at all
        _current_event.set(weakref.ref(event))
        await handle_event(sr, event)
    _current_event.set(None)
    await sr.state_writer.flush()
    await sr.dead_letter_writer.flush()
    sr.metrics.ingest_batch_size.observe(len(events))


async def handle_event(sr: StreamRec, event: Any) -> None:
    """Process one message of ``events`` (``event`` is a Faust event with ``.message``, and the
    current event); its table changes wait in the TableWriters for :func:`handle_events`."""
    s, metrics, msg = sr.settings, sr.metrics, event.message
    now = time.time()
    mark = sr.dead_letter_marks.to_persist(msg.partition)
    if mark is not None:
        sr.dead_letter_writer.put(msg.partition, DEAD_LETTER_MARK % msg.partition, mark)
    try:
        ev = parse_event(msg.value, max_bytes=s.max_message_bytes, max_future_s=s.max_future_s,
                         now=now, default_ts=msg.timestamp or now)
    except InvalidEvent as err:
        await dead_letter(sr, msg, err)
        return
    key = ev.user_id.encode()
    if msg.key != key:
        # A user's state lives in the partition of its key: re-publish keyed by user, with the
        # ts and event_id made explicit so the copy dedupes like the original would have.
        await sr.events_topic.send(key=key, value=json.dumps(ev.to_json()).encode())
        metrics.events.labels("rekeyed").inc()
        return
    raw = sr.user_sequences.get(key)
    new_state = apply_event(decode(raw), ev, seq_len=s.seq_len, dedupe_window=s.dedupe_window)
    if new_state is None:
        # Applied before, but perhaps only here: a kill between a table write and the delivery of
        # its changelog record leaves RocksDB ahead of the changelog, and the message (its offset
        # not committed) comes back as this duplicate. Writing the state again puts it in the
        # changelog before this offset can be committed, so a worker that restores the partition
        # from the changelog has the event too. The same value: harmless when it was there.
        sr.state_writer.put(msg.partition, key, raw)
        metrics.events.labels("duplicate").inc()
        return
    sr.state_writer.put(msg.partition, key, encode(new_state))  # = user_sequences[key] = ...
    _count_popularity(sr, msg.partition, ev)
    sr.model.note_item(ev.item_id, [item for item, _, _ in new_state["items"][:-1]])
    metrics.events.labels("accepted").inc()
    await sr.pending.put(Request(ev.user_id, history(new_state), ev.ts, now, msg.timestamp))


async def dead_letter(sr: StreamRec, msg: Any, err: InvalidEvent) -> None:
    """Send a malformed message to the DLQ with its reason, unless it was sent there before (a
    message read again after a crash: streams/dead_letters.py)."""
    marks, partition, metrics = sr.dead_letter_marks, msg.partition, sr.metrics
    if not marks.known(partition):
        marks.load(partition, sr.dead_letters.get(DEAD_LETTER_MARK % partition))
    if marks.written(partition, msg.offset):
        metrics.events.labels("duplicate").inc()
        return
    record = DeadLetter.of(err.reason, err.error, msg.value, msg.topic, partition, msg.offset,
                           max_raw_bytes=sr.settings.max_message_bytes)
    sent = await send_now(sr.app, sr.settings.topic_dlq, msg.key, record.to_bytes(), what="a dead letter")
    marks.sent(partition, msg.offset)
    sent.add_done_callback(partial(_dead_letter_delivered, marks, partition, msg.offset))
    metrics.dlq.labels(err.reason).inc()
    metrics.events.labels("rejected").inc()


def _dead_letter_delivered(marks, partition: int, offset: int, sent: asyncio.Future) -> None:
    if not sent.cancelled() and sent.exception() is None:
        marks.delivered(partition, offset)


def _count_popularity(sr: StreamRec, partition: int, ev: Event) -> None:
    """Count the event; persist the partition's popularity at most every POPULARITY_FLUSH_S (a
    crash loses at most those seconds of popularity, never user state)."""
    tracker = sr.popularity_for(partition)
    tracker.add(ev.item_id, ev.ts)
    now = time.monotonic()
    if now - sr.popularity_flushed.get(partition, 0.0) >= POPULARITY_FLUSH_S:
        sr.popularity_flushed[partition] = now
        sr.item_popularity[b"p%d" % partition] = dict(tracker.log_scores)


def popular_now(sr: StreamRec, n: int) -> list[tuple[str, float]]:
    """(item_id, decayed count as of the latest event) of the worker's partitions, best first.

    Ranked at most every POPULAR_REFRESH_S: ranking every partition's items for each micro-batch
    took 3-4 % of the event loop of a worker draining a backlog (py-spy, bench/throughput.py).
    A ranking shorter than ``n`` (fewer items counted yet: cheap to rank) is never reused, so a
    new worker's first rankings, made from a handful of items, do not stand for a second."""
    now = time.monotonic()
    ranked_at, ranked_n, ranked = sr.popular_cache
    if now - ranked_at < POPULAR_REFRESH_S and n <= ranked_n and len(ranked) >= n:
        return ranked[:n]
    trackers = list(sr.popularity.values())
    if not trackers:
        return []
    latest = max(t.latest_ts for t in trackers)
    ranked = [(item, trackers[0].score(log_score, latest)) for item, log_score in merge_top(trackers, n)]
    sr.popular_cache = (now, n, ranked)
    return ranked


async def recommend_batch(sr: StreamRec, requests: list[Request], k: int | None = None) -> list:
    """Records for ``requests`` (latest request per user), computed off the event loop."""
    batch, popular, k = _batch(sr, requests, k)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(sr.executor, recommend, batch, popular, k, sr.model)


def _batch(sr: StreamRec, requests: list[Request], k: int | None):
    latest: dict[str, Request] = {}
    for request in requests:
        latest[request.user_id] = request
    k = k or sr.settings.top_k
    return list(latest.values()), popular_now(sr, k + sr.settings.seq_len), k


async def emit_recommendations(sr: StreamRec, requests: list[Request]) -> None:
    """Compute and send the records of one micro-batch; observe their latencies."""
    metrics = sr.metrics
    batch, popular, k = _batch(sr, requests, None)
    loop = asyncio.get_running_loop()
    sent: list[Payload] = await loop.run_in_executor(sr.executor, record_payloads, batch, popular, k, sr.model)
    # one batch per partition, handed straight to the producer: see streams/direct_writes.py
    await send_many(sr.app, sr.settings.topic_recommendations,
                    [(user_id.encode(), value) for user_id, _, value in sent], what="recommendations")
    sources: dict[str, int] = {}
    for _, source, _ in sent:
        sources[source] = sources.get(source, 0) + 1
    for source, n in sources.items():
        metrics.recommendations.labels(source).inc(n)
    done = time.time()
    metrics.batch_size.observe(len(sent))
    for request in requests:
        metrics.latency.observe(done - request.arrived)
        if request.msg_ts:
            metrics.event_age.observe(max(0.0, done - request.msg_ts))


def table_entries(table) -> int:
    """Entries in the worker's partitions of ``table``. RocksDB: the sum of its own estimates
    (``rocksdb.estimate-num-keys``, which counts an overwritten key more than once until a
    compaction merges it), because ``len(table)`` walks every key in Python, and did so on the
    serving thread every 10 s: 0.18 s per 500,000 keys in rocksdict alone on the 2-core box, 37 µs
    for the estimate."""
    store = table.data
    dbs = getattr(store, "_dbs_for_actives", None)  # faust.stores.rocksdb.Store
    if dbs is None:
        return len(store)
    return sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in dbs())


def register(sr: StreamRec) -> None:
    app, s, metrics = sr.app, sr.settings, sr.metrics

    @app.agent(sr.events_topic, name="ingest")
    async def ingest(stream):
        async for events in stream.take_events(s.ingest_batch_size, s.ingest_batch_window_s):
            await handle_events(sr, events)

    @app.task
    async def recommend_loop():
        """Requests still queued when the worker stops get no record (their events are in state)."""
        while True:
            requests = await sr.pending.batch(s.batch_size, s.batch_window_s)
            try:
                await emit_recommendations(sr, requests)
            except Exception:  # a bug or a send failure must not stop recommendations for good
                log.exception("recommendations for a batch of %d events were not sent", len(requests))

    @app.timer(10.0)
    async def table_sizes():
        for name, table in (("user_sequences", sr.user_sequences), ("item_popularity", sr.item_popularity)):
            metrics.table_entries.labels(name).set(table_entries(table))

    @app.timer(2.0)
    async def consumer_lag():
        consumer = app.consumer
        lag = 0
        for tp in consumer.assignment():
            if tp.topic != s.topic_events:
                continue
            end = app.monitor.tp_end_offsets.get(tp) if app.monitor else None
            end = consumer.highwater(tp) if end is None else end
            read = app.monitor.tp_read_offsets.get(tp, -1) if app.monitor else -1
            if end is not None:
                lag += max(0, end - (read + 1))
        metrics.consumer_lag.set(lag)

    @app.task
    async def watch_model_updates():
        sr.model.start_watching()

    @app.timer(0.5)
    async def add_new_items():
        await asyncio.wrap_future(sr.model.add_new_items_async())

    @app.timer(2.0)
    async def lead_training():
        """Run the trainer on the group leader only (started once model-updates is read)."""
        from .trainer import StreamTrainer

        leader = s.train and app.is_leader()
        if leader and sr.trainer is None and sr.model.caught_up.is_set():
            sr.trainer = StreamTrainer(s, metrics, publish=_publisher(sr))
            sr.trainer.start(sr.model.latest_update)
            log.info("this worker leads the group: continuous training started")
        elif not leader and sr.trainer is not None:
            sr.trainer.stop()
            sr.trainer = None
            log.info("no longer the leader: continuous training stopped")
        staleness = sr.model.staleness()
        if staleness is not None:
            metrics.staleness.set(staleness)

    @app.on_partitions_revoked.connect
    async def drop_revoked_popularity(app, revoked, **kwargs):
        for tp in revoked:
            if tp.topic == s.topic_events:
                sr.popularity.pop(tp.partition, None)
                sr.dead_letter_marks.forget(tp.partition)


def _publisher(sr: StreamRec):
    """A function announcing model versions from the trainer thread (kafka-python, acks=all)."""
    from .model_store import MODEL_KEY
    from .produce import make_producer

    producer = make_producer(sr.settings)

    def publish(update) -> None:
        producer.send(sr.settings.topic_model_updates, key=MODEL_KEY, value=update.to_bytes()).get(timeout=30)

    return publish
