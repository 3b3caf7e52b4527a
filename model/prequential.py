"""Prequential ("test-then-train") evaluation of online learning on a time-ordered event stream.

For every event of the replayed stream, each predictor is first asked for the user's top-``k``
computed from what happened BEFORE the event, the hit is recorded, and only then does the
predictor learn from the event. Three predictors run side by side in one pass over the same
events and the same user histories:

- ``online``: an ``OnlineTrainer`` over a copy of the pretrained model, updated with the user
  sequences of every chunk (vocabulary grows, so new items become recommendable);
- ``frozen``: the pretrained model, never updated; items it has never seen cannot be hit;
- ``popularity``: event counts so far (the pretraining prefix plus every replayed event before).

Mini-batch approximation (the standard one for prequential evaluation of mini-batch learners):
events are processed in chunks of ``chunk`` events (256 by default). All events of a chunk are
predicted with the models and popularity counts as they were before the chunk, then the
predictors learn from the whole chunk. The USER HISTORY used as input, however, is always exact:
it holds every event of the user strictly before the predicted one, including earlier events of
the same chunk (a streaming worker also updates the history table per event and the model per
micro-batch). An event never contributes to its own prediction; ``tests/unit/test_prequential.py``
checks this on a stream where every item occurs once.

Protocol details:
- A user with no earlier event (in the pretraining prefix or the replay) is *cold*: every
  predictor gives the popularity answer, so cold events score the same for all three and are
  counted separately (``cold_events``). A model that knows none of a warm user's items (the
  frozen model on a history of new items only) also answers with popularity (``fallback``).
- Seen items: ``exclude_seen=True`` removes the user's earlier items from every predictor's
  top-k (ML-1M: a movie is rated once, so a seen item can never be the next one). With
  ``exclude_seen=False`` re-consumption is allowed (Taobao: a user views, carts and buys the same
  item). Both protocols are measured in every run (``hr_exclude_seen`` / ``hr_allow_repeats``);
  ``primary`` names the one reported as HR@10. Default: exclude for ML-1M, allow for Taobao.
- Popularity ranks only items with a count > 0 (ties: first seen first).
- Top-k is exact brute force (inner products against the whole item table, torch).
- Model histories are the user's most recent ``4 * max_len`` raw events (unknown items are then
  skipped, and the encoder keeps the most recent ``max_len`` known ones).

Stream formats: ``taobao`` (UserBehavior CSV ``user,item,category,behavior,ts``, stably sorted
by ``ts``; pv/cart/fav -> click, buy -> purchase) and ``ml1m`` (``user item`` lines, chronological
per user, interleaved by position: every user's 1st item, then every user's 2nd item, ...; see
``interleave_by_position``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from model.interactions import Interaction
from model.encoder import PAD
from model.incremental import OnlineTrainer
from model.objectives import ObjectiveConfig
from model.recommender import Recommender

log = logging.getLogger(__name__)

PREDICTORS = ("online", "frozen", "popularity")


# ---- the prequential loop -----------------------------------------------------------------------
@dataclass
class PrequentialConfig:
    k: int = 10
    chunk: int = 256                 # events per predict-then-learn step
    primary: str = "exclude_seen"    # or "allow_repeats": the protocol reported as HR@k
    windows: int = 20                # time windows (equal numbers of events) for the curve
    lr: float = 1e-3                 # OnlineTrainer settings
    steps_per_update: int = 2
    batch_size: int = 256
    replay_capacity: int = 10_000
    replay_ratio: float = 1.0
    n_negatives: int = 0             # 0 = full softmax in the online updates
    seed_replay: bool = True         # fill the replay buffer with the pretraining sequences first
    device: str | None = "cpu"
    seed: int = 0
    progress: bool = True


class _ModelPredictor:
    """A Recommender plus a map from global item ids to its rows (refreshed as its vocab grows)."""

    def __init__(self, rec: Recommender, gid_of: dict[str, int], n_global: int):
        self.rec = rec
        self.gid_of = gid_of
        self.row_of_gid = np.zeros(n_global, dtype=np.int64)   # 0 = unknown
        self._mapped = 1
        self.refresh()

    def refresh(self) -> None:
        v = self.rec.vocab
        for r in range(self._mapped, len(v)):
            g = self.gid_of.get(v.item_id(r))
            if g is not None:
                self.row_of_gid[g] = r
        self._mapped = len(v)

    @torch.no_grad()
    def hits(self, histories, seen_gids, target_gids, k: int):
        """(known (B,), hit_exclude_seen (B,), hit_allow_repeats (B,)) for one chunk."""
        rec = self.rec
        B = len(histories)
        known = rec.known(histories)
        h_ex = np.zeros(B, dtype=bool)
        h_in = np.zeros(B, dtype=bool)
        idx = np.flatnonzero(known)
        if len(idx):
            U = torch.from_numpy(rec.user_vectors([histories[b] for b in idx]))
            W = rec.encoder.item_vectors().detach()[:len(rec.vocab)].float().cpu()
            S = U @ W.T
            S[:, PAD] = float("-inf")
            kk = min(k, S.shape[1] - 1)
            top_in = S.topk(kk, dim=1).indices.numpy()
            for j, b in enumerate(idx):
                rows = self.row_of_gid[seen_gids[b]]
                S[j, rows[rows > 0]] = float("-inf")
            top_ex = S.topk(kk, dim=1).indices.numpy()
            trows = self.row_of_gid[target_gids[idx]]
            ok = trows > 0   # an item unknown to the model cannot be hit
            h_in[idx] = ok & (top_in == trows[:, None]).any(1)
            h_ex[idx] = ok & (top_ex == trows[:, None]).any(1) & ~_in_seen(target_gids[idx], [seen_gids[b] for b in idx])
        return known, h_ex, h_in


def _in_seen(targets: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
    return np.array([bool(len(s)) and bool((s == t).any()) for t, s in zip(targets, seen)], dtype=bool)


def _popularity_hits(counts: np.ndarray, seen_gids, target_gids, k: int):
    """Popularity top-k (count > 0 only; ties: lower global id, i.e. seen earlier, first)."""
    order = np.argsort(-counts, kind="stable")
    n_pos = int((counts > 0).sum())
    order = order[:n_pos]
    B = len(target_gids)
    h_ex = np.zeros(B, dtype=bool)
    h_in = np.zeros(B, dtype=bool)
    top_in = order[:k]
    for b in range(B):
        t = target_gids[b]
        h_in[b] = bool((top_in == t).any())
        s = seen_gids[b]
        if len(s):
            cand = order[:k + len(s)]
            cand = cand[~np.isin(cand, s)][:k]
            h_ex[b] = bool((cand == t).any()) and not bool((s == t).any())
        else:
            h_ex[b] = h_in[b]
    return h_ex, h_in


def run_prequential(events: list[Interaction], pretrained: Recommender, prefix: list[Interaction] = (),
                    cfg: PrequentialConfig | None = None, context: list[Interaction] = ()) -> dict:
    """Replay ``events`` prequentially; ``prefix`` (the pretraining part) seeds the user
    histories, the popularity counts and (optionally) the online replay buffer; ``context``
    (events between the prefix and the replay, e.g. a stretch held out for tuning) seeds the
    histories and counts only: neither model learns from it.

    Returns a JSON-able dict: HR@k per predictor under the primary protocol (``hr``), under both
    protocols, over warm users only, per time window, and counts (events, cold events,
    fallbacks, targets unknown to each model), plus ``online_over_frozen``.
    """
    cfg = cfg or PrequentialConfig()
    if cfg.primary not in ("exclude_seen", "allow_repeats"):
        raise ValueError("primary must be 'exclude_seen' or 'allow_repeats'")
    t_start = time.time()
    # global item ids in order of first appearance (indexing only: no statistics)
    gid_of: dict[str, int] = {}
    for e in list(prefix) + list(context) + list(events):
        if e.item_id not in gid_of:
            gid_of[e.item_id] = len(gid_of)
    n_global = len(gid_of)

    frozen = pretrained
    online_rec = pretrained.snapshot()
    ocfg = ObjectiveConfig(weights={"next": 1.0}, n_negatives=cfg.n_negatives)
    trainer = OnlineTrainer(online_rec, lr=cfg.lr, replay_capacity=cfg.replay_capacity,
                            steps_per_update=cfg.steps_per_update, replay_ratio=cfg.replay_ratio,
                            batch_size=cfg.batch_size, objectives=ocfg, device=cfg.device, seed=cfg.seed)
    preds = {"online": _ModelPredictor(online_rec, gid_of, n_global),
             "frozen": _ModelPredictor(frozen, gid_of, n_global)}
    max_len = pretrained.encoder.cfg.max_len
    hist_len = 4 * max_len

    hist: dict[str, list[tuple[str, str]]] = {}
    seen: dict[str, list[int]] = {}
    seen_set: dict[str, set[int]] = {}
    counts = np.zeros(n_global, dtype=np.float64)

    def remember(e: Interaction) -> None:
        hist.setdefault(e.user_id, []).append((e.item_id, e.type))
        g = gid_of[e.item_id]
        s = seen_set.setdefault(e.user_id, set())
        if g not in s:
            s.add(g)
            seen.setdefault(e.user_id, []).append(g)

    for e in prefix:
        remember(e)
        counts[gid_of[e.item_id]] += 1
    if cfg.seed_replay and prefix:
        for u in hist:
            r = online_rec.to_rows(hist[u][-(max_len + 1):])
            if len(r[0]) >= 2:
                trainer.replay.add(r)
    for e in context:
        remember(e)
        counts[gid_of[e.item_id]] += 1

    n = len(events)
    hit = {p: {"exclude_seen": np.zeros(n, bool), "allow_repeats": np.zeros(n, bool)} for p in PREDICTORS}
    cold = np.zeros(n, bool)
    fallback = {p: 0 for p in ("online", "frozen")}
    unknown_target = {p: 0 for p in ("online", "frozen")}
    t_predict = t_learn = 0.0
    bar = tqdm(total=n, desc="prequential", unit="ev", disable=not cfg.progress, mininterval=2.0)
    for s in range(0, n, cfg.chunk):
        part = events[s:s + cfg.chunk]
        t0 = time.time()
        # 1) inputs: each event's exact history (everything of the user strictly before it)
        histories, seen_g, targets, cold_b = [], [], [], []
        for e in part:
            h = hist.get(e.user_id, [])
            cold_b.append(not h)
            histories.append(h[-hist_len:])
            seen_g.append(np.array(seen.get(e.user_id, ()), dtype=np.int64))
            targets.append(gid_of[e.item_id])
            remember(e)
        targets = np.array(targets, dtype=np.int64)
        cold_b = np.array(cold_b, dtype=bool)
        # 2) predict with the predictors as they were before the chunk
        p_ex, p_in = _popularity_hits(counts, seen_g, targets, cfg.k)
        sl = slice(s, s + len(part))
        hit["popularity"]["exclude_seen"][sl] = p_ex
        hit["popularity"]["allow_repeats"][sl] = p_in
        cold[sl] = cold_b
        for name, pr in preds.items():
            known, m_ex, m_in = pr.hits(histories, seen_g, targets, cfg.k)
            use_pop = ~known          # cold users and histories of items unknown to the model
            fallback[name] += int((use_pop & ~cold_b).sum())
            unknown_target[name] += int((pr.row_of_gid[targets] == 0).sum())
            hit[name]["exclude_seen"][sl] = np.where(use_pop, p_ex, m_ex)
            hit[name]["allow_repeats"][sl] = np.where(use_pop, p_in, m_in)
        t1 = time.time()
        # 3) learn from the chunk
        for e in part:
            counts[gid_of[e.item_id]] += 1
        in_chunk: dict[str, int] = {}
        for e in part:
            in_chunk[e.user_id] = in_chunk.get(e.user_id, 0) + 1
        users = list(in_chunk)
        trainer.update([hist[u][-(max_len + 1):] for u in users], new_events=[in_chunk[u] for u in users])
        preds["online"].refresh()
        t_learn += time.time() - t1
        t_predict += t1 - t0
        bar.update(len(part))
        if cfg.progress:
            bar.set_postfix({p[:3]: f"{hit[p][cfg.primary][:s + len(part)].mean():.3f}" for p in PREDICTORS})
    bar.close()

    res = _summarize(events, hit, cold, cfg)
    res.update({
        "events": n, "prefix_events": len(prefix), "cold_events": int(cold.sum()),
        "fallback_events": fallback, "target_unknown_to_model": unknown_target,
        "items_in_stream": n_global, "online_vocab_end": len(online_rec.vocab) - 1,
        "frozen_vocab": len(frozen.vocab) - 1, "online_updates": int(trainer.version - pretrained.version),
        "config": asdict(cfg), "seconds": {"total": time.time() - t_start, "predict": t_predict,
                                           "learn": t_learn},
    })
    return res


def _hr(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def _summarize(events: list[Interaction], hit: dict, cold: np.ndarray, cfg: PrequentialConfig) -> dict:
    n = len(events)
    warm = ~cold
    out: dict = {"k": cfg.k, "primary": cfg.primary}
    for proto in ("exclude_seen", "allow_repeats"):
        out[f"hr_{proto}"] = {p: _hr(hit[p][proto]) for p in PREDICTORS}
        out[f"hr_{proto}_warm"] = {p: _hr(hit[p][proto][warm]) for p in PREDICTORS}
    out["hr"] = dict(out[f"hr_{cfg.primary}"])
    out["hr_warm"] = dict(out[f"hr_{cfg.primary}_warm"])
    out["hr_cold"] = _hr(hit["popularity"][cfg.primary][cold])
    f = out["hr"]["frozen"]
    out["online_over_frozen"] = out["hr"]["online"] / f if f > 0 else float("inf") if out["hr"]["online"] > 0 else float("nan")
    fw = out["hr_warm"]["frozen"]
    out["online_over_frozen_warm"] = out["hr_warm"]["online"] / fw if fw > 0 else float("nan")
    edges = np.linspace(0, n, max(1, min(cfg.windows, n)) + 1).astype(int) if n else np.array([0])
    wins = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        w = {"start": int(a), "end": int(b), "ts_start": events[a].ts, "ts_end": events[b - 1].ts,
             "cold": int(cold[a:b].sum())}
        w.update({p: _hr(hit[p][cfg.primary][a:b]) for p in PREDICTORS})
        wins.append(w)
    out["windows"] = wins
    return out


# ---- output -----------------------------------------------------------------------------------
