"""Printing records of a topic (default ``recommendations``) as JSON lines.

The reader takes every partition by manual assignment (``kafka.clients.watch_consumer``): it only
watches, so it neither joins nor disturbs any group.
"""

from __future__ import annotations

import sys
import time

from ..kafka.clients import watch_consumer
from ..settings import Settings


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
