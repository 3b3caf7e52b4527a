"""Incremental (online) training on the stream.

``OnlineTrainer.update(batch_of_sequences)``:
1. adds unseen items to the vocabulary (cold-start vectors from the items they co-occur with in
   the batch) and grows the item table and the optimizer state, keeping trained rows;
2. runs ``steps_per_update`` optimizer steps; each step trains on the fresh sequences mixed with
   a sample of older sequences from a bounded replay buffer (reservoir sampling), so the model
   keeps what it learned before;
3. adds the fresh sequences to the replay buffer, and each sequence's NEW events (by default its
   last one) to the popularity counts: an event is counted once, however many later windows of
   its user's sequence hold it;
4. increments ``version`` (once per update that ran at least one step) and copies it to
   ``recommender.version``. Publishing a snapshot is the caller's choice (e.g. every N versions or
   every T seconds); the version identifies the weights at the end of an update.

With the ``purchase`` objective it trains the purchase heads beside the encoder (those of the
recommender's checkpoint, else fresh ones) and writes them back to ``recommender.heads_state``
after each update, so every snapshot carries heads that match its encoder.

Runs on CUDA when available (``device=None``); the recommender's encoder is moved there.
The recommender's lock is held during an update (see ``model.recommender``).
"""
from __future__ import annotations

import logging
import math
import random

import numpy as np
import torch

from model.encoder import PAD
from model.heads import load_heads
from model.interactions import step_scenario
from model.objectives import ObjectiveConfig, compute_losses
from model.pretrain import default_device, make_batch
from model.recommender import Recommender

log = logging.getLogger(__name__)

ONLINE_HEADS = ("purchase",)   # heads the online trainer can train (no item table of their own to grow)


