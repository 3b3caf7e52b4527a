"""HTTP views (streams/serving/views.py)."""

from __future__ import annotations

import streams.wiring
from streams.kafka.monitoring import assigned_partitions


async def test_health_reports_no_partitions_while_the_consumer_starts(make_settings):
    sr = streams.wiring.create(make_settings(serving_processes=False))
    try:
        # Faust's consumer thread is not started yet: asking it for its assignment raises
        # ConsumerNotStarted, which /health answered with a 500 and a traceback in the log.
        assert assigned_partitions(sr.app, sr.settings.topic_events) == []
    finally:
        sr.close()
