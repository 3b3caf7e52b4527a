"""The queue between ingestion and recommendation (streams/serving/pending.py)."""

from __future__ import annotations

import asyncio

from streams.serving.pending import PendingRequests
from streams.serving.recommend import Request


def req(n: int) -> Request:
    return Request(f"u{n}", [("i1", "click")], 0.0)


async def test_a_batch_is_cut_at_max_size_and_keeps_the_order():
    q = PendingRequests(maxsize=100)
    for n in range(10):
        await q.put(req(n))
    first = await q.batch(4, window_s=5.0)  # full at once: does not wait for the window
    assert [r.user_id for r in first] == ["u0", "u1", "u2", "u3"]
    assert q.qsize() == 6


async def test_a_partial_batch_waits_for_the_window_and_gathers_late_requests():
    q = PendingRequests(maxsize=100)
    await q.put(req(0))

    async def late():
        await asyncio.sleep(0.02)
        await q.put(req(1))

    task = asyncio.create_task(late())
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await q.batch(10, window_s=0.2)
    await task
    assert [r.user_id for r in batch] == ["u0", "u1"]
    assert loop.time() - started >= 0.19  # it kept the window open for more


async def test_a_full_queue_makes_the_producer_wait_until_a_batch_is_taken():
    q = PendingRequests(maxsize=2)
    await q.put(req(0))
    await q.put(req(1))
    blocked = asyncio.create_task(q.put(req(2)))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # backpressure, nothing dropped
    assert len(await q.batch(2, window_s=0.01)) == 2
    await asyncio.wait_for(blocked, 1.0)
    assert [r.user_id for r in await q.batch(10, window_s=0.0)] == ["u2"]
