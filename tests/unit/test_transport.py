"""The worker consumer's fetch wait comes from settings (streams/kafka/faust_patches/transport.py)."""

from __future__ import annotations

import streams.wiring


async def test_the_worker_consumer_is_built_with_the_configured_fetch_wait(make_settings):
    sr = streams.wiring.create(make_settings(fetch_max_wait_ms=37, serving_processes=False))
    try:
        thread = sr.app.consumer._thread  # the thread that owns the aiokafka consumer
        consumer = thread._create_worker_consumer(sr.app.transport)
        assert consumer._fetch_max_wait_ms == 37  # what AIOKafkaConsumer.start() hands its fetcher
        await consumer.stop()
    finally:
        sr.close()
