"""Create StreamRec's topics before any worker starts (the one-shot ``topics`` service of
docker-compose.yml): ``events``, ``events.dlq`` and ``recommendations`` with ``STREAMREC_PARTITIONS``
partitions, ``model-updates`` compacted with one partition (see :func:`streams.kafka.topics.topic_specs`).

Settings come from the ``STREAMREC_*`` environment, as for every ``streamrec`` command. Existing
topics are kept; one whose partition count differs from the settings is an error (exit 1), since a
user's state lives in the partition of its key and silently changing the count would move users.

    python ops/create_topics.py          # exit 0: every topic exists with the expected partitions
"""

from __future__ import annotations

import logging
import sys

from streams.errors import StreamRecError
from streams.settings import load_settings
from streams.kafka.topics import admin_client, ensure_topics, topic_specs


def partition_counts(settings) -> dict[str, int]:
    """name -> partitions of StreamRec's topics as the broker reports them."""
    admin = admin_client(settings)
    try:
        described = admin.describe_topics(list(topic_specs(settings)))
    finally:
        admin.close()
    # kafka-python 2.x names a topic "topic", 3.x "name".
    return {t.get("name", t.get("topic")): len(t["partitions"]) for t in described if not t.get("error_code")}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        settings = load_settings()
        ensure_topics(settings, timeout=120.0)
        actual = partition_counts(settings)
    except (StreamRecError, ValueError) as exc:  # KafkaUnavailable; SettingsError is a ValueError
        print(f"create_topics: error: {exc}", file=sys.stderr)
        return 2
    wrong = []
    for name, spec in topic_specs(settings).items():
        got = actual.get(name)
        config = "".join(f", {k}={v}" for k, v in spec["config"].items())
        print(f"topic {name}: {got} partition(s) (settings: {spec['partitions']}{config})")
        if got != spec["partitions"]:
            wrong.append(f"{name} has {got} partition(s), settings want {spec['partitions']}")
    if wrong:
        print("create_topics: error: " + "; ".join(wrong) + " (existing topics are never changed: "
              "delete them or set STREAMREC_PARTITIONS to match)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
