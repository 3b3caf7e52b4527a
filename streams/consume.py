"""Printing records of a topic (default ``recommendations``) as JSON lines.

Readers here take every partition by manual assignment (no consumer group): they only watch,
so they neither join nor disturb any group.
"""

from __future__ import annotations

import sys
import time

from .settings import Settings


def watch_consumer(settings: Settings, topics: list[str], from_beginning: bool = True):
    """A kafka-python consumer assigned every partition of ``topics``."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from .topics import KafkaUnavailable

    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None,
                                 enable_auto_commit=False, **settings.kafka_python_security())
    except KafkaError as exc:  # e.g. "Unable to bootstrap": a one-line CLI error, not a traceback
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_servers}: {exc}") from None
    deadline = time.monotonic() + 10
    parts: list = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        while not ids and time.monotonic() < deadline:
            time.sleep(0.2)
            ids = consumer.partitions_for_topic(topic)
        parts += [TopicPartition(topic, p) for p in sorted(ids or [])]
    consumer.assign(parts)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*parts)
    return consumer


def consume(settings: Settings, topic: str, *, limit: int = 0, timeout_s: float = 0.0,
            from_beginning: bool = False, out=sys.stdout) -> int:
    consumer = watch_consumer(settings, [topic], from_beginning)
    count, last = 0, time.monotonic()
    try:
        while not limit or count < limit:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    out.write(record.value.decode("utf-8", errors="replace") + "\n")
                    count += 1
                    last = time.monotonic()
                    if limit and count >= limit:
                        break
            out.flush()
            if timeout_s and time.monotonic() - last > timeout_s:
                break
    finally:
        consumer.close()
    return count
