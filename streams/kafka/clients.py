"""Every Kafka client StreamRec makes, from the one settings object.

- :func:`watch_consumer`: kafka-python, every partition of some topics by manual assignment (no
  consumer group: it only reads, so it neither joins nor disturbs any group). The model-updates
  watcher, the trainer's reader and ``streamrec consume`` use it.
- :func:`make_producer`: kafka-python, ``acks=all`` (file replay, model-update announcements).
- :func:`admin_client`: kafka-python admin (topic creation).
- :func:`faust_credentials`: the same security settings for Faust's aiokafka clients.

A broker that cannot be reached is a :class:`KafkaUnavailable` (a one-line CLI error).
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from ..errors import StreamRecError
from ..settings import Settings


class KafkaUnavailable(StreamRecError):
    """No broker answered at the configured bootstrap servers."""


def watch_consumer(settings: Settings, topics: list[str], from_beginning: bool = True,
                   fetch_max_wait_ms: int = 500) -> KafkaConsumer:
    """A kafka-python consumer assigned every partition of ``topics``; ``fetch_max_wait_ms``: how
    long a fetch may wait for new records (kafka-python's default, 500; a reader measuring latency
    wants less: the embedded broker waits it out whenever a fetch finds nothing new)."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms,
                                 **settings.kafka_python_security())
    except KafkaError as exc:  # e.g. "Unable to bootstrap": a one-line CLI error, not a traceback
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_servers}: {exc}") from None
    deadline = time.monotonic() + 10
    parts: list[TopicPartition] = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        while not ids and time.monotonic() < deadline:
            time.sleep(0.2)
            ids = consumer.partitions_for_topic(topic)
        parts += [TopicPartition(topic, p) for p in sorted(ids or [])]
    consumer.assign(parts)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*parts)
    return consumer


def make_producer(settings: Settings) -> KafkaProducer:
    try:
        return KafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=5,
                             max_request_size=max(1 << 20, settings.max_message_bytes * 2),
                             **settings.kafka_python_security())
    except KafkaError as exc:  # e.g. "Unable to bootstrap": a one-line CLI error, not a traceback
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_servers}: {exc}") from None


def admin_client(settings: Settings, **kwargs) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="streamrec-admin",
                            bootstrap_timeout_ms=5000, **settings.kafka_python_security(), **kwargs)


def faust_credentials(settings: Settings) -> Any:
    """``faust.App(broker_credentials=...)`` for the security settings (None for PLAINTEXT)."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
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
