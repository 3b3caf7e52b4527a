"""Faust's RocksDB table store with one memory bound for the whole worker.

Faust opens one RocksDB per table partition (a worker of 3 tables x 4 partitions holds 12), each
with its own block cache and memtables, so its RocksDB memory grows with the partitions it is
given: with 32 MB of cache and 2 x 8 MB of memtables each, 12 of them could take 576 MB, and they
did fill during a soak (``bench/throughput.py``: block caches 0 -> 41 MB and memtables 8 -> 36 MB
in 5 minutes, while the worker's RSS grew). Here every table partition of a process shares one LRU
block cache of ``memory_mb``, and a RocksDB write buffer manager charges the memtables to that same
cache and flushes them when together they pass half of it; index and filter blocks are cached there
too. So the worker's RocksDB memory stays within ``memory_mb`` (RocksDB's bound is soft: a memtable
being written may pass it briefly), however many partitions a rebalance hands it.

Faust finds this store through the ``faust.stores`` entry point ``streamrec`` (pyproject.toml), its
documented way to add a store: tables are opened with ``store="streamrec://"``. Only public names of
Faust are used (``Store.options``, ``Store.rocksdb_options``, ``RocksDBOptions.as_options``).
"""

from __future__ import annotations

import rocksdict
from faust.stores import rocksdb as faust_rocksdb

MEMORY_OPTION = "streamrec_memory_mb"  # the key of a table's options that carries the bound


_SHARED: dict[int, tuple[rocksdict.Cache, rocksdict.WriteBufferManager]] = {}


def shared_memory(memory_mb: int) -> tuple[rocksdict.Cache, rocksdict.WriteBufferManager]:
    """The process's block cache of ``memory_mb`` and the write buffer manager charging to it."""
    if memory_mb not in _SHARED:
        cache = rocksdict.Cache(memory_mb << 20)
        write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            (memory_mb << 20) // 2, False, cache)
        _SHARED[memory_mb] = cache, write_buffers
    return _SHARED[memory_mb]


def memory_in_use() -> int:
    """Bytes held in this process's shared caches (blocks, index and filters, memtables)."""
    return sum(cache.get_usage() for cache, _ in _SHARED.values())


class SharedMemoryOptions(faust_rocksdb.RocksDBOptions):
    """Faust's options for one table partition, with the process's shared cache and write buffers."""

    def __init__(self, *args, memory_mb: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.memory_mb = memory_mb

    def as_options(self) -> rocksdict.Options:
        options = super().as_options()
        cache, write_buffers = shared_memory(self.memory_mb)
        table = rocksdict.BlockBasedOptions()  # as Faust's, with the shared cache
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(write_buffers)
        return options


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store whose databases share :func:`shared_memory` (``streamrec://``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # what Faust left of the table's options (it popped read_only and driver)
        options = {k: v for k, v in self.options.items() if k != MEMORY_OPTION}
        if MEMORY_OPTION not in self.options:
            raise ValueError(f"a streamrec:// table needs the option {MEMORY_OPTION}")
        if not self.use_rocksdict:
            raise RuntimeError("the streamrec:// store needs rocksdict (faust-streaming's default driver)")
        self.rocksdb_options = SharedMemoryOptions(**options, use_rocksdict=True,
                                                   memory_mb=self.options[MEMORY_OPTION])
