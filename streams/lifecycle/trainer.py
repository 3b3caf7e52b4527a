"""Continuous training on the leader: events -> training sequences -> incremental updates ->
versioned checkpoints announced on ``model-updates``.

The trainer reads ``events`` with its own consumer (every partition, no consumer group), so it
learns from the whole stream whatever partitions its worker owns, and ingestion never waits for
it. It reads ``events.suspect`` too, for the users ingest quarantines (streams/ingest/guard.py:
ingest's verdict on them needs the worker's popularity), and trains on none of their events until
one of them is released. Between the reader and the update loop sits a bounded queue: when training falls behind,
sequences are dropped and counted (``streamrec_train_dropped_total``), never silently.

What to train on and when to announce is :class:`~streams.lifecycle.training.Training`'s: once a
version is in force, a new one is announced only when it beats that version on the most recent
sequences, held back from training until it has been judged on them
(``streams/lifecycle/promotion.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from array import array
from collections import OrderedDict

import orjson

from model.checkpoint import load_checkpoint
from model.encoder import EncoderConfig
from model.incremental import OnlineTrainer
from model.objectives import ObjectiveConfig
from model.recommender import Recommender

from ..ingest.events import InvalidEvent, parse_event
from ..ingest.guard import RATE_LIMITED, RELEASED, SUSPICIOUS, verdict
from ..kafka.clients import watch_consumer
from ..metrics import Metrics
from ..settings import Settings, objective_weights
from ..tuning import lower_thread_priority
from .model_store import ModelStore, ModelUpdate, verify
from .training import UPDATE_BATCH, Training

log = logging.getLogger(__name__)

MAX_USERS = 100_000  # users whose recent items the reader remembers (least recently seen dropped)
# The reader fetches in large batches, pausing when it has caught up: every fetch of a second
# consumer of ``events`` costs the broker (the embedded one lists its stored batches on each), and
# training does not need events within milliseconds.
READ_MAX_RECORDS = 20_000
READ_PAUSE_S = 0.5


def initial_recommender(settings: Settings, latest: ModelUpdate | None):
    """Continue from the version in force, else the configured checkpoint, else a fresh model."""
    if latest is not None:
        try:
            return Recommender.from_checkpoint(str(verify(latest)))
        except Exception as exc:
            log.error("cannot continue from version %d (%s); starting afresh", latest.version, exc)
    if settings.model_checkpoint is not None:
        return Recommender.from_checkpoint(str(settings.model_checkpoint))
    return Recommender.fresh(EncoderConfig(max_len=settings.seq_len))


def online_trainer(settings: Settings, rec: Recommender) -> OnlineTrainer:
    """The online trainer of ``rec`` with the worker's training settings."""
    return OnlineTrainer(rec, lr=settings.train_lr, replay_capacity=settings.replay_capacity,
                         objectives=ObjectiveConfig(weights=objective_weights(settings.train_objectives)),
                         device=None if settings.train_device == "auto" else settings.train_device)


def initial_trainer(settings: Settings, latest: ModelUpdate | None) -> tuple[Recommender, OnlineTrainer]:
    """The recommender to continue (:func:`initial_recommender`) and its online trainer; continuing
    from the version in force, the trainer gets back that version's optimizer state and replay
    buffer, so a restarted or new leader resumes training instead of starting it over."""
    rec = initial_recommender(settings, latest)
    trainer = online_trainer(settings, rec)
    if latest is not None and rec.version == latest.version:
        try:
            ck = load_checkpoint(str(verify(latest)))
        except Exception as exc:  # the model loaded: train on without the optimizer state
            log.warning("trainer state of version %d not read (%s)", latest.version, exc)
        else:
            restored = trainer.restore(ck.get("optimizer"), ck.get("replay"))
            log.info("continuing version %d with its %s", latest.version, " and ".join(restored) or "weights only")
    return rec, trainer


