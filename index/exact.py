"""Exact inner-product top-k in plain numpy, and recall@k. Used as ground truth by the tuner,
the tests and the benchmark (it is the "numpy brute-force baseline")."""

from __future__ import annotations

import numpy as np


def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, *, chunk: int = 65536):
    """Top-k by inner product. queries (B, D), vectors (N, D) -> scores (B, k'), rows (B, k'),
    k' = min(k, N), best first. Scans ``vectors`` in chunks so memory stays bounded."""
    queries = np.asarray(queries, dtype=np.float32)
    vectors = np.asarray(vectors, dtype=np.float32)
    B, N = len(queries), len(vectors)
    k = min(k, N)
    best_s = np.full((B, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((B, 0), dtype=np.int64)
    if k <= 0:
        return best_s, best_i
    for start in range(0, N, chunk):
        s = queries @ vectors[start:start + chunk].T  # (B, c)
        kc = min(k, s.shape[1])
        part = np.argpartition(-s, kc - 1, axis=1)[:, :kc]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, keep, axis=1)
        best_i = np.take_along_axis(cand_i, keep, axis=1)
    return best_s, best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each row's true top-k (``truth[:, :k]``) present in ``found[:, :k]``.
    Entries of -1 in ``found`` count as misses."""
    found = np.asarray(found)[:, :k]
    truth = np.asarray(truth)[:, :k]
    if truth.size == 0:
        return 1.0
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth))
    return hits / truth.size
