"""Plain functions that build, place and tune the FAISS structure behind an ``ItemIndex``.

Kinds (``IndexParams.kind``):

* ``flat``  exact inner product (``IndexFlatIP``). Used below ``exact_threshold`` items.
* ``ivf``   ``IndexIVFFlat`` with inner product, spherical k-means coarse quantizer; ``nprobe`` is
            tuned at build time to reach ``target_recall`` (recall@10 against exact search on a
            sample of the catalogue used as queries). Default approximate kind: cheap incremental
            adds (one coarse assignment per item) and supported on the GPU.
* ``hnsw``  ``IndexHNSWFlat`` with inner product; ``efSearch`` tuned like nprobe. CPU only (FAISS
            has no GPU HNSW); an add costs a graph insertion per item. We measured the standard
            MIPS->L2 reduction (extra coordinate sqrt(M^2-|x|^2)) against plain inner-product HNSW
            on clustered items with log-normal norms and user-like queries: at 100k items the
            reduction reached recall@10 0.87 at efSearch=512, plain IP 0.95 at 64 and 0.99 at 256,
            so plain IP it is.

Tuning. Without ``sample_queries`` the tuner uses proxy queries built from the catalogue (items and
means of two items, ``proxy_queries``). Catalogue items alone proved optimistic for user vectors
(measured: IVF tuned to 0.96 on items gave 0.92 on user-like queries), so the effort found is also
multiplied by ``tune_safety`` (default 2). Pass a few hundred real user
vectors as ``sample_queries`` to tune on the real distribution (no safety factor then).

All vectors are float32; internal FAISS labels are positions 0..ntotal-1 (nothing is ever removed
from the FAISS structure; retired items are masked, see ``item_index``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np

from .errors import ItemIndexError
from .exact import exact_topk, recall_at_k

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "hnsw")
DEFAULT_EXACT_THRESHOLD = 200_000
GPU_MAX_K = 2048  # largest k (and nprobe) FAISS GPU indexes accept


@dataclass(frozen=True)
class IndexParams:
    kind: str = "auto"                 # auto | flat | ivf | hnsw ; auto = flat below exact_threshold else ivf
    target_recall: float = 0.95        # recall@10 the tuner aims for (plus tune_margin)
    tune_margin: float = 0.01
    tune_queries: int = 256            # catalogue vectors used as tuning queries
    nlist: int | None = None           # IVF lists; None -> ~4*sqrt(N), power of two
    nprobe: int | None = None          # None -> tuned
    tune_safety: int = 2               # effort multiplier when tuning on catalogue vectors
    train_points_per_list: int = 32    # k-means sample = nlist * this (bounded by N)
    kmeans_iters: int = 10
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int | None = None       # None -> tuned
    seed: int = 1234

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"IndexParams.kind must be one of {KINDS}, got {self.kind!r}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"IndexParams.target_recall must be in (0, 1], got {self.target_recall}")

    def replace(self, **changes) -> "IndexParams":
        return dataclasses.replace(self, **changes)


def choose_kind(n: int, params: IndexParams, exact_threshold: int) -> str:
    if params.kind != "auto":
        return params.kind
    return "flat" if n < exact_threshold else "ivf"


def default_nlist(n: int) -> int:
    """~4 sqrt(N) rounded to a power of two, at least 1 and at most N/39 (FAISS's k-means wants
    >= 39 points per centroid)."""
    if n < 39:
        return 1
    target = 4 * math.sqrt(n)
    nlist = 2 ** int(round(math.log2(target)))
    return int(max(1, min(nlist, n // 39)))


# ---------------------------------------------------------------- construction

def new_faiss_index(kind: str, dim: int, n: int, params: IndexParams):
    """An empty (untrained for IVF) CPU index of the given kind."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        nlist = params.nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        index.cp.niter = params.kmeans_iters
        index.cp.max_points_per_centroid = params.train_points_per_list
        index.cp.seed = params.seed
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        return index
    raise ItemIndexError(f"unknown index kind {kind!r}")


def to_gpu(cpu_index, device: int = 0):
    """Move a CPU index to the GPU. Returns (gpu_index, resources); keep both alive together."""
    res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(res, device, cpu_index), res


