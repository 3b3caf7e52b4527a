"""Serving facade (no Kafka): encoder + vocabulary + version, numpy in and out.

- ``user_vectors(histories)``: one float32 vector per history of ``(item_id, type)`` pairs
  (``type`` is ``"click"`` or ``"purchase"``; unknown items are skipped). A history with no known
  item has NO model answer: its row is zero and ``known(histories)`` is False for it; serve it
  from ``popular(k)`` and mark the answer ``"source": "popular"``.
- Scenarios: an event may be ``(item_id, type, scenario)``, and ``scenarios=[...]`` asks for each
  history's recommendation in a scenario (None: the scenario of its last event). Names the
  model has not learned (``self.scenarios``) are the default scenario.
- ``item_matrix()``: ``(item_ids, vectors)`` of every item (padding dropped), for the FAISS index.
- ``add_items(...)``: cold start; a new item's vector is the mean of the items it co-occurs with,
  else of its category's items, else of the most popular items, so it is recommendable at once.

Thread safety: every public method takes ``self.lock`` (an RLock), and ``OnlineTrainer`` holds the
same lock while it changes the weights, so one serving thread and one training thread may share a
Recommender (serving waits during an update). To serve without waiting, serve from
``snapshot()`` (an independent frozen copy) and swap snapshots when ``version`` changes.
"""
from __future__ import annotations

import copy
import logging
import threading

import numpy as np
import torch

from model.checkpoint import load_checkpoint, save_checkpoint, scenario_vocab
from model.data import pad_left
from model.encoder import TYPE_IDS, EncoderConfig, SeqEncoder
from model.heads import load_heads
from model.interactions import step_scenario
from model.vocab import ItemVocab, ScenarioVocab

log = logging.getLogger(__name__)


