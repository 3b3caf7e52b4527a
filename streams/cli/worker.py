"""Running a worker: the embedded broker when asked for, topic creation, then Faust's worker."""

from __future__ import annotations

import logging
import shutil
import sys

import faust
import mode.loop

from ..kafka.broker import EmbeddedBroker
from ..kafka.topics import ensure_topics
from ..settings import Settings
from ..tuning import freeze_long_lived, set_mmap_threshold
from ..wiring import create

log = logging.getLogger(__name__)


def reset_state_for_new_cluster(settings: Settings) -> None:
    """The embedded broker keeps nothing across restarts, so table state on disk refers to
    changelog offsets that no longer exist (Faust would refuse it: persisted offset higher than
    the last offset). Start such a worker from empty state."""
    if settings.table_dir.exists():
        log.info("embedded broker is new: clearing table state in %s", settings.table_dir)
        shutil.rmtree(settings.table_dir)


def use_fast_event_loop() -> str:
    """uvloop where installed (a dependency on Linux and macOS): the worker's event loop carries
    every message, and uvloop's sockets, futures and callbacks cost less than asyncio's."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    mode.loop.use("uvloop")
    return "uvloop"


def run_worker(settings: Settings) -> int:
    if set_mmap_threshold(settings.malloc_mmap_threshold_kb):
        log.info("malloc: blocks of %d KiB and more are mmapped", settings.malloc_mmap_threshold_kb)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    broker = worker = None
    if settings.embedded:
        broker = EmbeddedBroker(settings.broker_port).start()
        reset_state_for_new_cluster(settings)
    try:
        ensure_topics(settings)
        log.info("event loop: %s", use_fast_event_loop())
        worker = create(settings)
        faust_worker = faust.Worker(worker.app, loglevel=settings.log_level.upper(), quiet=True)
        # Faust's terminal spinner sets the root logger to DEBUG (to spin on every record), so
        # every logger.debug() in faust and aiokafka builds a LogRecord: ~5 % of the event loop.
        faust_worker.spinner = None
        freeze_long_lived()  # imports, the app and its tables: alive for good
        try:
            faust_worker.execute_from_commandline()  # blocks; stops on SIGINT/SIGTERM
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    finally:
        if worker is not None:
            worker.close()  # stops the serving processes, if any
        if broker is not None:
            broker.stop()