def to_cpu(index):
    """A CPU FAISS index with the same vectors (to save it, or to reuse its IVF centroids)."""
    if hasattr(index, "reconstruct_n") and not isinstance(index, faiss.Index):  # torch_flat.TorchFlatIP
        flat = faiss.IndexFlatIP(index.d)
        flat.add(index.reconstruct_n(0, index.ntotal))
        return flat
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        return faiss.index_gpu_to_cpu(index)
    return index


def search_params(kind: str, effort: int | None, sel=None):
    """SearchParameters for one call; ``effort`` is nprobe (ivf) or efSearch (hnsw)."""
    if kind == "ivf":
        p = faiss.SearchParametersIVF()
        if effort:
            p.nprobe = int(effort)
    elif kind == "hnsw":
        p = faiss.SearchParametersHNSW()
        if effort:
            p.efSearch = int(effort)
    else:
        if sel is None:
            return None
        p = faiss.SearchParameters()
    if sel is not None:
        p.sel = sel
    return p


@dataclass(frozen=True)
class Selection:
    """What a CPU search may return: labels alive in ``bitmap`` (None: every label), minus ``excl``."""
    bitmap: np.ndarray | None
    excl: np.ndarray | None


def selector(selection: Selection | None):
    """The FAISS IDSelector for ``selection`` (None when it lets everything through), and the
    objects it points into, which must stay alive for the call."""
    if selection is None:
        return None, ()
    bitmap = faiss.IDSelectorBitmap(selection.bitmap) if selection.bitmap is not None else None
    excl = selection.excl
    if excl is None or not len(excl):
        return bitmap, (bitmap,)
    batch = faiss.IDSelectorBatch(excl)
    not_batch = faiss.IDSelectorNot(batch)
    if bitmap is None:
        return not_batch, (batch, not_batch)
    both = faiss.IDSelectorAnd(bitmap, not_batch)
    return both, (bitmap, batch, not_batch, both)


def raw_search(index, kind: str, q: np.ndarray, kk: int, effort: int, selection: Selection | None):
    """One FAISS call -> (scores as inner products, labels), filtered by ``selection`` (FAISS GPU
    indexes take no selector: pass None)."""
    sel, keep = selector(selection)
    if kind == "hnsw":
        effort = max(effort, kk)
    d, lab = index.search(q, kk, params=search_params(kind, effort, sel))
    del keep
    return d, lab


def exhaustive_hnsw(index, q1: np.ndarray, want: int, selection: Selection):
    """An exact search of an HNSW index's flat storage (when efSearch would exceed ``max_effort``)."""
    storage = faiss.downcast_index(index.storage)
    sel, keep = selector(selection)
    d, lab = storage.search(q1, want, params=faiss.SearchParameters(sel=sel) if sel is not None else None)
    del keep
    return d, lab


def max_effort(kind: str, index) -> int:
    if kind == "ivf":
        return int(index.nlist)
    if kind == "hnsw":
        return 1024  # beyond this the exhaustive fallback on the HNSW storage is cheaper
    return 0


def tune_effort(kind: str, index, vectors: np.ndarray, params: IndexParams, *,
                on_gpu: bool, sample_queries: np.ndarray | None = None, k: int = 10) -> tuple[int, float]:
    """Smallest nprobe / efSearch in a doubling ladder whose recall@k against exact search reaches
    target_recall + tune_margin, on ``sample_queries`` or else on a sample of the catalogue (then
    times ``tune_safety``). A fixed ``params.nprobe`` / ``ef_search`` is only measured.
    Returns (effort, measured recall at the returned effort)."""
    fixed = params.nprobe if kind == "ivf" else params.ef_search
    if sample_queries is not None:
        q, safety = np.ascontiguousarray(sample_queries, dtype=np.float32), 1
    else:
        q = proxy_queries(vectors, params.tune_queries, params.seed)
        safety = max(1, int(params.tune_safety))
    _, truth = exact_topk(q, vectors, k)

    def measure(effort: int) -> float:
        _, found = index.search(q, k, params=search_params(kind, effort))
        r = recall_at_k(found, truth, k)
        log.debug("tune %s effort=%d recall@%d=%.4f", kind, effort, k, r)
        return r

    if fixed:
        return int(fixed), measure(int(fixed))
    ladder = _ladder(kind, index, on_gpu, k)
    goal = params.target_recall + params.tune_margin
    effort = ladder[-1]
    for e in ladder:
        if measure(e) >= goal:
            effort = e
            break
    effort = min(effort * safety, ladder[-1])
    recall = measure(effort)
    if recall < params.target_recall:
        log.warning("%s index reaches recall@%d=%.3f only (target %.3f) at effort %d",
                    kind, k, recall, params.target_recall, effort)
    return effort, recall


