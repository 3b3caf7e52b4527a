"""The worker's consumer (streams/transport.py): the fetch wait comes from settings, and a message
delivery that need not wait is run without tasks while one that waits can still be cut short."""

from __future__ import annotations

import asyncio

import pytest

import streams.app


@pytest.fixture
async def consumer(make_settings):
    # Built inside the test's event loop: the consumer's tasks run on the loop it was made in.
    sr = streams.app.create(make_settings(fetch_max_wait_ms=37, serving_processes=False))
    try:
        yield sr.app.consumer
    finally:
        sr.model.close()
        sr.executor.shutdown(wait=False)


async def test_the_worker_consumer_is_built_with_the_configured_fetch_wait(consumer):
    thread = consumer._thread  # the thread that owns the aiokafka consumer
    aiokafka_consumer = thread._create_worker_consumer(consumer.transport)
    assert aiokafka_consumer._fetch_max_wait_ms == 37  # what AIOKafkaConsumer.start() hands its fetcher
    await aiokafka_consumer.stop()


async def test_a_delivery_that_need_not_wait_finishes_without_a_task(consumer, monkeypatch):
    tasks = []
    real_ensure_future = asyncio.ensure_future
    monkeypatch.setattr(asyncio, "ensure_future", lambda *a, **kw: tasks.append(a) or real_ensure_future(*a, **kw))
    delivered = []

    async def deliver(message):
        delivered.append(message)
        return "done"

    suspend = consumer.suspend_flow.wait()
    result = await consumer.wait_first(deliver("m1"), suspend)

    assert delivered == ["m1"]
    assert result.results == ["done"] and not result.stopped
    assert tasks == []
    assert suspend.cr_frame is None  # the rebalance waiter was closed, not left un-awaited


async def test_a_delivery_that_waits_goes_on_where_it_waited(consumer):
    room = asyncio.get_running_loop().create_future()
    steps = []

    async def deliver():
        steps.append("decoded")
        steps.append(await room)  # a full stream buffer
        return "put"

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["decoded"] and not waiting.done()
    room.set_result("room")
    result = await asyncio.wait_for(waiting, 5)
    assert steps == ["decoded", "room"]  # each step ran once
    assert result.results[0] == "put" and not result.stopped


async def test_a_rebalance_cuts_a_waiting_delivery_short(consumer):
    never = asyncio.get_running_loop().create_future()
    outcome = []

    async def deliver():
        try:
            await never
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()  # what Consumer.suspend_flow() does when partitions are revoked
    await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0)
    assert outcome == ["cancelled"]


async def test_an_error_in_a_delivery_reaches_the_fetch_loop(consumer):
    async def deliver():
        raise ValueError("bad codec")

    suspend = consumer.suspend_flow.wait()
    with pytest.raises(ValueError, match="bad codec"):
        await consumer.wait_first(deliver(), suspend)
    assert suspend.cr_frame is None


async def test_a_stopping_consumer_reports_no_winner(consumer):
    async def deliver():
        return "done"

    consumer._stopped.set()
    result = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert result.stopped and result.done == []
