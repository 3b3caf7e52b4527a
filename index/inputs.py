"""Checking what callers hand the index: vectors as float32 matrices, ids as non-empty strings."""

from __future__ import annotations

import numpy as np


def as_matrix(x, dim: int | None, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1 and dim is not None and x.shape[0] == dim:
        x = x[None, :]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, d)"
        raise ValueError(f"{what} must have shape {want}, got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return x


def as_ids(ids, n: int) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of ids, not a single string")
    out = list(map(str, ids))  # map, not a comprehension: no bytecode per id (see item_index._label_map)
    if len(out) != n:
        raise ValueError(f"got {len(out)} ids for {n} vectors")
    if not all(out):
        raise ValueError("ids must be non-empty strings")
    return out


def last_occurrences(ids: list[str]) -> np.ndarray:
    """Positions of the last occurrence of each id (a batch with repeats: last write wins)."""
    last = dict(zip(ids, range(len(ids))))
    if len(last) == len(ids):
        return np.arange(len(ids))
    return np.fromiter(sorted(last.values()), dtype=np.int64)
