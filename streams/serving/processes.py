"""Serving from two child processes, a blue/green pair (setting ``serving_processes``).

Why: in one process, encoding and searching share the GIL with the event loop (ingestion) and
with model swaps. A swap (checksum, load, trace, index build: ~0.15-0.4 s of mostly Python on
the 2-core box) made single-user queries 4-5x slower at p99 while it ran
(``bench/live_swap.py``), however the swap was split up; and the serving thread's Python took
event-loop time from ingestion. A child process has a GIL of its own.

How:
- each child (``child_main``) holds a :class:`~streams.serving.live_model.LiveModel` and answers
  one request at a time on a pipe: ``serve``, ``recommend``, ``load``, ``add_items``;
- the parent, :class:`ProcessBackend`, is the worker's serving backend (``Serving`` calls it from
  its serving and swap threads, as it would call a LiveModel), and sends queries to the *active*
  child. A new version is loaded by the *standby* child; once it is ready the two change roles,
  and the new standby then loads the same version (so a query never waits for a load: what it
  waits for is the other process's share of the CPU);
- items first seen in the stream are forwarded to both children once (every 0.5 s, the
  worker's new-item timer); a child gives them cold-start vectors and adds them to its index,
  and carries them over to the versions it loads later;
- a child that dies is started again and brought to the version in force (``on_lost`` asks the
  swap thread to load it again); while no child has a version, the parent builds popularity
  records, as before a first version.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from index import set_search_threads

from ..lifecycle.model_store import ModelUpdate
from ..settings import Settings
from ..tuning import lower_thread_priority, set_mmap_threshold
from .live_model import LiveModel
from .recommend import Answer, Candidates, History, ModelIds, Payload, Request, Timings, modelless

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a child's first answer waits for its imports (torch, faiss)
CALL_TIMEOUT_S = 60.0  # a child that takes longer to answer is killed (and replaced)
LOAD_TIMEOUT_S = 600.0  # loading a version: checksum, load, index build of the whole catalogue


class ChildGone(RuntimeError):
    """The child process exited or its pipe broke."""


class ChildError(RuntimeError):
    """The child raised while handling a request (it keeps running)."""


class _Refused(RuntimeError):
    """The child's LiveModel refused a version (checksum, load): the reason is the message."""


def child_main(conn, settings: Settings) -> None:
    """A serving child: one LiveModel, one request at a time, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the worker; its exit closes our pipe
    set_mmap_threshold(settings.malloc_mmap_threshold_kb)  # as in the worker: a spawned child starts afresh
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s [serving child]: %(message)s")
    # FAISS searches on this thread alone: other processes share the cores, and then a stage's
    # thread CPU time (LiveModel) is all of its cost (the loader thread's is not in it)
    set_search_threads(1)
    live = LiveModel(settings)
    # loads run on a thread at a lower priority: a standby child loading a version competes for
    # the CPU with the active child's queries and the worker's event loop
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-child-load",
                                initializer=lower_thread_priority)

    def load(update: ModelUpdate):
        loaded = loader.submit(live.load, update).result()
        return loaded, live.model_version, live.index_version, live.last_refusal

    def serve(requests: list[tuple[str, History, float | None, str | None]], candidates: Candidates, k: int):
        return live.serve([Request(u, h, ts, scenario=sc) for u, h, ts, sc in requests], candidates, k)

    handlers = {
        "recommend": live.recommend,
        "serve": serve,
        "load": load,
        "add_items": lambda items: (live.add_items(items), live.index_version),
        "versions": lambda: (live.model_version, live.index_version),
    }
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):  # the worker is gone
            break
        if op == "stop":
            break
        try:
            reply = ("ok", handlers[op](*args))
        except Exception as exc:  # reported to the parent; the child goes on serving
            reply = ("error", f"{op}: {type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            break
    loader.shutdown(wait=False, cancel_futures=True)


class _Child:
    """The parent's handle on one child: a process and a pipe, used by one thread at a time."""

    def __init__(self, ctx, settings: Settings, name: str) -> None:
        self.name = name
        self.loaded: tuple[int, str] | None = None  # (version, sha256) it serves
        self.model_version = self.index_version = 0
        self._lock = threading.Lock()
        self._first_answer = True
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(theirs, settings), name=name, daemon=True)
        self.proc.start()
        theirs.close()

    def call(self, op: str, *args, timeout: float = CALL_TIMEOUT_S):
        with self._lock:
            if self._first_answer:
                timeout = max(timeout, START_TIMEOUT_S)
            try:
                self.conn.send((op, args))
                if not self.conn.poll(timeout):
                    # its answer may still come: the pipe cannot be used for another request
                    self.proc.kill()
                    raise ChildGone(f"{self.name} did not answer {op} within {timeout:.0f} s: killed")
                status, value = self.conn.recv()
            except (EOFError, OSError) as exc:
                raise ChildGone(f"{self.name} exited (code {self.proc.exitcode}): {exc!r}") from None
            self._first_answer = False
        if status == "error":
            raise ChildError(value)
        return value

    def alive(self) -> bool:
        return self.proc.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            with self._lock:
                self.conn.send(("stop", ()))
        except (EOFError, OSError):
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout)
        self.conn.close()


