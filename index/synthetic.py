"""Seeded synthetic catalogues with structure, for tests and benchmarks.

Items: gaussian clusters (``n_clusters`` centres ~ N(0, I)), each item = centre + 0.6 * N(0, I),
scaled by a log-normal factor (sigma 0.25) so that norms vary like trained embeddings do (popular
items get larger norms, which is what makes inner-product search harder than cosine).
Queries ("user vectors"): a random mix of two cluster centres plus noise, not normalised.
"""

from __future__ import annotations

import numpy as np


def _centres(d: int, n_clusters: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_clusters, d)).astype(np.float32)


def clustered_items(n: int, d: int = 64, *, n_clusters: int = 256, seed: int = 0,
                    chunk: int = 262144) -> np.ndarray:
    centres = _centres(d, n_clusters, seed)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, n_clusters, m)] + 0.6 * rng.standard_normal((m, d), dtype=np.float32)
        x *= rng.lognormal(0.0, 0.25, size=(m, 1)).astype(np.float32)
        out[s:s + m] = x
    return out


def user_queries(n: int, d: int = 64, *, n_clusters: int = 256, seed: int = 0) -> np.ndarray:
    centres = _centres(d, n_clusters, seed)
    rng = np.random.default_rng(seed + 2)
    a, b = centres[rng.integers(0, n_clusters, n)], centres[rng.integers(0, n_clusters, n)]
    w = rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
    q = w * a + (1 - w) * b + 0.6 * rng.standard_normal((n, d), dtype=np.float32)
    return np.ascontiguousarray(q, dtype=np.float32)
