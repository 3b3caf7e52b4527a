"""Faust's table recovery, reading each changelog partition to the end its records show.

Why: see :mod:`streams.kafka.recovery` (Tansu reports too small an end offset, so recovery
stopped inside the last batch and Faust's consistency check stopped workers).
:class:`TableManager` (``faust.App(TableManager=TableManager.for_settings(settings))``) builds its
recovery as :class:`TailReadingRecovery`, whose ``_build_highwaters`` (private in Faust) takes the
ends from :func:`~streams.kafka.recovery.read_true_ends`. Written against faust-streaming 0.15.3.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from faust.tables.manager import TableManager as FaustTableManager
from faust.tables.recovery import Recovery
from kafka.errors import KafkaError

from ...settings import Settings
from ..recovery import read_true_ends


class TailReadingRecovery(Recovery):
    """Faust's recovery, with each changelog partition's end read as :func:`read_true_ends`."""

    def __init__(self, app: Any, tables: Any, *, settings: Settings, **kwargs: Any) -> None:
        self.streamrec_settings = settings
        super().__init__(app, tables, **kwargs)

    async def _build_highwaters(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        reported = await consumer.highwaters(*tps)
        loop = asyncio.get_running_loop()
        try:
            ends = await loop.run_in_executor(None, read_true_ends, self.streamrec_settings, reported)
        except (KafkaError, OSError) as exc:  # then recover as Faust would, to the reported ends
            self.log.warning("could not read the end of the %s changelogs (%r): using the end offsets "
                             "the broker reported", title, exc)
            ends = dict(reported)
        moved = {tp: (reported[tp], end) for tp, end in ends.items() if end != reported.get(tp)}
        if moved:
            self.log.info("End offsets read from the %s changelogs' records (broker said -> is): %s",
                          title, {f"{tp.topic}:{tp.partition}": v for tp, v in sorted(moved.items())})
        # As in Faust: the highwater is the offset of the last record (-1: empty).
        highwaters = {tp: end - 1 if end is not None else -1 for tp, end in ends.items()}
        self.log.info("Highwater for %s changelog partitions:\n%s", title,
                      self._highwater_logtable(highwaters, title=title))
        destination.clear()
        destination.update(highwaters)


class TableManager(FaustTableManager):
    """Faust's table manager with :class:`TailReadingRecovery`; pass
    ``TableManager=TableManager.for_settings(settings)`` to ``faust.App``."""

    def __init__(self, app: Any, *, settings: Settings, **kwargs: Any) -> None:
        self.streamrec_settings = settings
        super().__init__(app, **kwargs)

    @classmethod
    def for_settings(cls, settings: Settings):
        return partial(cls, settings=settings)

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = TailReadingRecovery(self.app, self, settings=self.streamrec_settings,
                                                 beacon=self.beacon, loop=self.loop)
        return self._recovery