class ProcessBackend:
    """The serving :class:`~streams.serving.recommend.Backend` of two child processes (module docstring)."""

    def __init__(self, settings: Settings, on_lost: Callable[[ModelUpdate], None] = lambda update: None) -> None:
        """``on_lost(update)``: the active child died while serving ``update``; load it again
        (from the swap thread: the caller's ``load``)."""
        self.settings, self.on_lost = settings, on_lost
        self._ctx = multiprocessing.get_context("spawn")
        self._children = [self._start_child(n) for n in range(2)]
        self._active: _Child | None = None
        self._in_force: ModelUpdate | None = None  # the version the active child serves
        self._forwarded: set[str] = set()  # items already handed to the children
        self.last_refusal: str | None = None  # why the last refused version was refused

    def _start_child(self, n: int) -> _Child:
        return _Child(self._ctx, self.settings, f"streamrec-serving-{n}")

    # --- what serving reads --------------------------------------------------------------------
    @property
    def model_version(self) -> int:
        active = self._active
        return active.model_version if active else 0

    @property
    def index_version(self) -> int:
        active = self._active
        return active.index_version if active else 0

    def recommend(self, histories: Sequence[History], k: int) -> list[Answer]:
        answers = self._call_active("recommend", list(histories), k)
        return [None] * len(histories) if answers is None else answers

    def serve(self, requests: Sequence[Request], candidates: Candidates, k: int) -> tuple[list[Payload], ModelIds, Timings]:
        """The records of ``requests`` as bytes, built by the active child: the parent only
        pickles (user, history, ts, scenario) and the candidates, and unpickles bytes (with the records
        built here, the serving thread took about twice the parent's GIL time). Records without
        the model, built here, while no child serves. Timings: the child's, and ``ipc``, this
        thread's CPU time for the call (pickling, the pipe, unpickling)."""
        started = time.thread_time()
        out = self._call_active("serve", [(r.user_id, r.history, r.event_ts, r.scenario) for r in requests], candidates, k)
        if out is None:
            return modelless(requests, candidates, k)
        sent, ids, timings = out
        timings["ipc"] = time.thread_time() - started
        return sent, ids, timings

    def _call_active(self, op: str, *args):
        active = self._active
        if active is None:
            return None
        try:
            return active.call(op, *args)
        except ChildGone as exc:
            log.error("serving child failed: %s; popularity until it is replaced", exc)
            if self._active is active:
                self._active = None
                if self._in_force is not None:
                    self.on_lost(self._in_force)  # loading it again restarts the child
            return None

    # --- new versions (the swap thread) --------------------------------------------------------
    def load(self, update: ModelUpdate) -> bool:
        """Load ``update`` into the standby child, make it the active one, then bring the other
        child to the same version. False (and the active child untouched) if it is refused."""
        standby = self._standby(prefer=(update.version, update.sha256))
        try:
            self._load_into(standby, update)
        except (ChildGone, ChildError, _Refused) as exc:
            self.last_refusal = str(exc)
            log.error("refusing model version %d: %s; still serving version %d",
                      update.version, exc, self.model_version)
            return False
        self._active, self._in_force = standby, update
        log.info("model version %d served from %s", update.version, standby.name)
        other = self._standby()
        try:
            self._load_into(other, update)
        except (ChildGone, ChildError, _Refused) as exc:  # loaded again before it serves
            log.warning("%s did not load model version %d: %s", other.name, update.version, exc)
        return True

    def _load_into(self, child: _Child, update: ModelUpdate) -> None:
        key = (update.version, update.sha256)
        if child.loaded == key:
            return
        ok, child.model_version, child.index_version, why = child.call("load", update, timeout=LOAD_TIMEOUT_S)
        if not ok:
            raise _Refused(why)
        child.loaded = key

    def _standby(self, prefer: tuple[int, str] | None = None) -> _Child:
        """A child that is not active (one that has ``prefer`` loaded if there is one: after the
        active child died), started again if it has exited."""
        others = [n for n, c in enumerate(self._children) if c is not self._active]
        ready = [n for n in others if self._children[n].loaded == prefer and self._children[n].alive()]
        n = (ready or others)[0]
        child = self._children[n]
        if not child.alive():
            log.warning("%s exited (code %s); starting it again", child.name, child.proc.exitcode)
            child.stop(timeout=1.0)
            child = self._children[n] = self._start_child(n)
        return child

    # --- items first seen in the stream --------------------------------------------------------
    def wants(self, item_id: str) -> bool:
        return self._active is not None and item_id not in self._forwarded

    def add_items(self, items: list[tuple[str, list[str]]]) -> list[str]:
        """Hand new items to both children, the active one first; the ids the active one added."""
        active = self._active
        if active is None or not items:
            return []
        added: list[str] = []
        for child in [active] + [c for c in self._children if c is not active]:
            try:
                ids, child.index_version = child.call("add_items", items)
            except (ChildGone, ChildError) as exc:
                log.warning("%s did not take %d new items: %s", child.name, len(items), exc)
                continue
            if child is active:
                added = ids
        # Forwarded once: a child started again later gets them back from the next model version
        # (the trainer's vocabulary holds the stream's items).
        self._forwarded.update(item for item, _ in items)
        return added

    def close(self) -> None:
        for child in self._children:
            child.stop()
