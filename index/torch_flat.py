"""Exact inner-product top-k with torch: the item index's backend on a CUDA GPU without FAISS GPU.

FAISS GPU wheels need CUDA libraries a machine may not have (the GPU machine this project runs on
has torch with CUDA 13 but no cuBLAS 12 for ``faiss-gpu-cu12``), so ``ItemIndex`` can keep its
vectors in a torch tensor instead and search them with one matrix product and ``torch.topk`` per
block of queries. Unlike FAISS GPU (no ID selectors, results capped at k=2048) the filters are
exact: retired labels carry a -inf bias added inside the product, and each row's excluded labels
are set to -inf before the top-k, so a search returns k items whenever k live, non-excluded
items exist and never needs a second pass.

``TorchFlatIP`` has the part of a FAISS index's surface that ``ItemIndex`` uses (``ntotal``,
``d``, ``is_trained``, ``add``, ``reconstruct_n``) plus ``set_alive`` and a filtered ``search``.
It runs on any torch device; the tests use the CPU. Only ``ItemIndex`` calls it, under its
readers/writer lock: ``add`` and ``set_alive`` exclusively, searches shared (torch kernels may be
launched from several threads; each search allocates its own score block).
"""

from __future__ import annotations

import numpy as np
import torch

# Score block per matrix product: queries x items <= this many floats (256 MiB), so a batch of 256
# queries over 1M items runs as 4 blocks of 64 rather than one 1 GiB score matrix.
BLOCK_SCORES = 1 << 26


def default_device(device: int = 0) -> str:
    return f"cuda:{device}" if torch.cuda.is_available() else "cpu"


class TorchFlatIP:
    """Vectors (N, D) float32 on ``device`` with spare capacity (adds copy into it; it doubles when
    full), and a bias per label: 0 alive, -inf retired."""

    is_trained = True

    def __init__(self, dim: int, device: str = "cpu", vectors: np.ndarray | None = None):
        self.d = int(dim)
        self.device = torch.device(device)
        self.ntotal = 0
        self._vectors = torch.empty((0, self.d), dtype=torch.float32, device=self.device)
        self._bias = torch.empty(0, dtype=torch.float32, device=self.device)
        if vectors is not None and len(vectors):
            self.add(vectors)

    def _reserve(self, n: int) -> None:
        cap = self._vectors.shape[0]
        if n <= cap:
            return
        cap = max(n, 2 * cap, 1024)
        vectors = torch.empty((cap, self.d), dtype=torch.float32, device=self.device)
        bias = torch.full((cap,), float("-inf"), dtype=torch.float32, device=self.device)
        vectors[: self.ntotal] = self._vectors[: self.ntotal]
        bias[: self.ntotal] = self._bias[: self.ntotal]
        self._vectors, self._bias = vectors, bias

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (labels ntotal.. ntotal+m-1), alive."""
        m = len(vectors)
        self._reserve(self.ntotal + m)
        rows = slice(self.ntotal, self.ntotal + m)
        self._vectors[rows] = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device)
        self._bias[rows] = 0.0
        self.ntotal += m

    def set_alive(self, labels: np.ndarray, alive: bool) -> None:
        index = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self._bias[index] = 0.0 if alive else float("-inf")

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        return self._vectors[start:start + n].cpu().numpy()

    def search(self, queries: np.ndarray, k: int, exclude: list[np.ndarray] | None = None):
        """(scores (B, k), labels (B, k)) as numpy, best first; label -1 (score -inf) where fewer
        than k live, non-excluded labels exist. ``exclude[i]``: labels row i must not return."""
        n = self.ntotal
        B = len(queries)
        k = min(int(k), n)
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device)
        vectors_t, bias = self._vectors[:n].T, self._bias[:n]
        rows, cols = _exclusion_pairs(exclude, self.device)
        block = max(1, BLOCK_SCORES // max(n, 1))
        scores_out, labels_out = [], []
        for start in range(0, B, block):
            scores = torch.addmm(bias, q[start:start + block], vectors_t)  # bias broadcast per row
            if rows is not None:
                inside = (rows >= start) & (rows < start + len(scores))
                scores[rows[inside] - start, cols[inside]] = float("-inf")
            top_s, top_i = torch.topk(scores, k, dim=1)
            scores_out.append(top_s)
            labels_out.append(top_i)
        top_s = torch.cat(scores_out).cpu().numpy()
        top_i = torch.cat(labels_out).cpu().numpy()
        top_i[np.isneginf(top_s)] = -1
        return top_s, top_i


def _exclusion_pairs(exclude: list[np.ndarray] | None, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Every row's excluded labels as two index tensors (row, label) on ``device``."""
    if not exclude or not any(len(e) for e in exclude):
        return None, None
    rows = np.repeat(np.arange(len(exclude), dtype=np.int64), [len(e) for e in exclude])
    cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)