class ReplayBuffer:
    """Bounded uniform sample of past sequences (reservoir sampling over everything seen); a
    sequence is its ``Recommender.to_rows`` triple (item rows, type ids, scenario rows)."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = int(capacity)
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.seen = 0
        self.rng = random.Random(seed)

    def add(self, seq: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(seq)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.capacity:
                self.items[j] = seq

    def sample(self, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return self.rng.sample(self.items, min(n, len(self.items)))

    def __len__(self) -> int:
        return len(self.items)

    def state(self) -> dict:
        """The buffer as flat tensors (a checkpoint loads with ``weights_only``)."""
        lengths = [len(rows) for rows, _, _ in self.items]

        def flat(parts, dtype):  # int32 rows, int8 types, int16 scenarios: ~7 bytes an item in the checkpoint
            return torch.from_numpy(np.concatenate(parts).astype(dtype)) if parts else torch.zeros(0, dtype=torch.int64)

        return {"rows": flat([r for r, _, _ in self.items], np.int32),
                "types": flat([t for _, t, _ in self.items], np.int8),
                "scenarios": flat([c for _, _, c in self.items], np.int16),  # rows beyond 127
                "lengths": torch.tensor(lengths, dtype=torch.int64), "seen": self.seen}

    def load(self, state: dict) -> None:
        rows, types = state["rows"].numpy().astype(np.int64), state["types"].numpy().astype(np.int64)
        scens = state["scenarios"].numpy().astype(np.int64) if "scenarios" in state else np.zeros_like(rows)
        ends = np.cumsum(state["lengths"].numpy())
        starts = ends - state["lengths"].numpy()
        self.items = [(rows[a:b].copy(), types[a:b].copy(), scens[a:b].copy())
                      for a, b in zip(starts, ends)][-self.capacity:]
        self.seen = max(int(state["seen"]), len(self.items))


class OnlineTrainer:
    def __init__(self, recommender: Recommender, lr: float = 1e-3, replay_capacity: int = 10_000,
                 steps_per_update: int = 2, replay_ratio: float = 1.0, batch_size: int = 128,
                 objectives: ObjectiveConfig | None = None, device: str | None = None, seed: int = 0):
        self.rec = recommender
        self.device = default_device(device)
        self.lr = lr
        self.steps_per_update = steps_per_update
        self.replay_ratio = replay_ratio   # replayed sequences per fresh sequence in a step
        self.batch_size = batch_size
        self.ocfg = objectives or ObjectiveConfig(weights={"next": 1.0})
        self.replay = ReplayBuffer(replay_capacity, seed)
        self.rng = random.Random(seed)
        self.version = recommender.version
        with self.rec.lock:
            self.rec.encoder.to(self.device)
            trained = [n for n in ONLINE_HEADS if self.ocfg.weights.get(n)]
            self.heads = load_heads(self.rec.heads_state, trained, self.rec.encoder.cfg)
            if self.heads is not None:
                self.heads.to(self.device)
        self.opt = self._new_optimizer()

    def _new_optimizer(self, old: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
        """Adam over the current parameters; with ``old``, carry its state over, zero-padding the
        moments of the grown item table."""
        params = self._parameters()
        opt = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.98))
        if old is not None:
            old_state = {tuple(p.shape[1:]) + (i,): old.state[p]
                         for i, p in enumerate(old.param_groups[0]["params"]) if p in old.state}
            for i, p in enumerate(params):
                st = old_state.get(tuple(p.shape[1:]) + (i,))
                if not st:
                    continue
                new = {}
                for k, v in st.items():
                    if torch.is_tensor(v) and v.dim() and v.shape[0] != p.shape[0]:
                        pad = torch.zeros((p.shape[0] - v.shape[0],) + tuple(v.shape[1:]), dtype=v.dtype,
                                          device=v.device)
                        v = torch.cat([v, pad])
                    new[k] = v
                opt.state[p] = new
        return opt

    def _parameters(self) -> list[torch.nn.Parameter]:
        return list(self.rec.encoder.parameters()) + (list(self.heads.parameters()) if self.heads is not None else [])

    def _publish_heads(self) -> None:
        """The trained heads into the recommender's ``heads_state`` (other heads' weights kept)."""
        state = {k: v for k, v in (self.rec.heads_state or {}).items()
                 if k.split(".", 1)[0] not in self.heads}
        state.update({k: v.detach().cpu().clone() for k, v in self.heads.state_dict().items()})
        self.rec.heads_state = state

    def _grow(self, seqs: list[list[tuple]]) -> None:
        """New items into the vocabulary (and the item table), new scenario names into the
        scenario table's free rows."""
        new = {}
        for s in seqs:
            for e in s:
                self.rec.scenarios.add(step_scenario(e))   # the default scenario takes no row
            ids = [str(e[0]) for e in s]
            for i in ids:
                if i not in self.rec.vocab and i not in new:
                    new[i] = [c for c in ids if c != i]
        if new:
            n_before = self.rec.encoder.item_vectors().shape[0]
            self.rec.add_items(list(new), co_items=new)
            self.rec.encoder.to(self.device)
            if self.rec.encoder.item_vectors().shape[0] != n_before:
                self.opt = self._new_optimizer(self.opt)
            log.info("vocabulary grew by %d items to %d", len(new), len(self.rec.vocab) - 1)

    def update(self, batch_of_sequences: list[list[tuple]],
               new_events: list[int] | None = None) -> float:
        """Sequences of ``(item_id, type[, scenario])`` events: grow the vocabulary, run
        ``steps_per_update`` steps on fresh + replayed sequences,
        return the mean total loss (0.0 and no new version when nothing is trainable).

        ``new_events[i]``: how many of sequence i's last events are new since the last update
        (counted in popularity); 1 each if not given (one sequence per new event)."""
        with self.rec.lock:
            self._grow(batch_of_sequences)
            rows = [self.rec.to_rows(s) for s in batch_of_sequences]
            n_new = new_events if new_events is not None else [1] * len(rows)
            for (items, _, _), n in zip(rows, n_new):
                if n > 0 and len(items):
                    self.rec.count(items[-n:])
            fresh = [f for f in rows if len(f[0]) >= 2]
            if not fresh:
                return 0.0
            max_len = self.rec.encoder.cfg.max_len
            scenarios = len(self.rec.scenarios) > 1
            enc = self.rec.encoder
            enc.train()
            losses = []
            for _ in range(self.steps_per_update):
                part = self.rng.sample(fresh, min(len(fresh), self.batch_size))
                part += self.replay.sample(int(math.ceil(self.replay_ratio * len(part))))
                batch = make_batch([i[-(max_len + 1):] for i, _, _ in part],
                                   [t[-(max_len + 1):] for _, t, _ in part], max_len,
                                   [c[-(max_len + 1):] for _, _, c in part] if scenarios else None).to(self.device)
                loss = compute_losses(enc, self.heads, batch, self.ocfg, self.rng)["total"]
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self._parameters(), 5.0)
                self.opt.step()
                with torch.no_grad():
                    enc.item_emb.weight[PAD].zero_()
                losses.append(loss.item())
            enc.eval()
            if self.heads is not None:
                self._publish_heads()
            for f in fresh:
                self.replay.add(f)
            self.version += 1
            self.rec.version = self.version
            return float(np.mean(losses))

    def optimizer_state(self) -> dict:
        return self.opt.state_dict()

    def replay_state(self) -> dict:
        return self.replay.state()

    def restore(self, optimizer_state: dict | None, replay_state: dict | None) -> list[str]:
        """Continue where the trainer that wrote a checkpoint stopped: its optimizer moments (if
        they fit this model's parameters) and its replay buffer. Returns what was restored."""
        restored = []
        if optimizer_state:
            try:
                self.opt.load_state_dict(optimizer_state)
                restored.append("optimizer")
            except (ValueError, KeyError, RuntimeError) as exc:  # another model's parameters
                log.warning("optimizer state not restored (%s); starting with fresh moments", exc)
        if replay_state:
            self.replay.load(replay_state)
            restored.append("replay")
        return restored
