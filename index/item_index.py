"""``ItemIndex``: external string ids + float32 vectors -> filtered, batched inner-product top-k.

Labels. FAISS labels are positions 0..ntotal-1 in the FAISS structure; ``_ids[label]`` is the
external id. Nothing is ever removed from FAISS (GPU indexes cannot ``remove_ids``, HNSW cannot
either): ``retire`` clears the item's bit in an ``alive`` bitmap, and re-adding an existing id
appends the new vector under a new label and clears the old label's bit (last write wins). Dead
labels cost memory and scan time until the next rebuild (``ItemIndex.build``, given the index it
replaces as ``base``) compacts them away; ``stats()["dead"]`` says how many there are.

Filtering. On the CPU the alive bitmap is handed to FAISS as an ``IDSelectorBitmap`` so dead
labels are never candidates. Per-query exclusions (items the user has seen) differ per row, and a
FAISS call takes one selector for the whole batch, so a batch over-fetches ``k + max_i |excl_i|``
and drops each row's excluded items afterwards — for an exact index that always leaves k. A single
query puts its exclusions in the selector instead. Any row still short of k (an approximate index
can return fewer candidates) is searched again alone with the full selector and a doubled
nprobe/efSearch, up to an exhaustive search. On the GPU there are no selectors: over-fetch also
covers dead labels, doubling up to FAISS's GPU limit of k=2048. The torch backend (a CUDA GPU
without FAISS GPU: ``torch_flat``) is exact and filters on the device, so one pass gives k.

Threading. Searches share a readers/writer lock; ``add``/``retire`` take it exclusively, so a
search never sees a half-applied add. FAISS GPU searches take it exclusively as well (its indexes are
not thread-safe). The ``version`` of an index never changes after build; serving swaps in a new
index (with its model) for a new version (``streams.serving.live_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import numpy as np

from . import factory
from ._rwlock import RWLock
from .errors import ItemIndexError
from .inputs import as_ids, as_matrix, last_occurrences
from .factory import DEFAULT_EXACT_THRESHOLD, GPU_MAX_K, IndexParams

log = logging.getLogger(__name__)

Hit = tuple[str, float]


def _label_map(ids: list[str], base: "ItemIndex | None") -> dict[str, int]:
    """id -> position of its last occurrence (a batch with repeats: last write wins).

    With ``base`` (the index being replaced) whose ids start like ``ids``, its map is copied and
    only the rest is added: building 100,000 entries holds the GIL for tens of milliseconds in
    Python bytecode, and every thread that releases the GIL around a FAISS or torch call (a
    serving thread, dozens of times per query) waits for it again meanwhile."""
    label_of = base._prefix_label_map(ids) if base is not None else None
    if label_of is None:
        return dict(zip(ids, range(len(ids))))
    label_of.update(zip(ids[len(label_of):], range(len(label_of), len(ids))))
    return label_of


class ItemIndex:
    """Use ``ItemIndex.build`` (or ``persistence.load``); the constructor is internal."""

    def __init__(self, *, faiss_index, kind: str, dim: int, version: int, params: IndexParams,
                 effort: int = 0, on_gpu: bool = False, gpu_res=None,
                 ids: Sequence[str] = (), alive: np.ndarray | None = None, tuned_recall: float = 1.0,
                 label_of: dict[str, int] | None = None, backend: str = "faiss"):
        self._index = faiss_index  # a FAISS index, or torch_flat.TorchFlatIP (backend "torch")
        self.backend = backend
        self.kind = kind
        self._dim = int(dim)
        self._version = int(version)
        self.params = params
        self.effort = int(effort)            # nprobe (ivf) / efSearch (hnsw)
        self.on_gpu = faiss_index.device.type == "cuda" if backend == "torch" else bool(on_gpu)
        self._faiss_gpu = self.on_gpu and backend == "faiss"  # no selectors, k <= 2048, not thread-safe
        self._gpu_res = gpu_res
        self.tuned_recall = float(tuned_recall)
        self._lock = RWLock()
        n = int(faiss_index.ntotal)
        if len(ids) != n:
            raise ItemIndexError(f"{len(ids)} ids for a FAISS index holding {n} vectors")
        cap = max(16, n)
        self._ids = np.empty(cap, dtype=object)
        self._ids[:n] = list(ids)
        self._bitmap = np.zeros((cap + 7) // 8, dtype=np.uint8)
        alive = np.ones(n, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)[:n]
        self._bitmap[: (n + 7) // 8] = np.packbits(alive, bitorder="little")
        if backend == "torch" and not alive.all():
            faiss_index.set_alive(np.flatnonzero(~alive), False)
        if label_of is None:  # every alive label, or (from build) every label, unique ids
            label_of = {self._ids[i]: i for i in np.flatnonzero(alive)}
        self._label_of: dict[str, int] = label_of
        self._n_labels = n

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray, *, version: int = 0,
              exact_threshold: int = DEFAULT_EXACT_THRESHOLD, use_gpu: bool | None = None,
              params: IndexParams | None = None, dim: int | None = None, device: int = 0,
              sample_queries: np.ndarray | None = None, base: "ItemIndex | None" = None,
              backend: str | None = None) -> "ItemIndex":
        """Build an index over (ids, vectors (N, D) float32), inner-product scoring.

        Exact ``IndexFlatIP`` below ``exact_threshold`` items, else ``params.kind`` (default IVF,
        nprobe tuned for ``params.target_recall`` recall@10; with ``kind="auto"``, exact again when
        IVF would probe a quarter of its lists: ``factory.build_chosen``). ``use_gpu=None`` uses the
        GPU when ``faiss.get_num_gpus() > 0``. ``dim`` is needed only for an empty catalogue given as a
        plain empty list. Repeated ids: the last one wins. ``sample_queries`` (a few hundred real
        user vectors) make the nprobe/efSearch tuning exact for the real query distribution.
        ``base``: the index this one will replace; the id map of the ids both start with is
        copied from it (the same index, built with less work holding the GIL), and an IVF index
        reuses its coarse centroids instead of training k-means again, unless they would need
        more than twice its nprobe. ``backend``: "faiss", "torch" (exact search in a torch tensor, on
        CUDA when there is one, else the CPU) or None: torch when CUDA is there and FAISS GPU is not
        (``factory.resolve_backend``).
        """
        params = params or IndexParams()
        if dim is not None and np.asarray(vectors).size == 0:
            vectors = np.zeros((0, dim), np.float32)
        vectors = as_matrix(vectors, dim, "vectors")
        ids = as_ids(ids, len(vectors))
        label_of = _label_map(ids, base)
        if len(label_of) != len(ids):
            keep = np.fromiter(sorted(label_of.values()), dtype=np.int64)
            ids = [ids[i] for i in keep]
            vectors = np.ascontiguousarray(vectors[keep])
            label_of = dict(zip(ids, range(len(ids))))
        if factory.resolve_backend(backend, use_gpu) == "torch":
            from .torch_flat import TorchFlatIP, default_device
            store = TorchFlatIP(vectors.shape[1], default_device(device), vectors)
            return cls(faiss_index=store, kind="flat", dim=vectors.shape[1], version=version, params=params,
                       ids=ids, label_of=label_of, backend="torch")
        use_gpu = factory.resolve_gpu(use_gpu)
        kind = factory.choose_kind(len(vectors), params, exact_threshold)
        if sample_queries is not None:
            sample_queries = as_matrix(sample_queries, vectors.shape[1], "sample_queries")
        previous = None
        if base is not None and base.kind == kind and base.backend == "faiss":
            with base._lock.read():
                previous = (factory.to_cpu(base._index) if base.on_gpu else base._index, base.effort)
        kind, built = factory.build_chosen(kind, vectors, params, auto=params.kind == "auto", use_gpu=use_gpu,
                                           device=device, sample_queries=sample_queries, previous=previous)
        return cls(faiss_index=built["index"], kind=kind, dim=vectors.shape[1], version=version,
                   params=params, effort=built["effort"],
                   on_gpu=built["on_gpu"], gpu_res=built["gpu_res"], ids=ids,
                   tuned_recall=built["tuned_recall"], label_of=label_of)

    def _prefix_label_map(self, ids: list[str]) -> dict[str, int] | None:
        """The id map of the longest run of leading ``ids`` that this index holds at labels 0, 1, ...
        in the same order; None when it has dead labels, when there is no such run, or when more
        than half of its labels are not in it (the map is copied, then those are deleted)."""
        with self._lock.read():
            n = min(self._n_labels, len(ids))
            if n == 0 or self._n_labels != len(self._label_of):
                return None
            theirs = np.empty(n, dtype=object)
            theirs[:] = ids[:n]
            differ = np.flatnonzero(self._ids[:n] != theirs)  # elementwise, in C
            shared = int(differ[0]) if len(differ) else n
            if shared == 0 or self._n_labels - shared > shared:
                return None
            label_of = self._label_of.copy()
            for item_id in self._ids[shared:self._n_labels]:
                del label_of[item_id]
            return label_of

    # ------------------------------------------------------------------ properties

    @property
    def version(self) -> int:
        return self._version

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, item_id) -> bool:
        return str(item_id) in self._label_of

    def ids(self) -> list[str]:
        """The live (not retired) ids, in label order."""
        with self._lock.read():
            return [s for s, _ in sorted(self._label_of.items(), key=lambda kv: kv[1])]

    def stats(self) -> dict:
        return {"version": self._version, "kind": self.kind, "dim": self._dim, "items": len(self),
                "labels": self._n_labels, "dead": self._n_labels - len(self), "effort": self.effort,
                "nlist": int(getattr(self._index, "nlist", 0)), "on_gpu": self.on_gpu, "backend": self.backend,
                "tuned_recall": round(self.tuned_recall, 4)}

    def __repr__(self) -> str:
        s = self.stats()
        return f"ItemIndex(version={s['version']}, kind={s['kind']}, items={s['items']}, dim={s['dim']}, gpu={s['on_gpu']})"

    # ------------------------------------------------------------------ mutation

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> int:
        """Add items, visible to the next search; no rebuild. Re-adding a live id replaces its
        vector (last write wins); re-adding a retired id brings it back. Returns the count added."""
        vectors = as_matrix(vectors, self._dim, "vectors")
        ids = as_ids(ids, len(vectors))
        if not ids:
            return 0
        keep = last_occurrences(ids)
        if len(keep) != len(ids):
            ids = [ids[i] for i in keep]
            vectors = np.ascontiguousarray(vectors[keep])
        m = len(ids)
        with self._lock.write():
            if self.kind == "ivf" and not self._index.is_trained:  # pragma: no cover - build always trains
                raise ItemIndexError("IVF index is not trained")
            start = self._n_labels
            self._index.add(vectors)
            self._grow(start + m)
            self._ids[start:start + m] = ids
            old = [self._label_of[s] for s in ids if s in self._label_of]
            if old:
                self._set_bits(np.asarray(old, dtype=np.int64), False)
            new = np.arange(start, start + m, dtype=np.int64)
            self._set_bits(new, True)
            self._label_of.update(zip(ids, new.tolist()))
            self._n_labels = start + m
        return m

    def retire(self, ids: Sequence[str]) -> int:
        """Mask items: they are never returned again (until re-added). Unknown ids are ignored.
        Returns the number of items retired."""
        if isinstance(ids, (str, bytes)):
            raise TypeError("retire() takes a sequence of ids, not a single string")
        with self._lock.write():
            labels = [self._label_of.pop(str(s)) for s in ids if str(s) in self._label_of]
            if labels:
                self._set_bits(np.asarray(labels, dtype=np.int64), False)
        return len(labels)

    def _grow(self, n: int) -> None:
        cap = len(self._ids)
        if n <= cap:
            return
        cap = max(n, 2 * cap)
        ids = np.empty(cap, dtype=object)
        ids[: self._n_labels] = self._ids[: self._n_labels]
        self._ids = ids
        bitmap = np.zeros((cap + 7) // 8, dtype=np.uint8)
        bitmap[: len(self._bitmap)] = self._bitmap
        self._bitmap = bitmap

    def _set_bits(self, labels: np.ndarray, value: bool) -> None:
        if self.backend == "torch":
            self._index.set_alive(labels, value)
        byte, bit = labels >> 3, (labels & 7).astype(np.uint8)
        masks = np.left_shift(np.uint8(1), bit).astype(np.uint8)
        if value:
            np.bitwise_or.at(self._bitmap, byte, masks)
        else:
            np.bitwise_and.at(self._bitmap, byte, np.invert(masks))

    # ------------------------------------------------------------------ search

    def search(self, queries: np.ndarray, k: int,
               exclude: Sequence[Collection[str]] | None = None) -> list[list[Hit]]:
        """Top-k by inner product for each query row: a list (one per row) of (id, score), best
        first. Never returns a retired item or one in ``exclude[i]``; returns k items whenever at
        least k live, non-excluded items exist (fewer otherwise). queries (B, D) float32."""
        q = as_matrix(queries, self._dim, "queries")
        B = len(q)
        if exclude is not None and len(exclude) != B:
            raise ValueError(f"exclude has {len(exclude)} rows for {B} queries")
        k = int(k)
        if k <= 0 or B == 0:
            return [[] for _ in range(B)]
        lock = self._lock.write() if self._faiss_gpu else self._lock.read()
        with lock, factory.omp_threads(1 if B < factory.SMALL_BATCH and not self.on_gpu else 0):
            n_alive = len(self._label_of)
            if n_alive == 0:
                return [[] for _ in range(B)]
            excl = self._exclusion_labels(exclude, B)
            return self._search_locked(q, k, excl, n_alive)

    def _exclusion_labels(self, exclude, B: int) -> list[np.ndarray]:
        empty = np.zeros(0, dtype=np.int64)
        if exclude is None:
            return [empty] * B
        out = []
        for row in exclude:
            if isinstance(row, (str, bytes)):
                raise TypeError("each exclude row must be a collection of ids, not a string")
            label_of = self._label_of
            labels = {label_of[s] for s in map(str, row) if s in label_of}
            out.append(np.fromiter(labels, dtype=np.int64, count=len(labels)) if labels else empty)
        return out

    def _search_locked(self, q: np.ndarray, k: int, excl: list[np.ndarray], n_alive: int) -> list[list[Hit]]:
        B = len(q)
        if self.backend == "torch":  # exact, filtered on the device: k whenever k are left
            scores, labels = self._index.search(q, min(k, n_alive), excl)
            return self._collect_rows(scores, labels, [np.zeros(0, np.int64)] * B, k)
        n_dead = self._n_labels - n_alive
        want = [min(k, n_alive - len(e)) for e in excl]
        extra = max(len(e) for e in excl)
        if self._faiss_gpu:
            kk = min(k + extra + min(n_dead, 2 * k), self._n_labels, GPU_MAX_K)
            sel_rows = None
        elif B == 1 and extra:
            kk = want[0]
            sel_rows = excl
        else:
            kk = min(k + extra, n_alive)
            sel_rows = None
        out: list[list[Hit]] = [[] for _ in range(B)]
        if kk > 0:
            scores, labels = self._raw_search(q, kk, self.effort, sel_rows[0] if sel_rows else None)
            out = self._collect_rows(scores, labels, excl, k)
        short = [i for i in range(B) if len(out[i]) < want[i]]
        for i in short:
            out[i] = self._search_row_until_full(q[i:i + 1], k, excl[i], want[i], kk)
        return out

    def _collect_rows(self, scores: np.ndarray, labels: np.ndarray, excl: list[np.ndarray],
                      k: int) -> list[list[Hit]]:
        """``_collect`` for every row of a batch at once (array operations over the whole
        (B, kk) result instead of a few per row: serving calls this with a few hundred rows)."""
        B = len(labels)
        ok = self._usable(labels)
        if any(len(e) for e in excl):
            # (row, label) pairs as one integer each, so one isin covers every row's exclusions
            n = max(self._n_labels, 1)
            codes = np.repeat(np.arange(B, dtype=np.int64) * n, [len(e) for e in excl]) + np.concatenate(excl)
            found = np.where(ok, np.arange(B, dtype=np.int64)[:, None] * n + labels, -1)
            ok &= ~np.isin(found, codes)
        keep = ok & (np.cumsum(ok, axis=1) <= k)
        ids = self._ids[labels[keep]].tolist()
        hits = list(zip(ids, scores[keep].tolist()))
        ends = np.cumsum(keep.sum(axis=1)).tolist()
        return [hits[a:b] for a, b in zip([0] + ends[:-1], ends)]

    def _usable(self, labels: np.ndarray) -> np.ndarray:
        """Labels that are real results and alive (the GPU and a holder of dead labels can return
        retired ones)."""
        ok = labels >= 0
        if self._faiss_gpu or self._n_labels != len(self._label_of):
            alive = np.zeros(labels.shape, dtype=bool)
            lab = labels[ok]
            alive[ok] = (self._bitmap[lab >> 3] >> (lab & 7).astype(np.uint8)) & 1 == 1
            ok = alive
        return ok

    def _collect(self, scores: np.ndarray, labels: np.ndarray, excl: np.ndarray, k: int) -> list[Hit]:
        ok = self._usable(labels)
        if len(excl):
            ok &= ~np.isin(labels, excl)
        lab = labels[ok][:k]
        return list(zip(self._ids[lab].tolist(), scores[ok][:k].tolist()))

    def _search_row_until_full(self, q1, k, excl, want, kk) -> list[Hit]:
        """One query, escalating: (CPU) exclusions in the selector, doubling nprobe/efSearch up to
        exhaustive; (GPU) doubling the over-fetch and nprobe up to the GPU limits."""
        effort = max(self.effort, 1)
        top_effort = factory.max_effort(self.kind, self._index)
        if self._faiss_gpu:
            top_effort = min(top_effort, GPU_MAX_K)
            cap = min(self._n_labels, GPU_MAX_K)
        hits: list[Hit] = []
        while True:
            if self._faiss_gpu:
                kk = min(max(kk * 2, k), cap)
                scores, labels = self._raw_search(q1, kk, effort, None)
            else:
                kk = want
                if self.kind == "hnsw" and effort >= top_effort:
                    return self._exhaustive_hnsw(q1, want, excl, k)
                scores, labels = self._raw_search(q1, kk, max(effort, kk) if self.kind == "hnsw" else effort, excl)
            hits = self._collect(scores[0], labels[0], excl, k)
            done_effort = self.kind == "flat" or effort >= top_effort
            if len(hits) >= want or (done_effort and (not self._faiss_gpu or kk >= cap)):
                break
            effort = min(effort * 2, top_effort) if self.kind != "flat" else effort
        if len(hits) < want:
            log.warning("search returned %d of %d wanted results (kind=%s gpu=%s)", len(hits), want,
                        self.kind, self.on_gpu)
        return hits

    def _exhaustive_hnsw(self, q1, want, excl, k) -> list[Hit]:
        d, lab = factory.exhaustive_hnsw(self._index, q1, want, self._selection(excl))
        return self._collect(d[0], lab[0], excl, k)

    def _selection(self, excl: np.ndarray | None) -> "factory.Selection":
        all_alive = self._n_labels == len(self._label_of)
        return factory.Selection(None if all_alive else self._bitmap, excl)

    def _raw_search(self, q, kk: int, effort: int, excl: np.ndarray | None):
        """One FAISS call -> (scores as inner products, labels). CPU: dead labels (and ``excl``)
        filtered by a selector. GPU: no selector."""
        selection = None if self._faiss_gpu else self._selection(excl)
        return factory.raw_search(self._index, self.kind, q, kk, effort, selection)
