"""Faust's aiokafka transport, with two changes to the worker's consumer.

**Fetch wait from settings.** Faust builds the worker's consumer with ``fetch_max_wait_ms=1500``,
hard-coded. Apache Kafka answers a fetch as soon as a record is there, so the wait only bounds idle
polls. Tansu (the embedded broker) answers a fetch that finds no new record when the wait is over,
even if records arrive meanwhile: a worker that has caught up then sleeps up to 1.5 s before its
next batch and processes the stream in bursts (measured with a plain consumer at 800 events/s:
delivery p99 0.79 s with a 1,500 ms wait, 0.07 s with 100 ms). ``Settings.fetch_max_wait_ms`` sets
it; on Kafka a short wait only adds idle fetch requests (10 a second at 100 ms). The override sets
aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms`` after Faust built the consumer and before it
starts (``start()`` hands it to the fetcher).

**No tasks per message when delivery does not wait.** Faust's fetch loop
(``Consumer._drain_messages``) hands every message to its topic's channel with
``await self.wait_first(callback(message), self.suspend_flow.wait())``, so that a rebalance can
cut a delivery short that waits for room in a full stream buffer. ``mode``'s ``wait_first`` makes
four tasks and one ``asyncio.wait`` for that, per message, although a delivery almost always
finishes at once (the buffer has room): about a fifth of a bare Faust agent's time here. The
consumer below runs the delivery's first step itself; when it finished, it returns what
``wait_first`` would have returned (the delivery as the only winner, or no winner when the
consumer is stopping) without making a task. A delivery that does wait is handed, from the point
where it waits, to ``wait_first`` as before, so a rebalance still cuts it short.

faust-streaming is pinned below 0.16; ``tests/unit/test_transport.py`` checks both changes.
"""

from __future__ import annotations

import types
from typing import Any, Generator

from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults


class _Resumed:
    """Awaitable that drives a coroutine on from a point where it yielded ``pending`` to whoever
    stepped it: the coroutine goes on inside the task that awaits this."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: types.CoroutineType, pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: the coroutine gets to handle it
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def _resume(coro: types.CoroutineType, pending: Any) -> Any:
    return await _Resumed(coro, pending)


def _close_unstarted(coros: tuple) -> None:
    for coro in coros:
        if isinstance(coro, types.CoroutineType):
            coro.close()  # never started: closing it only silences "never awaited"


def transport_class(fetch_max_wait_ms: int) -> type:
    """A Faust Transport class whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch
    and delivers messages that need not wait without making tasks (see the module's docstring)."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class StreamRecConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
            # Only Consumer._drain_messages calls this on a consumer (faust-streaming 0.15).
            first = coros[0] if coros else None
            if not isinstance(first, types.CoroutineType):
                return await super().wait_first(*coros, timeout=timeout)
            try:
                pending = first.send(None)
            except StopIteration as done:
                _close_unstarted(coros[1:])
                if self._stopped.is_set() or self._crashed.is_set():
                    return WaitResults([], [], True)
                return WaitResults([first], [done.value], False)
            except BaseException:
                _close_unstarted(coros[1:])
                raise
            return await super().wait_first(_resume(first, pending), *coros[1:], timeout=timeout)

    class Transport(faust_aiokafka.Transport):
        Consumer = StreamRecConsumer

    return Transport
