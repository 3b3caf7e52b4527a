"""Faust's aiokafka transport with the worker consumer's fetch wait taken from settings.

Faust builds the worker's consumer with ``fetch_max_wait_ms=1500``, hard-coded. Apache Kafka
answers a fetch as soon as a record is there, so the wait only bounds idle polls. Tansu (the
embedded broker) answers a fetch that finds no new record when the wait is over, even if records
arrive meanwhile: a worker that has caught up then sleeps up to 1.5 s before its next batch and
processes the stream in bursts (docs/design-probes.md, ``broker_fetch_wait``). ``Settings.fetch_max_wait_ms`` sets it; on Kafka a
short wait only adds idle fetch requests (10 a second at 100 ms).

The override sets aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms`` after Faust built the
consumer and before it starts (``start()`` hands it to the fetcher). Written against
faust-streaming 0.15.3 and aiokafka 0.14.0; ``tests/unit/test_transport.py`` checks that the
value arrives.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


def transport_class(fetch_max_wait_ms: int) -> type:
    """A Faust Transport class whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class WaitConfiguredConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = WaitConfiguredConsumer

    return Transport
