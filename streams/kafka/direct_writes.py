"""Records handed straight to the app's producer, and table writes built on that.

Faust's ``topic.send`` and ``table[key] = value`` wrap every record in a FutureMessage, a pending
message, a producer-buffer entry and sensor callbacks: several times the event-loop time of
handing the record to aiokafka ourselves (docs/design-probes.md, ``send_cost``; BENCHMARKS.md, ``throughput``). The same bytes go to the same topic partitions, through
``app.producer.send`` (aiokafka). The records of a recommendation micro-batch, and the
changelog records of a batch of ingested events, go out together, one aiokafka batch per
partition (:func:`send_many`).

Nothing acknowledged is lost: the ingest agent flushes a batch's changelog records to the
producer before Faust acknowledges the batch's events, and before it commits source offsets,
Faust flushes the producer (``Consumer._commit_offsets`` awaits ``app.producer.flush()``),
which waits for these records too (and before a rebalance, ``App._on_partitions_revoked``). As
in Faust, a delivered changelog batch's last offset is written to the store at once (recovery
replays only what comes after it): with that offset persisted once a second instead,
a worker whose partitions were reassigned to it replayed older values of keys whose newer
records were still in flight, and lost 45 of 60,000 events in bench/throughput.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from functools import partial

from faust.types import TP

from .faust_patches.internals import aiokafka_producer, partition_for, partition_store

log = logging.getLogger(__name__)

def _log_failure(what: str, sent: asyncio.Future) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.error("%s was not delivered: %r", what, sent.exception())


async def send_now(app, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                   what: str = "a record") -> asyncio.Future:
    """Queue one record on the app's producer; returns its delivery future (failures are logged)."""
    sent = await app.producer.send(topic, key, value, partition, None, None)
    sent.add_done_callback(partial(_log_failure, what))
    return sent


async def send_many(app, topic: str, records: Iterable[tuple[bytes, bytes]], what: str = "records",
                    partition: int | None = None) -> list[tuple[asyncio.Future, int]]:
    """Queue keyed records as one batch per partition; returns ``(delivery future, records)`` per
    batch (a batch's future gives the offset of its first record).

    Each record goes to ``partition``, or else to the partition ``send_now`` (aiokafka's ``send``)
    would pick for its key: the same partitioner, through the producer's own partitioner. A
    batch is built with aiokafka's ``create_batch`` / ``send_batch``: less than half the CPU per
    record of ``send`` (docs/design-probes.md, ``send_cost``). The batches join the producer's queue
    like any record, so ``app.producer.flush()`` waits for them.
    """
    producer = aiokafka_producer(app)
    await producer.partitions_for(topic)           # metadata for the partitioner
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        p = partition_for(producer, topic, partition, key, value)
        by_partition.setdefault(p, []).append((key, value))
    futures = []
    for p, part in by_partition.items():
        batch = producer.create_batch()
        for key, value in part:
            if batch.append(key=key, value=value, timestamp=None) is not None:
                continue
            if batch.record_count():   # full: send it and start another
                futures.append(await _send_batch(producer, batch, topic, p, what))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is not None:
                    continue
            # larger than a whole batch: on its own, as send_now would
            futures.append((await send_now(app, topic, key, value, p, what=what), 1))
        if batch.record_count():
            futures.append(await _send_batch(producer, batch, topic, p, what))
    return futures


async def _send_batch(producer, batch, topic: str, partition: int, what: str) -> tuple[asyncio.Future, int]:
    batch.close()
    n = batch.record_count()
    sent = await producer.send_batch(batch, topic, partition=partition)
    sent.add_done_callback(partial(_log_failure, f"a batch of {n} {what}"))
    return sent, n


class TableWriter:
    """``table[key] = value`` and ``table.get(key)`` for tables with raw (bytes) keys and values,
    from inside an agent, in a partition named by the caller.

    :meth:`put` writes the store at once (the database of ``partition``: Faust's own
    ``table[key]`` writes and reads the current event's, which is another one for the users a
    quarantine or a judgement of other users touches) and keeps the change; :meth:`get` reads it
    back; :meth:`flush` sends the kept changes to the changelog: one record per key (its latest
    value), one batch per partition. The agent flushes before Faust acknowledges the events that
    made the changes (streams/ingest/agent.py)."""

    def __init__(self, app, table) -> None:
        if table.key_serializer != "raw" or table.value_serializer != "raw":
            raise ValueError(f"table {table.name} must have raw keys and values")
        self.app, self.table = app, table
        self.topic = table.changelog_topic.get_topic_name()
        self._changes: dict[int, dict[bytes, bytes]] = {}

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        partition_store(self.table, partition)[key] = value
        self._changes.setdefault(partition, {})[key] = value

    def get(self, partition: int, key: bytes) -> bytes | None:
        return partition_store(self.table, partition).get(key)

    async def flush(self) -> None:
        changes, self._changes = self._changes, {}
        for partition, records in changes.items():
            for sent, n in await send_many(self.app, self.topic, records.items(), partition=partition,
                                           what=f"{self.table.name} changes"):
                sent.add_done_callback(partial(self._on_delivered, n))

    def _on_delivered(self, n: int, sent: asyncio.Future) -> None:
        """What Faust's ``Collection._on_changelog_sent`` does: recovery resumes after this offset
        (the last of the ``n`` records the future stands for)."""
        if sent.cancelled() or sent.exception() is not None:
            return
        meta = sent.result()
        self.table.data.set_persisted_offset(TP(self.topic, meta.partition), meta.offset + n - 1)
