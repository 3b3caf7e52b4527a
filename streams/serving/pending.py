"""Accepted events waiting for their recommendation: a bounded in-process queue read in micro-batches.

It replaces a Faust channel, which serialised every request to JSON and wrapped it in a message
to hand it to another coroutine of the same process. When serving falls behind, the full queue
makes ingestion wait (backpressure: the backlog stays in Kafka, not in memory); nothing is dropped.
"""

from __future__ import annotations

import asyncio

from .recommend import Request

POLL_S = 0.002  # how often a partial batch looks for more requests while its window is open


class PendingRequests:
    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Request] = asyncio.Queue(maxsize)

    async def put(self, request: Request) -> None:
        await self._queue.put(request)

    def qsize(self) -> int:
        return self._queue.qsize()

    async def batch(self, max_size: int, window_s: float) -> list[Request]:
        """Wait for a request, then gather up to ``max_size`` for at most ``window_s`` seconds."""
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window_s
        while True:
            while len(batch) < max_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - loop.time()
            if len(batch) >= max_size or remaining <= 0:
                return batch
            await asyncio.sleep(min(remaining, POLL_S))