def proxy_queries(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Stand-in user vectors when none are given: half are catalogue items, half the mean of two
    random items (a user with two interests lies between item clusters, where IVF cells and HNSW
    neighbourhoods are least reliable)."""
    rng = np.random.default_rng(seed)
    n = min(n, len(vectors))
    a = vectors[rng.integers(0, len(vectors), n)]
    b = vectors[rng.integers(0, len(vectors), n)]
    q = a.copy()
    q[n // 2:] = 0.5 * (a[n // 2:] + b[n // 2:])
    return np.ascontiguousarray(q, dtype=np.float32)


def _ladder(kind: str, index, on_gpu: bool, k: int) -> list[int]:
    if kind == "ivf":
        top = min(int(index.nlist), GPU_MAX_K if on_gpu else int(index.nlist))
        out, e = [], 1
        while e < top:
            out.append(e)
            e *= 2
        return out + [top]
    return [e for e in (16, 32, 64, 128, 256, 512, 1024, 2048) if e >= k] or [k]


def reusable_centroids(previous, kind: str, n: int, dim: int, params: IndexParams) -> np.ndarray | None:
    """The coarse centroids of ``previous`` (the IVF index a new one replaces) when the new one
    would have the same number of lists over vectors of the same size: k-means is most of an IVF
    build (~1.5 s of the ~1.8 s at 100k items on the 2-core box), and the item vectors of
    consecutive model versions are close. None when they cannot be reused."""
    if kind != "ivf" or previous is None or "Gpu" in type(previous).__name__:
        return None
    ivf = faiss.try_extract_index_ivf(previous)
    nlist = params.nlist or default_nlist(n)
    if ivf is None or ivf.nlist != nlist or ivf.d != dim or n < nlist:
        return None
    return ivf.quantizer.reconstruct_n(0, nlist)


def build_faiss(kind: str, vectors: np.ndarray, params: IndexParams, *, use_gpu: bool,
                device: int = 0, sample_queries: np.ndarray | None = None,
                centroids: np.ndarray | None = None, max_effort_reused: int | None = None):
    """Build and fill the FAISS structure. Returns a dict with the index, the GPU resources (or
    None), the tuned search effort and its measured recall.

    ``centroids`` (IVF): the coarse centroids to reuse instead of training (``reusable_centroids``);
    if the tuned effort then exceeds ``max_effort_reused`` (the centroids fit the new vectors
    badly: the search would cost more), the index is built again with fresh k-means."""
    n, dim = vectors.shape
    t0 = time.perf_counter()
    res = None
    if kind == "hnsw" and use_gpu:
        log.info("HNSW has no GPU implementation in FAISS; keeping it on the CPU")
        use_gpu = False
    index = new_faiss_index(kind, dim, n, params)
    reused = kind == "ivf" and centroids is not None and len(centroids) == index.nlist
    if reused:
        index.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        index.is_trained = True
    if use_gpu:
        index, res = to_gpu(index, device)
    if kind == "ivf" and not reused:
        if n < index.nlist:
            raise ItemIndexError(f"IVF with nlist={index.nlist} needs at least that many items, got {n}")
        index.train(vectors)
    if n:
        index.add(vectors)
    t_fill = time.perf_counter() - t0
    effort, recall = 0, 1.0
    if kind in ("ivf", "hnsw") and n:
        effort, recall = tune_effort(kind, index, vectors, params, on_gpu=use_gpu,
                                     sample_queries=sample_queries)
    if reused and max_effort_reused is not None and effort > max_effort_reused:
        log.info("reused IVF centroids need nprobe %d (> %d): training afresh", effort, max_effort_reused)
        return build_faiss(kind, vectors, params, use_gpu=use_gpu, device=device, sample_queries=sample_queries)
    log.info("built %s index: n=%d dim=%d gpu=%s effort=%s recall@10~%.3f fill=%.2fs total=%.2fs%s",
             kind, n, dim, use_gpu, effort, recall, t_fill, time.perf_counter() - t0,
             " (centroids reused)" if reused else "")
    return {"index": index, "gpu_res": res, "on_gpu": use_gpu, "effort": effort,
            "tuned_recall": recall}


# An automatically chosen IVF index is kept only if its tuned nprobe probes under 1/IVF_WORTH_IT
# of its lists; beyond that the catalogue is searched exactly (cheaper per query, and exact).
IVF_WORTH_IT = 4


def build_chosen(kind: str, vectors: np.ndarray, params: IndexParams, *, auto: bool, use_gpu: bool,
                 device: int = 0, sample_queries: np.ndarray | None = None, previous=None) -> tuple[str, dict]:
    """``build_faiss`` for the kind ``choose_kind`` picked; returns (kind built, result).

    ``previous``: (FAISS index, effort) of the index this one replaces: an IVF index reuses its
    centroids (``reusable_centroids``). ``auto``: the kind was chosen by size, so an IVF index
    that would probe a quarter of its lists or more (vectors without cluster structure, such as
    an untrained model's) is replaced by exact search, which then costs less per query."""
    centroids = None
    if previous is not None:
        centroids = reusable_centroids(previous[0], kind, len(vectors), vectors.shape[1], params)
    built = build_faiss(kind, vectors, params, use_gpu=use_gpu, device=device, sample_queries=sample_queries,
                        centroids=centroids, max_effort_reused=2 * previous[1] if centroids is not None else None)
    if auto and kind == "ivf" and built["effort"] * IVF_WORTH_IT > built["index"].nlist:
        log.info("IVF needs nprobe %d of %d lists for recall@10 %.2f: exact search instead",
                 built["effort"], built["index"].nlist, params.target_recall)
        kind, built = "flat", build_faiss("flat", vectors, params, use_gpu=use_gpu, device=device)
    return kind, built


SMALL_BATCH = 16  # below this a CPU search runs on one OpenMP thread (see omp_threads)


def set_search_threads(n: int) -> None:
    """FAISS's OpenMP threads for the calling thread's searches from now on (a serving process
    that shares the cores with others searches on one)."""
    faiss.omp_set_num_threads(n)


@contextmanager
def omp_threads(n: int):
    """Run FAISS with ``n`` OpenMP threads in this thread (0: leave as is). Measured on the shared
    2-core machine: a batch-1 search of a 100k flat index took p50 5.3 ms / p99 36 ms with two
    OpenMP threads (they wait on each other when the cores are busy) and p50 0.7 ms with one. The
    OpenMP thread count is a per-calling-thread setting, so other threads are not affected."""
    if n <= 0:
        yield
        return
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(prev)


BACKENDS = ("auto", "faiss", "torch")


def resolve_backend(backend: str | None, use_gpu: bool | None = None) -> str:
    """"faiss" or "torch". Automatic (None / "auto"): torch when a CUDA device is there and FAISS
    sees no GPU (its GPU wheels need CUDA libraries a machine may lack) unless ``use_gpu`` is
    False; FAISS otherwise, on its GPU when it has one."""
    if backend not in (None, *BACKENDS):
        raise ItemIndexError(f"index backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("faiss", "torch"):
        return backend
    if use_gpu is False or (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0):
        return "faiss"
    try:
        import torch
    except ImportError:
        return "faiss"
    return "torch" if torch.cuda.is_available() else "faiss"


def resolve_gpu(use_gpu: bool | None) -> bool:
    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu is None:
        return n > 0
    if use_gpu and n == 0:
        raise ItemIndexError("use_gpu=True but faiss sees no GPU (faiss.get_num_gpus() == 0)")
    return bool(use_gpu)
