"""The one base class of the errors StreamRec raises on purpose.

Each part defines its own errors next to the code that raises them (``ingest.events.InvalidEvent``,
``kafka.topics.KafkaUnavailable``, ``lifecycle.model_store.ModelStoreError``, ...), all subclasses
of :class:`StreamRecError`; the command line prints any of them as a one-line error (exit code 2).
"""

from __future__ import annotations


class StreamRecError(Exception):
    """Base class of the errors StreamRec raises on purpose."""
