"""Running a worker: the embedded broker when asked for, topic creation, then Faust's worker."""

from __future__ import annotations

import logging
import shutil

from .broker import EmbeddedBroker
from .settings import Settings
from .topics import ensure_topics

log = logging.getLogger(__name__)


def reset_state_for_new_cluster(settings: Settings) -> None:
    """The embedded broker keeps nothing across restarts, so table state on disk refers to
    changelog offsets that no longer exist (Faust would refuse it: persisted offset higher than
    the last offset). Start such a worker from empty state."""
    if settings.table_dir.exists():
        log.info("embedded broker is new: clearing table state in %s", settings.table_dir)
        shutil.rmtree(settings.table_dir)


def run_worker(settings: Settings) -> int:
    import faust

    from .app import create

    broker = None
    if settings.embedded:
        broker = EmbeddedBroker(settings.broker_port).start()
        reset_state_for_new_cluster(settings)
    try:
        ensure_topics(settings)
        sr = create(settings)
        worker = faust.Worker(sr.app, loglevel=settings.log_level.upper(), quiet=True)
        try:
            worker.execute_from_commandline()  # blocks; stops on SIGINT/SIGTERM
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    finally:
        if broker is not None:
            broker.stop()
