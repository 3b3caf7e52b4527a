"""The Faust app of one worker and what it holds: the input topic and the tables.

:func:`faust_app` configures Faust from the settings; :class:`WorkerApp` builds the app with its
topic and tables. The parts that use them (``ingest``, ``serving``, ``lifecycle``) get the
``WorkerApp``; ``streams.wiring.create`` builds everything and registers agents and views. A
factory (instead of a module-level ``app``) lets tests and tools build apps with different settings
in one process.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import faust

from .kafka.clients import faust_credentials
from .kafka.faust_patches.recovery import TableManager
from .kafka.faust_patches.transport import transport_class
from .kafka.table_store import MEMORY_OPTION
from .metrics import Metrics
from .settings import Settings


def faust_app(settings: Settings) -> faust.App:
    servers = [f"kafka://{server}" for server in settings.kafka_servers.split(",")]
    app = faust.App(
        settings.app_id,
        broker=servers,
        broker_credentials=faust_credentials(settings),
        store="streamrec://" if settings.store == "rocksdb" else "memory://",  # streams.kafka.table_store
        datadir=str(settings.table_dir),
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        # Table recovery reads each changelog to the end its records show, not to the end offset
        # the broker reports: Tansu (the embedded broker) reports too small an end (streams.kafka.recovery).
        TableManager=TableManager.for_settings(settings),
        recovery_consistency_check=settings.recovery_consistency_check,
        producer_linger=settings.producer_linger_s,
        # A dead letter carries up to max_message_bytes of the original, base64-encoded (4/3).
        producer_max_request_size=max(1_048_576, 2 * settings.max_message_bytes),
        # Tuned so a worker joins its group in ~3 s (Faust's defaults: ~30 s on first join).
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        web_enabled=True,
        web_bind=settings.http_host,
        # The address other workers use to forward /recommend for keys they do not own: a
        # wildcard bind address is no address, so advertise the host name then (in compose,
        # the container's name, which resolves on the compose network).
        web_host=socket.gethostname() if settings.http_host in ("0.0.0.0", "::") else settings.http_host,
        web_port=settings.http_port,
        web_in_thread=False,
    )
    # Faust hard-codes the consumer's fetch wait (1.5 s); see streams.kafka.faust_patches.transport.
    app.transport = transport_class(settings.fetch_max_wait_ms)(app.conf.broker_consumer, app)
    return app


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Each table partition's RocksDB options (a fresh dict: Faust pops keys from it): its
    memtables, and the worker-wide memory bound they share (streams.kafka.table_store)."""
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_mb << 20,
        "max_write_buffer_number": 2,
        MEMORY_OPTION: settings.rocksdb_memory_mb,
    }


@dataclass
class WorkerApp:
    """One worker's Faust app, its ``events`` topic and its tables (all keyed by raw bytes)."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        s = self.settings
        s.table_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes the last level
        self.app = app = faust_app(s)
        self.events_topic = app.topic(s.topic_events, key_serializer="raw", value_serializer="raw",
                                      partitions=s.partitions)
        # Keys are raw bytes. key_type=bytes makes the key serializer "raw": a Table's default is
        # "json", which passes bytes through on write (the changelog holds raw keys) but decodes
        # them as JSON in recovery, where every changelog record then fails ("Error in recovery
        # Expecting value"), is lost, and recovery waits forever for its offset.
        # user_sequences: streams.ingest.user_state.encode()d bytes, one per user.
        self.user_sequences = app.Table("user_sequences", default=None, partitions=s.partitions,
                                        key_type=bytes, value_type=bytes, options=rocksdb_options(s))
        # One entry per partition of `events` ("p3"): that partition's decayed popularity (JSON).
        self.item_popularity = app.Table("item_popularity", default=None, partitions=s.partitions,
                                         key_type=bytes, options=rocksdb_options(s))
        # One entry per partition of `events` ("p3"): the dead-letter mark (streams.ingest.dead_letters).
        self.dead_letters = app.Table("dead_letters", default=None, partitions=s.partitions,
                                      key_type=bytes, value_type=bytes, options=rocksdb_options(s))
