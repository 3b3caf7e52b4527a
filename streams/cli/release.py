"""Sending suspect events back: ``streamrec release --user U [--user V ...]``.

Reads ``events.suspect`` (every partition, by manual assignment: it joins no group) from the
beginning until it has been idle for ``--timeout`` seconds, keeps the records of the given users
(with the given ``--reason``, or any: ``rate_limited`` or ``suspicious``), and produces each one's
original bytes to ``events`` under its key, with the header ``streamrec-release`` signing key and
bytes under ``STREAMREC_RELEASE_KEY`` (:func:`streams.ingest.guard.signature`): a worker with the
same key applies them without the limits, and a user it had quarantined as suspicious is trusted
from then on. The events keep their ``event_id``, so a release sent twice applies once. A record
cut at the size limit is not sent (it is not the whole event).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from ..errors import StreamRecError
from ..ingest.guard import RELEASE_HEADER, signature
from ..kafka.clients import make_producer, watch_consumer
from ..settings import Settings


class ReleaseError(StreamRecError):
    pass


@dataclass
class Released:
    sent: int = 0
    truncated: int = 0  # records of the users that were cut at the size limit: not sent


def release(settings: Settings, users: set[str], reason: str | None = None, idle_s: float = 5.0) -> Released:
    secret = settings.release_secret
    if secret is None:
        raise ReleaseError("no STREAMREC_RELEASE_KEY: workers take released events only when they are signed "
                           "with the key they have; set the same key here")
    consumer = watch_consumer(settings, [settings.topic_suspect], from_beginning=True)
    producer = make_producer(settings)
    done, last = Released(), time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            for records in consumer.poll(timeout_ms=250).values():
                for record in records:
                    _one(record, users, reason, secret, producer, settings.topic_events, done)
                last = time.monotonic()
        producer.flush()
    finally:
        consumer.close()
        producer.close()
    return done


def _one(record, users: set[str], reason: str | None, secret: bytes, producer, topic: str, done: Released) -> None:
    try:
        letter = json.loads(record.value)
        key = record.key or b""
        user = key.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"not a suspect record at offset {record.offset}: {exc}") from None
    if user not in users or letter.get("reason") != (reason or letter.get("reason")):
        return
    if letter.get("raw_truncated"):
        done.truncated += 1
        return
    raw = base64.b64decode(letter["raw"])
    producer.send(topic, key=key, value=raw, headers=[(RELEASE_HEADER, signature(secret, key, raw))])
    done.sent += 1
