"""The worker's RocksDB table store: every table partition shares one memory bound."""

import faust.stores
import pytest

from streams.app import WorkerApp
from streams.kafka import table_store
from streams.settings import load_settings

MB = 1 << 20


def open_partitions(tmp_path, n: int, memory_mb: int) -> list:
    options = table_store.SharedMemoryOptions(memory_mb=memory_mb, write_buffer_size=1 * MB,
                                              max_write_buffer_number=2, use_rocksdict=True)
    return [options.open(tmp_path / f"p{i}") for i in range(n)]


def test_partitions_share_one_cache_that_stays_within_its_bound(tmp_path):
    dbs = open_partitions(tmp_path, 4, memory_mb=8)
    value = bytes(range(256)) * 40  # ~10 KB, a long user history
    for i in range(4_000):  # ~40 MB written: 5 x the bound
        dbs[i % 4].put(b"user-%d" % i, value)
    for db in dbs:
        db.flush()
    for i in range(4_000):
        assert dbs[i % 4].get(b"user-%d" % i) == value
    for db in dbs:  # one cache: each database reports the shared capacity and usage
        assert db.property_int_value("rocksdb.block-cache-capacity") == 8 * MB
    # read one after the other while RocksDB's background threads still touch the cache: alike to
    # a few blocks, where four caches would each hold about a quarter
    usage = [db.property_int_value("rocksdb.block-cache-usage") for db in dbs]
    assert max(usage) - min(usage) <= 0.05 * 8 * MB, usage
    in_use = table_store.shared_memory(8)[0].get_usage()
    assert table_store.memory_in_use() >= in_use
    assert 1 * MB < in_use <= 8 * MB * 1.1  # filled by the reads, and held to the bound (soft)
    for db in dbs:
        db.close()


def test_worker_tables_open_the_shared_memory_store(tmp_path):
    settings = load_settings({"data_dir": str(tmp_path), "rocksdb_memory_mb": 16}, environ={})
    core = WorkerApp(settings)
    assert faust.stores.by_url(core.app.conf.store) is table_store.Store
    store = core.user_sequences._new_store()
    assert isinstance(store, table_store.Store)
    assert store.rocksdb_options.memory_mb == 16
    assert store.rocksdb_options.write_buffer_size == settings.rocksdb_write_buffer_mb * MB


def test_store_without_the_bound_is_refused(tmp_path):
    settings = load_settings({"data_dir": str(tmp_path)}, environ={})
    core = WorkerApp(settings)
    with pytest.raises(ValueError, match="streamrec_memory_mb"):
        table_store.Store("streamrec://", core.app, core.user_sequences, options={})
