"""Ranking metrics for leave-one-out evaluation (one relevant item per user).

A rank is 0-based: rank 0 means the held-out item scored highest. Ties count against the target
(an item with an equal score is ranked ahead), which is the pessimistic convention.
"""
from __future__ import annotations

import numpy as np
import torch


def ranks_from_scores(scores, targets, exclude=None):
    """0-based rank of ``targets[b]`` among ``scores[b]`` (B, N).

    ``exclude``: optional boolean mask (B, N) of items removed from the ranking (e.g. seen
    items, padding); the target itself is never excluded.
    """
    s = torch.as_tensor(scores, dtype=torch.float32).clone()
    t = torch.as_tensor(targets, dtype=torch.long)
    target_score = s.gather(1, t[:, None])                       # (B, 1)
    if exclude is not None:
        ex = torch.as_tensor(exclude, dtype=torch.bool).clone()
        ex[torch.arange(len(t)), t] = False
        s[ex] = float("-inf")
    # items strictly ahead, plus ties other than the target itself
    ahead = (s > target_score).sum(1) + (s == target_score).sum(1) - 1
    return ahead.numpy()


def hit_rate(ranks, k: int) -> float:
    r = np.asarray(ranks)
    return float((r < k).mean()) if r.size else 0.0


def ndcg(ranks, k: int) -> float:
    r = np.asarray(ranks, dtype=np.float64)
    if not r.size:
        return 0.0
    gain = np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)
    return float(gain.mean())


def summarize(ranks, ks=(10, 20)) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"HR@{k}"] = hit_rate(ranks, k)
        out[f"NDCG@{k}"] = ndcg(ranks, k)
    return out


def auc(scores, labels) -> float:
    """Area under the ROC curve: the probability that a positive scores above a negative (ties
    count half); NaN without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)                        # 1-based rank of each distinct score's last copy
    ranks = ((last - counts + 1 + last) / 2)[inverse]   # ties share their mean rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(probs, labels, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of predicted probabilities ``probs`` against ``labels``."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if y.size else float("nan")
