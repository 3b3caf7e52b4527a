"""``streams.kafka.direct_writes.send_many`` on the embedded broker: every record arrives once, in the
partition aiokafka's ``send`` picks for its key (or the one asked for), across full batches and an
oversized record."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import AIOKafkaProducer
from kafka.admin import NewTopic

from streams.kafka.direct_writes import send_many
from streams.kafka.clients import admin_client

from streams.harness.procs import client_settings


async def test_send_many_delivers_each_record_once_to_its_key_partition(broker, read_topic):
    settings = client_settings(broker.bootstrap, 4)
    admin = admin_client(settings)
    try:
        admin.create_topics([NewTopic(name, 4, 1) for name in ("direct-many", "direct-one", "direct-p2")])
    finally:
        admin.close()
    # 1 KiB batches: 200 records of ~60 bytes fill several per partition; one record needs more
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_batch_size=1024, linger_ms=5)
    await producer.start()
    try:
        app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
        records = [(f"user-{i}".encode(), b"%d:" % i + b"v" * 50) for i in range(200)]
        records.append((b"user-big", b"B" * 3000))
        batches = await send_many(app, "direct-many", records, what="test records")
        to_two = await send_many(app, "direct-p2", records[:10], partition=2)
        for key, value in records:   # the same keys through send(): the partitions to match
            await producer.send("direct-one", value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    assert len(batches) > 4 and sum(n for _, n in batches) == len(records)
    assert all(f.done() and f.exception() is None for f, _ in batches + to_two)

    def by_key(topic, n):
        got = read_topic(settings, topic, until=lambda rs: len(rs) >= n)
        return {r.key: (r.partition, r.value) for r in got}, len(got)

    many, n_many = by_key("direct-many", len(records))
    one, _ = by_key("direct-one", len(records))
    assert n_many == len(records) and many == one
    assert {key: value for key, (_, value) in many.items()} == dict(records)
    assert len({partition for partition, _ in many.values()}) == 4
    two, _ = by_key("direct-p2", 10)
    assert two == {key: (2, value) for key, value in records[:10]}