class Recommender:
    def __init__(self, encoder: SeqEncoder, vocab: ItemVocab, version: int = 0,
                 popularity: np.ndarray | None = None, heads_state: dict | None = None,
                 scenarios: ScenarioVocab | None = None):
        if encoder.item_vectors().shape[0] < len(vocab):
            raise ValueError(f"item table has {encoder.item_vectors().shape[0]} rows, vocab needs {len(vocab)}")
        self.encoder = encoder.eval()
        self.vocab = vocab
        self.version = int(version)
        pop = np.zeros(len(vocab), np.float64) if popularity is None else np.asarray(popularity, np.float64)
        self.popularity = np.concatenate([pop, np.zeros(max(0, len(vocab) - len(pop)))])[:len(vocab)]
        self.heads_state = heads_state
        self.scenarios = scenarios if scenarios is not None else ScenarioVocab(encoder.cfg.n_scenarios)
        self.lock = threading.RLock()
        # encoder.serving_encoder() and the device it was traced on (device constants are baked
        # into a trace, and OnlineTrainer moves the encoder to CUDA): made by prepare_serving
        self._encode: tuple[torch.device, object] | None = None
        self._purchase: tuple[float, torch.nn.Module] | None = None   # set_purchase_weight

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def fresh(cls, config: EncoderConfig | None = None, item_ids=(), seed: int = 0) -> "Recommender":
        """An untrained model (for a worker with no checkpoint); items can be added later."""
        torch.manual_seed(seed)
        cfg = copy.deepcopy(config) if config is not None else EncoderConfig()
        vocab = ItemVocab(item_ids)
        cfg.n_items = len(vocab)
        return cls(SeqEncoder(cfg), vocab)

    @classmethod
    def from_checkpoint(cls, path: str, expected: EncoderConfig | None = None,
                        device: str | None = "cpu", vocab_base: ItemVocab | None = None) -> "Recommender":
        """``vocab_base``: the vocabulary being served, whose shared rows are reused
        (``ItemVocab.from_state``)."""
        ck = load_checkpoint(path, expected=expected, map_location=device or "cpu")
        enc = SeqEncoder.from_state(EncoderConfig.from_dict(ck["config"]), ck["model"])
        pop = ck.get("popularity")
        rec = cls(enc.to(device or "cpu"), ItemVocab.from_state(ck["vocab"], base=vocab_base), ck["version"],
                  pop.numpy() if pop is not None else None, ck.get("heads"), scenario_vocab(ck))
        rec.step, rec.best_val = ck["step"], ck["best_val"]
        return rec

    def save(self, path: str, optimizer_state: dict | None = None, step: int | None = None,
             best_val: float | None = None, meta: dict | None = None, replay_state: dict | None = None) -> None:
        """``optimizer_state`` and ``replay_state``: the online trainer's, so that a trainer can
        continue from this checkpoint (``OnlineTrainer.restore``)."""
        with self.lock:
            ck = {
                "model": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
                "heads": self.heads_state, "optimizer": optimizer_state, "stage": "online", "task": "next",
                "config": self.encoder.cfg.to_dict(),
                "vocab": self.vocab.to_state(),
                "step": int(step if step is not None else getattr(self, "step", 0)),
                "best_val": float(best_val if best_val is not None else getattr(self, "best_val", float("nan"))),
                "version": self.version, "popularity": torch.from_numpy(self.popularity.astype(np.float32)),
                "meta": meta or {}, "replay": replay_state, "scenarios": self.scenarios.names(),
            }
        save_checkpoint(path, ck)

    def snapshot(self) -> "Recommender":
        """An independent CPU copy for serving while this one keeps training."""
        with self.lock:
            enc = copy.deepcopy(self.encoder).cpu().eval()
            rec = Recommender(enc, ItemVocab.from_state(self.vocab.to_state()), self.version,
                              self.popularity.copy(), copy.deepcopy(self.heads_state),
                              ScenarioVocab(self.scenarios.capacity, self.scenarios.names()))
        return rec

    @property
    def device(self) -> torch.device:
        return self.encoder.item_vectors().device

    # ---- encoding ----------------------------------------------------------------------------
    def to_rows(self, history) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, type ids and scenario rows of the known items of one history (unknown items
        skipped); the scenarios are all 0 while the model knows no scenario name."""
        rows, types, scens = [], [], []
        named = len(self.scenarios) > 1
        for event in history:
            r = self.vocab.row(event[0])
            if r is not None:
                rows.append(r)
                types.append(TYPE_IDS.get(event[1], TYPE_IDS["click"]))
                scens.append(self.scenarios.row(step_scenario(event)) if named else 0)
        return (np.array(rows, dtype=np.int64), np.array(types, dtype=np.int64),
                np.array(scens, dtype=np.int64))

    def _asked(self, event_scenarios: np.ndarray, scenario: str | None) -> np.ndarray:
        """What each position of a history predicts for (``SeqEncoder``): the next event's
        scenario, and at the last position ``scenario`` (None: the last event's)."""
        last = event_scenarios[-1:] if scenario is None else [self.scenarios.row(scenario)]
        return np.concatenate([event_scenarios[1:], np.asarray(last, dtype=np.int64)])

    def known(self, histories) -> np.ndarray:
        """True where a history has at least one known item (a model answer exists)."""
        with self.lock:
            return np.array([any(self.vocab.row(e[0]) is not None for e in h) for h in histories], dtype=bool)

    def prepare_serving(self) -> None:
        """Trace the encoder for ``user_vectors`` now (~30 ms of Python) rather than in the first
        query: a worker calls it in the thread that loads a version, before serving it."""
        with self.lock:
            if self._encode is None or self._encode[0] != self.device:
                self._encode = (self.device, self.encoder.serving_encoder())

    def set_purchase_weight(self, weight: float) -> float:
        """Rank by ``(1 - weight) * next-item score + weight * next-purchase score``: both are inner
        products with the item table, so the blend is one query vector, ``(1 - w) u + w p(u)``, for
        the same index. It needs the purchase heads (a checkpoint of ``streamrec finetune --task
        purchase``); without them the weight in force is 0. Returns the weight in force."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"purchase weight must be in [0, 1], not {weight}")
        with self.lock:
            self._purchase = None
            if weight > 0 and any(k.startswith("purchase.") for k in self.heads_state or {}):
                head = load_heads(self.heads_state, ["purchase"], self.encoder.cfg)["purchase"]
                self._purchase = (float(weight), head.eval().to(self.device))
            return self.purchase_weight

    @property
    def purchase_weight(self) -> float:
        """The blend weight in force (``set_purchase_weight``)."""
        return self._purchase[0] if self._purchase is not None else 0.0

    def _query(self, u: torch.Tensor) -> torch.Tensor:
        """The user vector serving searches with: ``u``, or its purchase blend."""
        if self._purchase is None:
            return u
        w, head = self._purchase
        return (1.0 - w) * u + w * head.to(u.device).purchase_state(u)   # the encoder may have moved

    def user_vectors(self, histories, batch_size: int = 256, scenarios=None) -> np.ndarray:
        """float32 (B, D); zero rows for histories without a known item (see ``known``)."""
        return self.user_vectors_and_known(histories, batch_size, scenarios)[0]

    @torch.no_grad()
    def user_vectors_and_known(self, histories, batch_size: int = 256,
                               scenarios=None) -> tuple[np.ndarray, np.ndarray]:
        """``(user_vectors(histories), known(histories))`` with one pass over the histories;
        ``scenarios``: the scenario asked for per history (None, or a None in it: see ``_asked``)."""
        with self.lock:
            self.prepare_serving()
            D, max_len = self.encoder.cfg.dim, self.encoder.cfg.max_len
            out = np.zeros((len(histories), D), dtype=np.float32)
            conv = [self.to_rows(h) for h in histories]
            idx = [b for b, (r, _, _) in enumerate(conv) if len(r)]
            known = np.zeros(len(histories), dtype=bool)
            known[idx] = True
            asked = scenarios if scenarios is not None else [None] * len(histories)
            with_scenarios = len(self.scenarios) > 1
            for s in range(0, len(idx), batch_size):
                part = idx[s:s + batch_size]
                it = torch.from_numpy(pad_left([conv[b][0] for b in part], max_len)).to(self.device)
                ty = torch.from_numpy(pad_left([conv[b][1] for b in part], max_len)).to(self.device)
                sc = torch.from_numpy(pad_left([self._asked(conv[b][2], asked[b]) for b in part], max_len)
                                      ).to(self.device) if with_scenarios else None
                u = self._encode[1](it, ty, sc)
                out[part] = self._query(u).float().cpu().numpy()
            return out, known

    def item_matrix(self) -> tuple[list[str], np.ndarray]:
        """(item ids in row order, float32 (N, D)); row i of the matrix is ``ids[i]``."""
        with self.lock:
            W = self.encoder.item_vectors().detach()[1:len(self.vocab)]
            return self.vocab.ids(), W.float().cpu().numpy().copy()

    def recommend(self, histories, k: int = 10, exclude_seen: bool = True, batch_size: int = 256,
                  scenarios=None) -> list[dict]:
        """Exact top-k by brute force (reference for the FAISS path, for small catalogues, and for
        scoring a version on held-back events). Each answer is ``{"source": "model"|"popular",
        "items": [(item_id, score), ...]}``; equal scores rank by row (as a stable sort would)."""
        with self.lock:
            U, known = self.user_vectors_and_known(histories, scenarios=scenarios)
            ids, W = self.item_matrix()
            out = []
            for start in range(0, len(histories), batch_size):
                S = U[start:start + batch_size] @ W.T
                for b, s in enumerate(S, start):
                    h = histories[b]
                    seen = {e[0] for e in h} if exclude_seen else set()
                    if not known[b]:
                        out.append({"source": "popular", "items": self.popular(k, exclude=seen)})
                        continue
                    masked = [r - 1 for r in (self.vocab.row(i) for i in seen) if r is not None]
                    s[masked] = -np.inf
                    out.append({"source": "model", "items": [(ids[j], float(s[j])) for j in _top(s, k)]})
            return out

    def popular(self, k: int = 10, exclude=()) -> list[tuple[str, float]]:
        """Most popular items (training-event counts, updated online) as (item_id, count)."""
        with self.lock:
            ex = set(exclude)
            order = np.argsort(-self.popularity[1:], kind="stable") + 1
            out = []
            for r in order:
                iid = self.vocab.item_id(int(r))
                if iid not in ex:
                    out.append((iid, float(self.popularity[r])))
                    if len(out) == k:
                        break
            return out

    def count(self, rows: np.ndarray) -> None:
        """Add events to the popularity counts (used by the online trainer)."""
        with self.lock:
            np.add.at(self.popularity, rows, 1.0)

    # ---- cold start --------------------------------------------------------------------------
    @torch.no_grad()
    def add_items(self, item_ids, co_items=None, category=None) -> np.ndarray:
        """Add items (already-known ones keep their vector) and return float32 (n, D) vectors.

        ``co_items``: per new item, ids it co-occurred with (a list aligned with ``item_ids``, or
        a dict item_id -> ids, or one list shared by all). ``category``: one category for all, a
        list aligned with ``item_ids``, or a dict. Initial vector = mean of the known co-items,
        else mean of the category's items, else mean of the 100 most popular items.
        """
        item_ids = [str(i) for i in item_ids]
        co = _per_item(co_items, item_ids, is_list_value=True)
        cat = _per_item(category, item_ids, is_list_value=False)
        with self.lock:
            W = self.encoder.item_vectors()
            n_known = len(self.vocab)
            new_ids = [i for i in dict.fromkeys(item_ids) if i not in self.vocab]
            inits, popular = [], None
            for iid in new_ids:
                rows = [r for r in (self.vocab.row(c) for c in (co.get(iid) or ())) if r is not None]
                if not rows and cat.get(iid) is not None:
                    rows = self.vocab.rows_in_category(cat[iid])
                if not rows and n_known > 1:
                    if popular is None:  # once per call: items without co-items often come in bulk
                        popular = W[_top_rows(self.popularity[:n_known], 100)].mean(0)
                    inits.append(popular)
                    continue
                inits.append(W[rows].mean(0) if rows else torch.zeros(W.shape[1], device=W.device))
            for iid in new_ids:
                self.vocab.add(iid, cat.get(iid))
            for iid in item_ids:
                if cat.get(iid) is not None:
                    self.vocab.add(iid, cat[iid])
            if new_ids:
                grow_to(self.encoder, len(self.vocab), torch.stack(inits))
                self.popularity = np.concatenate([self.popularity, np.zeros(len(new_ids))])
            W = self.encoder.item_vectors().detach()
            return W[[self.vocab.row(i) for i in item_ids]].float().cpu().numpy()


def _top(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest finite scores, best first, ties by index: what a stable sort of
    the whole row gives, from a partition and a sort of the candidates only."""
    n = min(k, len(scores))
    if n <= 0:
        return []
    if n < len(scores):
        kth = np.partition(scores, len(scores) - n)[len(scores) - n]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(len(scores))
    order = candidates[np.argsort(-scores[candidates], kind="stable")][:n]
    return [int(j) for j in order if np.isfinite(scores[j])]


def _top_rows(popularity: np.ndarray, n: int) -> list[int]:
    """The ``n`` most popular rows (row 0, padding, excluded), most popular first; ties by row."""
    return [j + 1 for j in _top(popularity[1:], n)]


def grow_to(encoder: SeqEncoder, n_rows: int, init: torch.Tensor | None = None) -> None:
    n_new = n_rows - encoder.item_vectors().shape[0]
    if n_new > 0:
        encoder.grow(n_new, None if init is None else init[-n_new:])


def _per_item(value, item_ids: list[str], is_list_value: bool) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, (str, int)) and not is_list_value:
        return {i: value for i in item_ids}
    value = list(value)
    if is_list_value and value and all(isinstance(v, (str, int)) for v in value):
        return {i: value for i in item_ids}   # one co-item list shared by all new items
    if len(value) != len(item_ids):
        raise ValueError("co_items/category list must align with item_ids")
    return dict(zip(item_ids, value))
