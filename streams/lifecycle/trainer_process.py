"""The continuous trainer in a child process of its own (setting ``trainer_process``, the default).

Why: in the worker's process the trainer's reader (a second Kafka consumer that parses every event
again: ~60 µs of CPU per event) and the Python of its updates share the GIL with the event loop.
Measured with ``bench/cost.py --worker-args "--serving-gate false --train true --trainer-process
..."`` (short histories, 75k items, 1,000 events/s, alternating runs on the 2-core box): the
worker's main process spent 1,053 and 1,183 µs of CPU per event with the trainer in its threads,
485 and 487 µs with the trainer in a child; the process tree's total was the same (1,309-1,488
µs) and so was the worker-added latency. A child has a GIL of its own, and the whole process runs
in the background (``trainer_priority``: Linux's SCHED_IDLE by default, set by the parent before
the child imports torch) with ``train_threads`` torch threads (1), so the event loop and serving
children take a core whenever they wake. In ``make demo`` on the 2-core box (demo, broker and
worker on the same cores; alternating runs) the end-to-end p99 was 345-453 ms with it idle,
477-1,238 ms at nice +10; at nice +10, torch's default of one thread per core gave 411-1,024 ms
against 331-597 ms with one (that A/B set OMP_NUM_THREADS=1 for the whole tree).

How: the child (:func:`trainer_main`) runs a :class:`~streams.lifecycle.trainer.StreamTrainer`
exactly as the worker's thread would: its own reader, the model store, its own publisher on
``model-updates``. Over a pipe, :class:`TrainerProcess` (the parent's handle, what
:class:`~streams.lifecycle.leader.Lifecycle` starts on the group leader) sends it the quality
gate's report every ``QUALITY_EVERY_S`` (written into each version it announces) and the versions
announced on ``model-updates`` (a rollback becomes the version candidates must beat); the child
sends back the updates of its metrics (:class:`MetricsRelay`), which the parent replays on the
worker's registry, so ``/metrics`` shows them as before. A child that dies is reported by
:meth:`TrainerProcess.alive`; the leader check starts a new one.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable

import torch

from ..metrics import Metrics
from ..settings import Settings
from ..tuning import background_process, set_mmap_threshold
from .model_store import ModelUpdate
from .trainer import StreamTrainer
from .updates import UpdatePublisher

log = logging.getLogger(__name__)

QUALITY_EVERY_S = 2.0
RELAY_EVERY_S = 0.5
CHILD_NICE = 10  # with trainer_priority low: added to the child's niceness
STOP_TIMEOUT_S = 10.0

MetricCall = tuple[str, tuple, str, float]  # (metric attribute, (label args, label kwargs), method, value)


class _Recorder:
    def __init__(self, relay: "MetricsRelay", name: str, labels: tuple = ()) -> None:
        self._relay, self._name, self._labels = relay, name, labels

    def labels(self, *args, **kwargs) -> "_Recorder":
        return _Recorder(self._relay, self._name, (args, tuple(sorted(kwargs.items()))))

    def inc(self, amount: float = 1.0) -> None:
        self._relay.record((self._name, self._labels, "inc", amount))

    def set(self, value: float) -> None:
        self._relay.record((self._name, self._labels, "set", value))

    def observe(self, value: float) -> None:
        self._relay.record((self._name, self._labels, "observe", value))


class MetricsRelay:
    """Stands in for :class:`~streams.metrics.Metrics` in the child: ``relay.train_dropped.inc()``
    and the like are recorded (from any thread) and taken in order by :meth:`take`."""

    def __init__(self) -> None:
        self._calls: list[MetricCall] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> _Recorder:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Recorder(self, name)

    def record(self, call: MetricCall) -> None:
        with self._lock:
            self._calls.append(call)

    def take(self) -> list[MetricCall]:
        with self._lock:
            calls, self._calls = self._calls, []
        return calls


def replay(metrics: Metrics, calls: list[MetricCall]) -> None:
    """Apply what a :class:`MetricsRelay` recorded to the real metrics."""
    for name, labels, method, value in calls:
        metric = getattr(metrics, name)
        if labels:
            args, kwargs = labels
            metric = metric.labels(*args, **dict(kwargs))
        getattr(metric, method)(value)


def trainer_main(conn, settings: Settings, latest: ModelUpdate | None) -> None:
    """The child: a StreamTrainer until the pipe says stop (or closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the worker; it stops us
    set_mmap_threshold(settings.malloc_mmap_threshold_kb)  # as in the worker: a spawned child starts afresh
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s [trainer]: %(message)s")
    torch.set_num_threads(settings.train_threads)  # the child's own pool, not the worker's
    relay, quality = MetricsRelay(), [{}]
    publisher = UpdatePublisher(settings)
    trainer = StreamTrainer(settings, relay, publish=publisher.publish, quality=lambda: quality[0])
    trainer.start(latest)
    try:
        while True:
            if conn.poll(RELAY_EVERY_S):
                op, arg = conn.recv()
                if op == "stop":
                    break
                if op == "quality":
                    quality[0] = arg
                elif op == "follow":
                    trainer.follow(arg)
            calls = relay.take()
            if calls:
                conn.send(("metrics", calls))
    except (EOFError, OSError):  # the worker is gone
        pass
    finally:
        trainer.stop(wait_s=STOP_TIMEOUT_S / 2)  # a version being saved is saved
        publisher.close()
        try:
            conn.send(("metrics", relay.take()))
        except (EOFError, OSError):
            pass


class TrainerProcess:
    """The worker's handle on a trainer child: the same ``start`` / ``follow`` / ``stop`` as a
    :class:`~streams.lifecycle.trainer.StreamTrainer` run in a thread."""

    def __init__(self, settings: Settings, metrics: Metrics, quality: Callable[[], dict] = dict) -> None:
        self.settings, self.metrics, self.quality = settings, metrics, quality
        self._proc = None
        self._conn = None
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, latest: ModelUpdate | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=trainer_main, args=(theirs, self.settings, latest),
                                 name="streamrec-trainer", daemon=True)
        self._proc.start()
        # before the child imports torch: its import and every thread it starts are background work
        background_process(self._proc.pid, self.settings.trainer_priority, CHILD_NICE)
        theirs.close()
        self._reader = threading.Thread(target=self._relay, name="streamrec-trainer-relay", daemon=True)
        self._reader.start()

    def _send(self, op: str, arg=None) -> None:
        with self._send_lock:
            try:
                self._conn.send((op, arg))
            except (EOFError, OSError):
                pass  # the child is gone: alive() says so

    def _relay(self) -> None:
        """Replay the child's metrics; hand it the gate's report every QUALITY_EVERY_S."""
        next_quality = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_quality:
                self._send("quality", self.quality())
                next_quality = time.monotonic() + QUALITY_EVERY_S
            try:
                if self._conn.poll(RELAY_EVERY_S):
                    op, calls = self._conn.recv()
                    if op == "metrics":
                        replay(self.metrics, calls)
            except (EOFError, OSError):
                if not self._stopping.is_set():
                    log.error("the trainer process exited (code %s)", self._proc.exitcode)
                return

    def follow(self, update: ModelUpdate) -> None:
        self._send("follow", update)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def stop(self) -> None:
        self._stopping.set()
        if self._proc is None:
            return
        self._send("stop")
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            log.warning("the trainer process did not stop within %.0f s: killed", STOP_TIMEOUT_S)
            self._proc.kill()
            self._proc.join(STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.join(2 * RELAY_EVERY_S)
        self._conn.close()
