"""``IndexHolder``: the double buffer the serving path talks to.

* ``current`` is the live ``ItemIndex``; reading it is one attribute load, so a query never waits
  for a rebuild and never sees a half-built index (a new index becomes visible only once fully
  built, by a single reference assignment).
* ``swap(new)`` is atomic and refuses a version that is not newer than the live one
  (``StaleIndexError``): versions only increase.
* ``refresh_async(build_fn)`` runs ``build_fn()`` on a background thread (one rebuild at a time)
  and swaps its result in.
* Adds and retires made while a rebuild is in flight are logged and replayed, in order, onto the
  new index just before it is swapped in, so none is lost. Replay is last-write-wins: an id added
  during the rebuild ends up with the vector given to ``add`` even if ``build_fn`` also produced a
  vector for it (pass ``replay=False`` to ``refresh_async`` to drop the log instead, e.g. when the
  rebuild re-encodes the whole catalogue with a new model and the logged vectors are stale).
* A query that started on the old index finishes on it; the old index is freed when the last
  reference goes (on a GPU both indexes exist on the device during the swap).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .errors import StaleIndexError
from .item_index import Hit, ItemIndex

log = logging.getLogger(__name__)


class IndexHolder:
    def __init__(self, index: ItemIndex | None = None):
        self._current = index
        self._write = threading.Lock()            # serialises add / retire / swap
        self._logs: list[list[tuple]] = []        # one op log per rebuild in flight
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-refresh")

    # ------------------------------------------------------------------ reading

    @property
    def current(self) -> ItemIndex | None:
        return self._current

    @property
    def version(self) -> int:
        """Version of the live index, -1 when there is none yet."""
        cur = self._current
        return -1 if cur is None else cur.version

    def search(self, queries: np.ndarray, k: int,
               exclude: Sequence[Collection[str]] | None = None) -> list[list[Hit]]:
        cur = self._current
        if cur is None:
            return [[] for _ in range(len(np.atleast_2d(queries)))]
        return cur.search(queries, k, exclude)

    def search_versioned(self, queries, k, exclude=None) -> tuple[int, list[list[Hit]]]:
        """Like ``search`` but also returns the version of the index that answered."""
        cur = self._current
        if cur is None:
            return -1, [[] for _ in range(len(np.atleast_2d(queries)))]
        return cur.version, cur.search(queries, k, exclude)

    def __len__(self) -> int:
        cur = self._current
        return 0 if cur is None else len(cur)

    def __contains__(self, item_id) -> bool:
        cur = self._current
        return cur is not None and item_id in cur

    # ------------------------------------------------------------------ writing

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> int:
        with self._write:
            cur = self._current
            if cur is None:
                raise StaleIndexError("IndexHolder has no index yet; swap one in before add()")
            n = cur.add(ids, vectors)
            if self._logs:
                entry = ("add", list(ids), np.array(vectors, dtype=np.float32, copy=True))
                for op_log in self._logs:
                    op_log.append(entry)
            return n

    def retire(self, ids: Sequence[str]) -> int:
        with self._write:
            cur = self._current
            n = 0 if cur is None else cur.retire(ids)
            if self._logs:
                entry = ("retire", list(ids))
                for op_log in self._logs:
                    op_log.append(entry)
            return n

    def swap(self, new_index: ItemIndex) -> ItemIndex | None:
        """Make ``new_index`` live; returns the previous index. Raises ``StaleIndexError`` if its
        version is not greater than the live one."""
        with self._write:
            return self._swap_locked(new_index, ())

    def _swap_locked(self, new_index: ItemIndex, ops) -> ItemIndex | None:
        old = self._current
        if old is not None and new_index.version <= old.version:
            raise StaleIndexError(f"refusing to swap in index version {new_index.version}: "
                                  f"live version is {old.version}")
        for op in ops:  # replay, in order, what happened during the rebuild
            if op[0] == "add":
                new_index.add(op[1], op[2])
            else:
                new_index.retire(op[1])
        self._current = new_index
        log.info("index swapped: version %s -> %d (%d items, %d replayed ops)",
                 None if old is None else old.version, new_index.version, len(new_index), len(ops))
        return old

    def refresh_async(self, build_fn: Callable[[], ItemIndex], *, replay: bool = True) -> Future:
        """Build a new index with ``build_fn()`` on the background thread and swap it in. The
        Future resolves to the new index (or raises what ``build_fn`` or ``swap`` raised; the live
        index is then untouched). Rebuilds run one at a time, in submission order."""
        op_log: list[tuple] = []
        with self._write:
            self._logs.append(op_log)

        def job() -> ItemIndex:
            try:
                new_index = build_fn()
            except BaseException:
                with self._write:
                    self._logs.remove(op_log)
                log.exception("index rebuild failed; keeping version %d", self.version)
                raise
            with self._write:
                self._logs.remove(op_log)
                self._swap_locked(new_index, op_log if replay else ())
            return new_index

        return self._executor.submit(job)

    def refresh(self, build_fn: Callable[[], ItemIndex], *, replay: bool = True) -> ItemIndex:
        """Blocking ``refresh_async``."""
        return self.refresh_async(build_fn, replay=replay).result()

    def close(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait)

    def __enter__(self) -> "IndexHolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
