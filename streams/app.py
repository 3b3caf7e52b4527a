"""The Faust application: one :class:`StreamRec` per worker, built by :func:`create`.

A factory (instead of a module-level ``app``) lets tests and tools build apps with different
settings in one process. Agents live in :mod:`streams.agents`, HTTP views in :mod:`streams.views`.
"""

from __future__ import annotations

import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust

from .direct_writes import TableWriter
from .metrics import Metrics
from .pending import PendingRequests
from .dead_letters import DeadLetterMarks
from .popularity import Popularity
from .recovery import TableManager
from .settings import Settings
from .transport import transport_class
from .user_state import decode as decode_state


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(
            cafile=settings.ssl_cafile and str(settings.ssl_cafile),
            certfile=settings.ssl_certfile and str(settings.ssl_certfile),
            keyfile=settings.ssl_keyfile and str(settings.ssl_keyfile),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(context or ssl.create_default_context())
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        mechanism=settings.sasl_mechanism,
        ssl_context=context,
    )


def faust_app(settings: Settings) -> faust.App:
    servers = [f"kafka://{server}" for server in settings.kafka_servers.split(",")]
    app = faust.App(
        settings.app_id,
        broker=servers,
        broker_credentials=_credentials(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.table_dir),
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        # Table recovery reads each changelog to the end its records show, not to the end offset
        # the broker reports: Tansu (the embedded broker) reports too small an end (streams.recovery).
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
    # Faust hard-codes the consumer's fetch wait (1.5 s); see streams.transport.
    app.transport = transport_class(settings.fetch_max_wait_ms)(app.conf.broker_consumer, app)
    return app


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Memory bounds of each table partition's RocksDB (a fresh dict: Faust pops keys from it).
    A worker holds tables x partitions of them: about that many x (2 memtables + cache) at most."""
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_mb << 20,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.rocksdb_block_cache_mb << 20,
        "block_cache_compressed_size": settings.rocksdb_block_cache_mb << 20,  # python-rocksdb only
    }


@dataclass
class StreamRec:
    """Everything one worker holds: the Faust app, its topics and tables, metrics, serving state."""

    settings: Settings
    app: faust.App
    metrics: Metrics = field(default_factory=Metrics)
    # Blocking work (encoding, index search, table scans) runs here, never on the event loop.
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-serve"))
    popularity: dict[int, Popularity] = field(default_factory=dict)  # by partition of `events`
    popularity_flushed: dict[int, float] = field(default_factory=dict)  # partition -> monotonic time
    dead_letter_marks: DeadLetterMarks = field(default_factory=DeadLetterMarks)
    popular_cache: tuple[float, int, list] = (float("-inf"), 0, [])  # popular_now's (monotonic time, n, top n)
    model: Any = None  # LiveModel, or ServingPair with serving_processes (built in __post_init__)
    trainer: Any = None  # streams.trainer.StreamTrainer while this worker leads the group

    def __post_init__(self) -> None:
        from .live_model import LiveModel
        from .serving_process import ServingPair

        s, app = self.settings, self.app
        self.model = (ServingPair if s.serving_processes else LiveModel)(s, self.metrics)
        self.events_topic = app.topic(s.topic_events, key_serializer="raw", value_serializer="raw",
                                      partitions=s.partitions)
        # Accepted events waiting for their recommendation (a few batches: then ingestion waits).
        self.pending = PendingRequests(maxsize=4 * s.batch_size)
        # Keys are raw bytes, values JSON. key_type=bytes makes the key serializer "raw": a Table's
        # default is "json", which passes bytes through on write (the changelog holds raw keys)
        # but decodes them as JSON in recovery, where every changelog record then fails ("Error in
        # recovery Expecting value"), is lost, and recovery waits forever for its offset.
        # user_sequences values are streams.user_state.encode()d bytes: read with user_state().
        self.user_sequences = app.Table("user_sequences", default=None, partitions=s.partitions,
                                        key_type=bytes, value_type=bytes, options=rocksdb_options(s))
        # One entry per partition of `events` ("p3"): that partition's decayed popularity.
        self.item_popularity = app.Table("item_popularity", default=None, partitions=s.partitions,
                                         key_type=bytes, options=rocksdb_options(s))
        # One entry per partition of `events` ("p3"): the dead-letter mark (streams.dead_letters).
        self.dead_letters = app.Table("dead_letters", default=None, partitions=s.partitions,
                                      key_type=bytes, value_type=bytes, options=rocksdb_options(s))
        # user_sequences is written once per accepted event: through TableWriter, not table[key] = ...
        self.state_writer = TableWriter(app, self.user_sequences)
        self.dead_letter_writer = TableWriter(app, self.dead_letters)

    def user_state(self, user_id: str | bytes) -> dict | None:
        key = user_id.encode() if isinstance(user_id, str) else user_id
        return decode_state(self.user_sequences.get(key))

    def popularity_for(self, partition: int) -> Popularity:
        tracker = self.popularity.get(partition)
        if tracker is None:
            saved = self.item_popularity.get(b"p%d" % partition)
            tracker = Popularity(self.settings.popularity_half_life_s, self.settings.popularity_capacity,
                                 saved)
            self.popularity[partition] = tracker
        return tracker


def create(settings: Settings) -> StreamRec:
    from . import agents, views

    settings.table_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes the last level
    sr = StreamRec(settings=settings, app=faust_app(settings))
    agents.register(sr)
    views.register(sr)
    return sr
