"""Leave-one-out evaluation with full ranking over the whole catalogue.

For every user with at least 3 events, the model ranks ALL items (padding excluded) for the
held-out event (``valid`` = second-to-last, ``test`` = last), with and without filtering the items
already in the user's input history. A popularity baseline (training-event counts) is ranked in
the same run under the same protocol. Data with scenarios is also scored per scenario of the
held-out event (``scenarios``: name -> users and the seen-filtered figures).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from model.data import EvalSplit, SeqDataset, loo_split, loo_train, pad_left
from model.encoder import PAD, SeqEncoder
from model.interactions import DEFAULT_SCENARIO
from model.metrics import ranks_from_scores, summarize

log = logging.getLogger(__name__)


@torch.no_grad()
def user_vectors(enc: SeqEncoder, inputs: list[np.ndarray], types: list[np.ndarray],
                 batch_size: int = 256, query_fn=None, scenarios: list[np.ndarray] | None = None) -> torch.Tensor:
    """User vectors (B, D) on CPU; ``query_fn`` maps hidden states to queries (e.g. purchase head);
    ``scenarios``: what each input position predicts for (``EvalSplit.input_scenarios``)."""
    was_training = enc.training
    enc.eval()
    device = next(enc.parameters()).device
    out = []
    for s in range(0, len(inputs), batch_size):
        it = torch.from_numpy(pad_left(inputs[s:s + batch_size], enc.cfg.max_len)).to(device)
        ty = torch.from_numpy(pad_left(types[s:s + batch_size], enc.cfg.max_len)).to(device)
        sc = None if scenarios is None else torch.from_numpy(
            pad_left(scenarios[s:s + batch_size], enc.cfg.max_len)).to(device)
        u = enc.encode_sequences(it, ty, scenarios=sc)
        out.append((query_fn(u) if query_fn else u).float().cpu())
    enc.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, enc.cfg.dim)


def seen_mask(inputs: list[np.ndarray], n_items: int) -> torch.Tensor:
    m = torch.zeros(len(inputs), n_items, dtype=torch.bool)
    for b, s in enumerate(inputs):
        m[b, torch.from_numpy(np.asarray(s, dtype=np.int64))] = True
    return m


def rank_split(scores: torch.Tensor, split: EvalSplit, filter_seen: bool) -> np.ndarray:
    n = scores.shape[1]
    exclude = seen_mask(split.inputs, n) if filter_seen else torch.zeros(scores.shape, dtype=torch.bool)
    exclude[:, PAD] = True
    return ranks_from_scores(scores, split.targets, exclude)


def popularity(ds: SeqDataset, n_items: int | None = None) -> np.ndarray:
    """Event count per item row over the training part (held-out events excluded)."""
    n = n_items or len(ds.vocab)
    items, _ = loo_train(ds)
    return np.bincount(np.concatenate(items) if items else np.zeros(0, np.int64), minlength=n)[:n]


def evaluate_model(enc: SeqEncoder, ds: SeqDataset, which: str = "test", ks=(10, 20),
                   with_popularity: bool = True, query_fn=None, only_types=None,
                   chunk: int = 1024) -> dict:
    """Metrics dict: ``model`` and (optionally) ``popular``, each ``{"all": .., "filtered": ..}``.

    ``only_types``: evaluate only users whose held-out event has one of these type ids
    (e.g. purchases).
    """
    split = loo_split(ds, which)
    if only_types is not None:
        split = split.subset(np.isin(split.target_types, list(only_types)))
    n = enc.item_vectors().shape[0]
    pop = torch.from_numpy(popularity(ds, n).astype(np.float32)) if with_popularity else None
    W = enc.item_vectors().detach().float().cpu()
    ranks = {("model", False): [], ("model", True): [], ("popular", False): [], ("popular", True): []}
    for s in range(0, len(split.targets), chunk):
        part = split.subset(slice(s, s + chunk))
        scores = user_vectors(enc, part.inputs, part.input_types, query_fn=query_fn,
                              scenarios=part.input_scenarios) @ W.T
        for f in (False, True):
            ranks[("model", f)].append(rank_split(scores, part, f))
            if pop is not None:
                ranks[("popular", f)].append(rank_split(pop.expand(len(part.targets), -1), part, f))
    out: dict = {"users": int(len(split.targets)), "split": which}
    for (name, f), r in ranks.items():
        if r:
            out.setdefault(name, {})["filtered" if f else "all"] = summarize(np.concatenate(r), ks)
    if split.target_scenarios is not None and ds.scenario_vocab is not None:
        out["scenarios"] = _per_scenario(split.target_scenarios, ds.scenario_vocab.names(), ranks, ks)
    return out


def _per_scenario(target_scenarios: np.ndarray, names: list[str], ranks: dict, ks) -> dict:
    """Seen-filtered figures of each scenario's held-out events (row 0: the default scenario)."""
    out = {}
    for row, name in enumerate([DEFAULT_SCENARIO, *names]):
        keep = target_scenarios == row
        if keep.any():
            out[name] = {"users": int(keep.sum()),
                         **{src: summarize(np.concatenate(r)[keep], ks)
                            for (src, f), r in ranks.items() if f and r}}
    return out
