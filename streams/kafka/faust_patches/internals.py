"""Private Faust and aiokafka names read (not overridden) by StreamRec; see the package docstring.

- ``faust.streams._current_event``: Faust's stores write to and read from the database of the
  current event's partition, which ``Stream.__aiter__`` sets for one event at a time and
  ``take_events`` (the ingest agent's batches) does not set at all.
- ``faust.stores.rocksdb.Store._dbs_for_actives``: the RocksDB databases of the worker's active
  partitions, for RocksDB's own key estimates (``len(table)`` walks every key in Python);
  ``Store._db_for_partition``: one partition's database, whose values rebuild co-visitation
  (Faust's table iterates every active partition at once).
- ``faust...aiokafka.Producer._ensure_producer`` and ``AIOKafkaProducer._partition``: the aiokafka
  producer Faust started, and its partitioner, so that batches built with aiokafka's public
  ``create_batch`` / ``send_batch`` go to the partitions ``send`` would choose.
"""

from __future__ import annotations

import weakref
from typing import Any

from faust.streams import _current_event


def set_current_event(event: Any | None) -> None:
    """Make ``event`` (a Faust event) the current one; None clears it."""
    _current_event.set(None if event is None else weakref.ref(event))


def rocksdb_databases(table) -> list | None:
    """The RocksDB databases of ``table``'s active partitions; None if its store is not RocksDB."""
    dbs = getattr(table.data, "_dbs_for_actives", None)  # faust.stores.rocksdb.Store
    return None if dbs is None else list(dbs())


def partition_store(table, partition: int):
    """The mapping that holds ``table``'s keys of ``partition``: its RocksDB database (raw bytes),
    or the memory store, which keeps every partition in one dict."""
    db_for = getattr(table.data, "_db_for_partition", None)  # faust.stores.rocksdb.Store
    return table.data if db_for is None else db_for(partition)


def partition_values(table, partition: int):
    """An iterator over the values ``table`` holds for ``partition``; None if its store is not
    RocksDB (the memory store keeps every partition in one dict)."""
    db_for = getattr(table.data, "_db_for_partition", None)  # faust.stores.rocksdb.Store
    return None if db_for is None else db_for(partition).values()


def aiokafka_producer(app):
    """The aiokafka producer behind the app's Faust producer (started by Faust)."""
    return app.producer._ensure_producer()


def partition_for(producer, topic: str, partition: int | None, key: bytes | None, value: bytes) -> int:
    """The partition aiokafka's ``send`` would choose (metadata for ``topic`` must be there)."""
    return producer._partition(topic, partition, key, value, key, value)