class StreamTrainer:
    def __init__(self, settings: Settings, metrics: Metrics, publish, quality=dict) -> None:
        """``publish(update)`` announces a version (called from the training thread);
        ``quality()``: the live quality gate's scores, written into every version's record."""
        self.settings, self.metrics, self.publish, self.quality = settings, metrics, publish, quality
        self.store = ModelStore(settings.model_dir, settings.model_keep_versions)
        self.queue: queue.Queue = queue.Queue(maxsize=settings.train_queue_size)
        self.histories: OrderedDict[str, list[tuple]] = OrderedDict()  # Event.step per event
        # per user, hashes of the event ids of the remembered events: a message read twice (a
        # replay after a crash, or ingest's re-keyed copy of it) is trained on once, as ingest
        # applies it once
        self.event_hashes: dict[str, array] = {}
        self.buckets: dict[str, list] = {}  # per user, ingest's rate limit (streams/ingest/guard.py)
        # users ingest quarantined (their `suspicious` records in the suspect topic, which it reads
        # too: ingest's verdict needs the worker's popularity, which the trainer does not have)
        self.quarantined: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.version = 0
        self.training: Training | None = None  # once the training thread has its model
        self._rollback: ModelUpdate | None = None  # a rollback announced on model-updates, to judge against

    # --- reader ---------------------------------------------------------------------------------
    def offer(self, history: list[tuple]) -> bool:
        try:
            self.queue.put_nowait(history)
            return True
        except queue.Full:
            self.metrics.train_dropped.inc()
            return False

    def observe(self, raw: bytes, ts: float | None, key: bytes | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        """One raw ``events`` message (its value, Kafka timestamp, key and headers): remember the
        user's sequence and queue it for training."""
        s = self.settings
        now = time.time()
        try:
            ev = parse_event(raw, max_bytes=s.max_message_bytes, max_future_s=s.max_future_s, now=now,
                             default_ts=ts or now)
        except InvalidEvent:
            return  # ingest sends it to the DLQ
        seen = self.event_hashes.setdefault(ev.user_id, array("q"))
        eid = hash(ev.event_id)
        if eid in seen:
            self.metrics.train_duplicates.inc()
            return
        # the same verdict as ingest's on the same events: suspect ones are not trained on
        judged, bucket = verdict(s, self.buckets.get(ev.user_id), ev.ts, key, raw, headers)
        if judged == RELEASED:
            self.quarantined.pop(ev.user_id, None)
        if judged == RATE_LIMITED or ev.user_id in self.quarantined:
            self.metrics.train_suspect.inc()
            return
        if bucket is not None:
            self.buckets[ev.user_id] = bucket
        seen.append(eid)
        if len(seen) > s.seq_len:
            del seen[0]
        history = self.histories.pop(ev.user_id, [])
        history = (history + [ev.step()])[-s.seq_len:]
        self.histories[ev.user_id] = history
        if len(self.histories) > MAX_USERS:
            dropped, _ = self.histories.popitem(last=False)
            self.event_hashes.pop(dropped, None)
            self.buckets.pop(dropped, None)
        if len(history) >= 2:
            self.offer(list(history))

    def observe_suspect(self, raw: bytes, key: bytes | None) -> None:
        """One ``events.suspect`` record: a user ingest quarantined is not trained on any more (and
        what is remembered of them is forgotten) until a released event of theirs comes."""
        user = (key or b"").decode("utf-8", "replace")
        try:
            suspicious = orjson.loads(raw).get("reason") == SUSPICIOUS
        except (orjson.JSONDecodeError, AttributeError):
            return
        if suspicious and user not in self.quarantined:
            self.quarantined[user] = None
            self.histories.pop(user, None)
            if len(self.quarantined) > MAX_USERS:
                self.quarantined.popitem(last=False)

    def _read(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = watch_consumer(self.settings, [self.settings.topic_events, self.settings.topic_suspect],
                                              from_beginning=False)
                started = time.thread_time()  # this thread's CPU: the poll's waiting does not count
                polled = consumer.poll(timeout_ms=500, max_records=READ_MAX_RECORDS)
                for records in polled.values():
                    for record in records:
                        if record.topic == self.settings.topic_suspect:
                            self.observe_suspect(record.value, record.key)
                        else:
                            self.observe(record.value, record.timestamp / 1000 if record.timestamp else None,
                                         record.key, record.headers)
                self.metrics.stage_seconds.labels("train_read").observe(time.thread_time() - started)
                self.metrics.train_queue.set(self.queue.qsize())
                if sum(map(len, polled.values())) < READ_MAX_RECORDS:  # caught up: let events gather
                    self._stop.wait(READ_PAUSE_S)
            except Exception as exc:
                log.warning("trainer reader: %s; retrying", exc)
                consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()

    # --- training -------------------------------------------------------------------------------
    def _train(self, latest: ModelUpdate | None) -> None:
        rec, trainer = initial_trainer(self.settings, latest)
        self.version = max([rec.version, latest.version if latest else 0, *self.store.versions()])
        training = self.training = Training(self.settings, rec, trainer, self.metrics,
                                            in_force=rec.snapshot() if latest is not None else None)
        if latest is None and self.settings.model_checkpoint is not None:
            training.in_force = rec.snapshot()
            self._publish(training.in_force, {"source": "pretrained"})  # serve the pretrained model at once
        last_publish = time.monotonic()
        while not self._stop.is_set():
            self._follow_rollback()
            training.learn(self._take(UPDATE_BATCH, timeout=1.0))
            if time.monotonic() - last_publish < self.settings.publish_interval_s:
                continue
            judged, version, metrics = training.judge()
            if version is not None:
                self._publish(version, metrics)
            if judged:
                last_publish = time.monotonic()

    def follow(self, update: ModelUpdate) -> None:
        """A version announced on ``model-updates`` (the watcher's thread). After a rollback the
        version in force is the rolled-back one: candidates are judged against it from then on."""
        if update.rollback:
            self._rollback = update

    def _follow_rollback(self) -> None:
        if self._rollback is None or self.training is None:
            return
        update, self._rollback = self._rollback, None
        try:
            self.training.in_force = Recommender.from_checkpoint(str(verify(update)))
        except Exception as exc:
            log.error("rollback to version %d not followed (%s)", update.version, exc)
        else:
            log.info("rolled back to version %d: candidates are judged against it", update.version)

    def _take(self, n: int, timeout: float) -> list:
        batch = []
        deadline = time.monotonic() + timeout
        while len(batch) < n:
            try:
                batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _publish(self, snapshot: Recommender, metrics: dict) -> None:
        """Save and announce ``snapshot`` (the training's version in force) as the next version."""
        metrics = {**metrics, "gate": self.quality()}
        self.version += 1
        snapshot.version = self.version
        trainer = self.training.trainer
        update = self.store.save(snapshot, metrics=metrics, optimizer_state=trainer.optimizer_state(),
                                 replay_state=trainer.replay_state())
        self.publish(update)
        log.info("published model version %d (%d items)", update.version, len(snapshot.vocab) - 1)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, latest: ModelUpdate | None) -> None:
        for name, target, args in (("reader", self._read, ()), ("train", self._guarded_train, (latest,))):
            thread = threading.Thread(target=target, args=args, name=f"streamrec-trainer-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guarded_train(self, latest: ModelUpdate | None) -> None:
        lower_thread_priority()
        try:
            self._train(latest)
        except Exception:
            log.exception("trainer stopped; serving continues with the last published version")

    def stop(self, wait_s: float = 0.0) -> None:
        """Stop reading and training; wait up to ``wait_s`` for an update or a save under way."""
        self._stop.set()
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
