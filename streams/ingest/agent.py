"""The ingest agent: ``events`` -> validated, deduplicated user state, dead letters, popularity.

The agent (topic ``events``) takes batches of ``ingest_batch_size`` events and handles each in
order as Faust's current event, so every table write lands in the store and changelog partition
of its own event:

- decode + validate; bad input -> ``events.dlq``, once per source offset even across crashes
  (:mod:`streams.ingest.dead_letters`);
- apply the event to the user's state once (dedupe by ``event_id``, :mod:`streams.ingest.user_state`),
  written with :class:`~streams.kafka.direct_writes.TableWriter`, unless the user is over the rate
  limit: then it goes to ``events.suspect`` like a dead letter (:mod:`streams.ingest.guard`), unless
  ``streamrec release`` signed it;
- count it in popularity (:class:`~streams.ingest.popularity.PopularityBoard`) unless its item is
  among the user's recent ones (one count per user and item), and weigh it as evidence of a
  promotion: a user whose events are suspicious is quarantined, their counts taken back, and their
  events from then on go to ``events.suspect`` (:mod:`streams.ingest.guard`);
- hand it on (``on_accepted``: ``streams.wiring`` queues the user for a recommendation);

then send the batch's changelog records, before Faust acknowledges its events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..app import WorkerApp
from ..kafka.direct_writes import TableWriter, send_now
from ..kafka.faust_patches.internals import set_current_event
from .dead_letters import DeadLetter, DeadLetterMarks
from .events import Event, InvalidEvent, parse_event
from .guard import (RATE_LIMITED, RELEASED, SECOND_LOOK_S, SUSPECT_REASONS, SUSPICIOUS, BaseRate, counts,
                    evidence, first_counts, history_evidence, suspicious, verdict, within_cap)
from .popularity import PopularityBoard
from .user_state import State, apply_event, decode, empty_state, encode, stamps

DEAD_LETTER_MARK = b"p%d"  # key of a partition's mark in the dead_letters table
# users counted before suspicion's base rate was known, judged when it is and once more: a pass of
# state reads on the event loop (~30 us each), so kept short
UNJUDGED_MAX = 5_000

# on_accepted(event, new state, arrival time at the worker, Kafka record timestamp, whether the
# event counts in popularity and co-visitation: see streams.ingest.guard.counts)
OnAccepted = Callable[[Event, State, float, "float | None", bool], Awaitable[None]]
# on_partition(partition, event time of its first valid event here): once per partition of
# `events` this worker handles, before that event is applied (co-visitation restores it)
OnPartition = Callable[[int, float], None]
# on_quarantine(the user's key, their stored events [[item, type, ts], ...], sign): -1 takes back
# what the stream's sources counted of them (a quarantine), +1 counts them again (a release)
OnQuarantine = Callable[[bytes, list, float], None]


class Ingest:
    """The ingest side of one worker (event loop only)."""

    def __init__(self, core: WorkerApp, popularity: PopularityBoard, on_accepted: OnAccepted,
                 on_partition: OnPartition | None = None, on_quarantine: OnQuarantine | None = None) -> None:
        self.core, self.settings, self.metrics = core, core.settings, core.metrics
        self.popularity, self.on_accepted, self.on_partition = popularity, on_accepted, on_partition
        self.on_quarantine = on_quarantine
        self.base_rate = BaseRate()  # suspicion's (streams.ingest.guard); learnt again after a restart
        # users counted before the base rate was known: judged on their stored events once it is
        self.unjudged: dict[bytes, int] | None = {}  # key -> partition; None once judged
        # and judged again (guard.SECOND_LOOK_S later): (event time of the second look, key -> partition)
        self.second_look: tuple[float, dict[bytes, int]] | None = None
        self.partitions_seen: set[int] = set()  # never forgotten: see on_partition
        self.dead_letter_marks = DeadLetterMarks()
        # user_sequences is written once per accepted event: through TableWriter, not table[key] = ...
        self.state_writer = TableWriter(core.app, core.user_sequences)
        self.dead_letter_writer = TableWriter(core.app, core.dead_letters)
        for reason in SUSPECT_REASONS:
            self.metrics.suspect.labels(reason)  # exported at 0 before the first one

    async def handle_events(self, events: list) -> None:
        """Process a batch of ``events`` messages in order, then send the table changes they made
        to the changelogs; Faust acknowledges the events after this returns."""
        for event in events:
            set_current_event(event)
            await self.handle_event(event)
        set_current_event(None)
        stages = self.metrics.stages
        stages.start()
        await self.state_writer.flush()
        await self.dead_letter_writer.flush()
        stages.mark("changelog")
        stages.observe()  # and the serving stages of the micro-batches sent meanwhile
        self.metrics.ingest_batch_size.observe(len(events))

    async def handle_event(self, event: Any) -> None:
        """Process one message of ``events`` (``event`` is a Faust event with ``.message``, and the
        current event); its table changes wait in the TableWriters for :meth:`handle_events`."""
        s, metrics, msg = self.settings, self.metrics, event.message
        stages, now = metrics.stages, time.time()
        stages.start()
        mark = self.dead_letter_marks.to_persist(msg.partition)
        if mark is not None:
            self.dead_letter_writer.put(msg.partition, DEAD_LETTER_MARK % msg.partition, mark)
        try:
            ev = parse_event(msg.value, max_bytes=s.max_message_bytes, max_future_s=s.max_future_s,
                             now=now, default_ts=msg.timestamp or now)
        except InvalidEvent as err:
            stages.mark("decode")
            await self.dead_letter(msg, err)
            return
        stages.mark("decode")
        if msg.partition not in self.partitions_seen:
            self.partitions_seen.add(msg.partition)
            if self.on_partition is not None:
                self.on_partition(msg.partition, ev.ts)
        key = ev.user_id.encode()
        if msg.key != key:
            # A user's state lives in the partition of its key: re-publish keyed by user, with the
            # ts and event_id made explicit so the copy dedupes like the original would have.
            await self.core.events_topic.send(key=key, value=json.dumps(ev.to_json()).encode())
            metrics.events.labels("rekeyed").inc()
            return
        raw = self.state_writer.get(msg.partition, key)
        state = decode(raw)
        new_state = apply_event(state, ev, seq_len=s.seq_len, dedupe_window=s.dedupe_window)
        if new_state is None:
            # Applied before, but perhaps only here: a kill between a table write and the delivery
            # of its changelog record leaves RocksDB ahead of the changelog, and the message (its
            # offset not committed) comes back as this duplicate. Writing the state again puts it
            # in the changelog before this offset can be committed, so a worker that restores the
            # partition from the changelog has the event too. The same value: harmless when it was there.
            self.state_writer.put(msg.partition, key, raw)
            metrics.events.labels("duplicate").inc()
            return
        judged, bucket = verdict(s, state.get("rl") if state else None, ev.ts, msg.key, msg.value, msg.headers)
        if judged == RATE_LIMITED:
            stages.mark("state")
            await self.hold_back(msg, RATE_LIMITED, f"over {s.rate_burst:g} events at once or "
                                 f"{s.rate_limit_per_s:g} per second on average")
            return
        if judged == RELEASED:
            metrics.released.inc()  # signed by `streamrec release`: no limit, no tokens spent
            if new_state.pop("q", None) is not None:  # released from quarantine: trusted from now on
                new_state["ok"] = 1
                self.recount(msg.partition, key, state)
        elif state is not None and "q" in state:
            stages.mark("state")
            await self.hold_back(msg, SUSPICIOUS, "quarantined: see the user's first suspicious event")
            return
        if bucket is not None:
            new_state["rl"] = bucket
        counted = counts({item for item, *_ in state["items"]} if state else (), ev.item_id)
        repeat = not counted
        if counted and s.count_cap_per_hour:
            counted, new_state["cw"] = within_cap(new_state.get("cw"), ev.ts, s.count_cap_per_hour)
            if not counted:
                metrics.capped.inc()
        if counted and s.suspect_surprise and not new_state.get("ok"):
            popular = self.popularity.popular(s.suspect_top_items)
            on_popular = ev.item_id in popular
            if "sx" not in new_state and len(popular) >= s.suspect_top_items:  # a full ranking to go by
                self.base_rate.observe(on_popular)
            if self.unjudged is not None:
                if self.base_rate.rate is None:
                    if len(self.unjudged) < UNJUDGED_MAX:
                        self.unjudged[key] = msg.partition
                else:
                    self.judge_unjudged(but=key, ts=ev.ts)  # this user is judged below, with this event
            elif self.second_look is not None and ev.ts >= self.second_look[0]:
                users, self.second_look = self.second_look[1], None
                self.judge(users, but=key)
            sx = evidence(new_state.get("sx"), on_popular, s.suspect_memory)
            if suspicious(sx, self.base_rate.rate, s.suspect_lift, s.suspect_surprise):
                await self.quarantine(msg, key, state, sx, self.base_rate.rate)
                return
            new_state["sx"] = sx
        self.state_writer.put(msg.partition, key, encode(new_state))  # = user_sequences[key] = ...
        stages.mark("state")
        if counted:
            # settling only once someone can be suspected: a new worker serves popularity at once
            self.popularity.count(msg.partition, ev.item_id, ev.ts, key, settle=self.base_rate.rate is not None)
        elif repeat:
            metrics.uncounted.inc()
        metrics.events.labels("accepted").inc()
        stages.mark("popularity")
        await self.on_accepted(ev, new_state, now, msg.timestamp, counted)

    async def quarantine(self, msg: Any, key: bytes, state: State | None, sx: list, base_rate: float) -> None:
        """The user's events are suspicious: quarantine them and hold this event back."""
        s = self.settings
        self.quarantine_state(msg.partition, key, state or empty_state(), sx)
        self.metrics.stages.mark("state")
        n, k = sx
        await self.hold_back(msg, SUSPICIOUS, f"{k / n:.0%} of the user's recent events on the {s.suspect_top_items} "
                             f"most popular items, {k / n / base_rate:.0f} x the stream's {base_rate:.1%}")

    def quarantine_state(self, partition: int, key: bytes, state: State, sx: list) -> None:
        """Take the user's recent counts back from popularity and co-visitation and mark their state
        quarantined (with this change of the current event)."""
        for item, ts in first_counts(stamps(state["items"])):  # what was counted
            self.popularity.retract(partition, item, ts)
        self.popularity.cancel(key)  # and what is still settling never lands
        if self.on_quarantine is not None:
            self.on_quarantine(key, state["items"], -1.0)
        self.state_writer.put(partition, key, encode({**state, "sx": sx, "q": time.time()}))
        self.metrics.quarantined.inc()

    def recount(self, partition: int, key: bytes, state: State) -> None:
        """A released user's stored events count again where the quarantine took them back."""
        for item, ts in first_counts(stamps(state["items"])):
            self.popularity.count(partition, item, ts, settle=False)
        if self.on_quarantine is not None:
            self.on_quarantine(key, state["items"], 1.0)

    def judge_unjudged(self, but: bytes, ts: float) -> None:
        """The base rate is known (at event time ``ts``): judge the users counted before (``but``
        one), and look at those not quarantined again ``SECOND_LOOK_S`` later."""
        unjudged, self.unjudged = self.unjudged or {}, None
        self.second_look = (ts + SECOND_LOOK_S, self.judge(unjudged, but))

    def judge(self, users: dict[bytes, int], but: bytes) -> dict[bytes, int]:
        """Judge ``users`` (key -> partition; ``but`` one, whose event is being applied) on their
        stored events against the popular items now; returns those left as they were."""
        s, left = self.settings, {}
        popular = self.popularity.popular(s.suspect_top_items)
        for key, partition in users.items():
            if key == but:
                left[key] = partition
                continue
            state = decode(self.state_writer.get(partition, key))  # in its own partition
            if state is None or "q" in state or state.get("ok"):
                continue
            sx = history_evidence(stamps(state["items"]), popular, s.suspect_memory)
            if sx is not None and suspicious(sx, self.base_rate.rate, s.suspect_lift, s.suspect_surprise):
                self.quarantine_state(partition, key, state, sx)
            else:
                left[key] = partition
        return left

    async def dead_letter(self, msg: Any, err: InvalidEvent) -> None:
        """Send a malformed message to the DLQ with its reason, unless it was sent there before (a
        message read again after a crash: streams/ingest/dead_letters.py)."""
        if await self._park(msg, self.settings.topic_dlq, err.reason, err.error, "a dead letter"):
            self.metrics.dlq.labels(err.reason).inc()
            self.metrics.events.labels("rejected").inc()

    async def hold_back(self, msg: Any, reason: str, why: str) -> None:
        """Send a valid but suspect event to ``events.suspect``, once, as a dead letter is sent."""
        if await self._park(msg, self.settings.topic_suspect, reason, why, "a suspect event"):
            self.metrics.suspect.labels(reason).inc()
            self.metrics.events.labels("suspect").inc()

    async def _park(self, msg: Any, topic: str, reason: str, error: str, what: str) -> bool:
        """Write ``msg`` to ``topic`` in a dead-letter record; False (and counted as a duplicate)
        when it was written there before."""
        marks, partition, metrics = self.dead_letter_marks, msg.partition, self.metrics
        if not marks.known(partition):
            marks.load(partition, self.core.dead_letters.get(DEAD_LETTER_MARK % partition))
        if marks.written(partition, msg.offset):
            metrics.events.labels("duplicate").inc()
            return False
        record = DeadLetter.of(reason, error, msg.value, msg.topic, partition, msg.offset,
                               max_raw_bytes=self.settings.max_message_bytes)
        sent = await send_now(self.core.app, topic, msg.key, record.to_bytes(), what=what)
        marks.sent(partition, msg.offset)
        sent.add_done_callback(partial(_dead_letter_delivered, marks, partition, msg.offset))
        return True

    def register(self) -> None:
        """The ingest agent, and forgetting revoked partitions."""
        app, s = self.core.app, self.settings

        @app.agent(self.core.events_topic, name="ingest")
        async def ingest(stream):
            async for events in stream.take_events(s.ingest_batch_size, s.ingest_batch_window_s):
                await self.handle_events(events)

        @app.on_partitions_revoked.connect
        async def forget_revoked(app, revoked, **kwargs):
            for tp in revoked:
                if tp.topic == s.topic_events:
                    self.popularity.forget(tp.partition)
                    self.dead_letter_marks.forget(tp.partition)


def _dead_letter_delivered(marks: DeadLetterMarks, partition: int, offset: int, sent: asyncio.Future) -> None:
    if not sent.cancelled() and sent.exception() is None:
        marks.delivered(partition, offset)
