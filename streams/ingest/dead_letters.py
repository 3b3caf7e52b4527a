"""Dead letters: the record of ``events.dlq`` (:class:`DeadLetter`), and one per malformed message
across crashes (:class:`DeadLetterMarks`).

A malformed message that is read again after a crash (its offset was not committed yet) would be
dead-lettered again: the crash bench counted 615 dead letters written twice in five SIGKILLs. So,
per partition of ``events``, the worker keeps a *mark*: the offset up to which every malformed
message's dead letter has been acknowledged by the broker. It is persisted in the ``dead_letters``
table (changelog-backed, recovered with the user state), and a malformed message at or below it
is not dead-lettered again.

The mark moves only over a contiguous run of acknowledged dead letters (dead letters keyed by
user go to different DLQ partitions, whose acknowledgements can come back out of order), and only
after the broker acknowledged them, so a dead letter is never skipped without having been
written. A crash between an acknowledgement and the mark's write still gives a duplicate, in a
window of milliseconds instead of the few seconds between offset commits.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson


class DeadLetterMarks:
    """In-flight dead letters and marks per partition (event loop only, not thread-safe)."""

    def __init__(self) -> None:
        self._inflight: dict[int, dict[int, bool]] = {}  # partition -> {offset: acknowledged}, in send order
        self._acked: dict[int, int] = {}  # partition -> end of the contiguous acknowledged run
        self._persisted: dict[int, int] = {}  # partition -> mark as read from or written to the table

    def known(self, partition: int) -> bool:
        return partition in self._persisted

    def load(self, partition: int, saved: bytes | None) -> None:
        """The mark persisted for ``partition`` (None: nothing dead-lettered yet)."""
        mark = int(saved) if saved else -1
        self._persisted[partition] = mark
        self._acked[partition] = max(self._acked.get(partition, -1), mark)

    def written(self, partition: int, offset: int) -> bool:
        """Whether the message at ``offset`` was dead-lettered before (and acknowledged)."""
        return offset <= self._acked.get(partition, -1)

    def sent(self, partition: int, offset: int) -> None:
        self._inflight.setdefault(partition, {})[offset] = False

    def delivered(self, partition: int, offset: int) -> None:
        """The broker acknowledged the dead letter of ``offset``: extend the contiguous run."""
        inflight = self._inflight.get(partition)
        if not inflight or offset not in inflight:
            return  # the partition was revoked meanwhile
        inflight[offset] = True
        for first in list(inflight):
            if not inflight[first]:
                break
            del inflight[first]
            self._acked[partition] = first

    def to_persist(self, partition: int) -> bytes | None:
        """The mark to write for ``partition`` if it moved since it was last written."""
        acked = self._acked.get(partition, -1)
        if acked <= self._persisted.get(partition, -1):
            return None
        self._persisted[partition] = acked
        return b"%d" % acked

    def forget(self, partition: int) -> None:
        """Partition revoked: another worker may extend its marks; read them again if it comes back."""
        for d in (self._inflight, self._acked, self._persisted):
            d.pop(partition, None)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record of ``events.dlq``: why the message was rejected, and the message itself."""

    reason: str
    error: str
    raw: str  # original bytes, base64
    topic: str
    partition: int
    offset: int
    # Only a message over the size limit is cut (to the limit), so that its dead letter still fits
    # in a Kafka message; topic/partition/offset point at the whole original.
    raw_truncated: bool = False

    @classmethod
    def of(cls, reason: str, error: str, raw: bytes | None, topic: str, partition: int,
           offset: int, max_raw_bytes: int | None = None) -> "DeadLetter":
        raw = raw or b""
        truncated = max_raw_bytes is not None and len(raw) > max_raw_bytes
        if truncated:
            raw = raw[:max_raw_bytes]
        return cls(reason=reason, error=error, raw=base64.b64encode(raw).decode("ascii"), topic=topic,
                   partition=partition, offset=offset, raw_truncated=truncated)

    def to_json(self) -> dict:
        return {"reason": self.reason, "error": self.error, "raw": self.raw, "topic": self.topic,
                "partition": self.partition, "offset": self.offset, "raw_truncated": self.raw_truncated}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_json())
