"""Topic declarations and creation (kafka-python admin; Faust creates only its changelogs)."""

from __future__ import annotations

import logging
import time

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from ..settings import Settings
from .clients import KafkaUnavailable, admin_client

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> dict[str, dict]:
    """name -> partitions and config of every topic StreamRec reads or writes."""
    n = settings.partitions
    return {
        settings.topic_events: {"partitions": n, "config": {}},
        settings.topic_dlq: {"partitions": n, "config": {}},
        settings.topic_suspect: {"partitions": n, "config": {}},
        settings.topic_recommendations: {"partitions": n, "config": {}},
        # One partition so that every worker reads every version; compacted: the latest per key.
        settings.topic_model_updates: {"partitions": 1, "config": {"cleanup.policy": "compact"}},
    }


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the missing topics; existing ones are left as they are."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = admin_client(settings)
            break
        except Exception as exc:  # broker not up yet
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_servers} "
                                       f"(is a broker running? 'streamrec broker' starts one): {exc}") from None
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, spec["partitions"], settings.replication_factor, topic_configs=spec["config"])
            for name, spec in topic_specs(settings).items() if name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        admin.close()
