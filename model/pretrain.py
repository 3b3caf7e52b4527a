"""Offline pretraining loop: batches of training windows, the weighted objectives, validation-based
checkpoint selection (never on test), early stopping, a time budget, and a training-curve PNG.

Outputs in ``out_dir``: ``best.ckpt`` (best validation NDCG@10, seen items filtered),
``last.ckpt`` (end of training, for resuming), ``history.json`` and ``curve.png``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from model.averaging import WeightAverage
from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.data import DataError, SeqDataset, fingerprint, loo_train, pad_left
from model.encoder import EncoderConfig, SeqEncoder
from model.evaluate import evaluate_model, popularity
from model.heads import load_heads
from model.objectives import Batch, ObjectiveConfig, compute_losses

log = logging.getLogger(__name__)

SELECT_METRIC = ("filtered", "NDCG@10")


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_minutes: float = 0.0          # 0 = no time budget
    patience: int = 20                # evaluations without improvement before stopping
    eval_every: int = 1               # epochs between validations
    seed: int = 42
    device: str | None = None         # None = cuda if available, else cpu
    progress: bool = True
    lr_schedule: str = "constant"     # "cosine": decay to lr * min_lr_ratio at the end of training
    min_lr_ratio: float = 0.01
    windows: str = "last"             # "all": also train on history older than max_len (see iter_batches)
    ema_decay: float = 0.0            # > 0: validate and select a moving average of the weights (averaging.py)

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}")
        if self.windows not in WINDOWS:
            raise ValueError(f"windows must be one of {WINDOWS}, not {self.windows!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), not {self.ema_decay}")

    def lr_at(self, progress: float) -> float:
        """Learning rate at ``progress`` in [0, 1] of the training run (epochs or time budget)."""
        if self.lr_schedule == "constant":
            return self.lr
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


LR_SCHEDULES = ("constant", "cosine")
WINDOWS = ("last", "all")


def default_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def iter_batches(items: list[np.ndarray], types: list[np.ndarray], max_len: int, batch_size: int,
                 rng: np.random.Generator, all_windows: bool = False, scenarios: list[np.ndarray] | None = None):
    """Batches of training windows of at most ``max_len + 1`` events -> (input, target).

    By default each sequence gives its most recent window. ``all_windows`` also cuts the older
    history into windows (ending ``max_len`` events apart, so every event is a target exactly once
    per epoch): on ML-1M the most recent windows hold only 66 % of the training targets.
    Windows of similar length are batched together (sorted by length with random tie-breaks,
    batch order shuffled), so short sequences are not padded to ``max_len``: on ML-1M this
    roughly halves the cost of an epoch. ``scenarios``: each event's scenario row, aligned with ``items``.
    """
    wins = list(training_windows([len(s) for s in items], max_len, all_windows))
    lengths = np.array([end - start for _, start, end in wins], dtype=np.float64)
    order = np.argsort(lengths + rng.random(len(wins)), kind="stable")
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for c in rng.permutation(len(chunks)):
        part = [wins[j] for j in chunks[c]]
        yield make_batch([items[i][a:b] for i, a, b in part], [types[i][a:b] for i, a, b in part], max_len,
                         None if scenarios is None else [scenarios[i][a:b] for i, a, b in part])


def training_windows(lengths: list[int], max_len: int, all_windows: bool = False):
    """(sequence, start, end) of each training window: the last ``max_len + 1`` events of every
    sequence of at least 2 events and, with ``all_windows``, the older events in windows of the
    same size that overlap their successor by one event (its first input is their last target)."""
    for i, n in enumerate(lengths):
        end = n
        while end >= 2:
            yield i, max(0, end - max_len - 1), end
            if not all_windows:
                break
            end -= max_len


def make_batch(win_items: list[np.ndarray], win_types: list[np.ndarray], max_len: int,
               win_scenarios: list[np.ndarray] | None = None) -> Batch:
    """Inputs are each window minus its last event, targets the window shifted by one (and each
    position's scenario is its target's)."""
    x = pad_left([w[:-1] for w in win_items], max_len)
    scen = None if win_scenarios is None else torch.from_numpy(pad_left([w[1:] for w in win_scenarios], max_len))
    return Batch(torch.from_numpy(x),
                 torch.from_numpy(pad_left([w[:-1] for w in win_types], max_len)),
                 torch.from_numpy(pad_left([w[1:] for w in win_items], max_len)),
                 torch.from_numpy(pad_left([w[1:] for w in win_types], max_len)), scen)


def make_ckpt(enc, heads, opt, ocfg, ds: SeqDataset, step, best_val, version, pop, meta, stage="pretrain",
              task="next") -> dict:
    return {
        "model": enc.state_dict(), "heads": heads.state_dict() if heads is not None else None,
        "stage": stage, "task": task,
        "optimizer": opt.state_dict() if opt is not None else None,
        "config": enc.cfg.to_dict(), "objectives": asdict(ocfg) if ocfg is not None else None,
        "vocab": ds.vocab.to_state(), "step": int(step), "best_val": float(best_val),
        "scenarios": ds.scenario_vocab.names() if ds.scenario_vocab is not None else [],
        "version": int(version), "popularity": torch.as_tensor(pop, dtype=torch.float32),
        "meta": meta,
    }


@dataclass
class Stage:
    """What a training run is for: its name and task in the checkpoint, and how it scores a
    candidate checkpoint on the validation split (``validate(enc, heads, ds) -> {"score": .., ...}``,
    higher is better; the other figures go into the history)."""
    name: str
    task: str
    validate: Callable[[SeqEncoder, torch.nn.ModuleDict | None, SeqDataset], dict]
    # validate's figures: "score" (what selects) and "val_ndcg10", "val_hr10" (what the curve draws)


def next_item_validation(enc: SeqEncoder, heads, ds: SeqDataset) -> dict:
    val = evaluate_model(enc, ds, "valid", with_popularity=False)["model"][SELECT_METRIC[0]]
    return {"score": val[SELECT_METRIC[1]], "val_ndcg10": val[SELECT_METRIC[1]], "val_hr10": val["HR@10"]}


PRETRAIN = Stage("pretrain", "next", next_item_validation)


def pretrain(ds: SeqDataset, ecfg: EncoderConfig, ocfg: ObjectiveConfig, tcfg: TrainConfig,
             out_dir: str, resume: str | None = None) -> dict:
    torch.manual_seed(tcfg.seed)
    device = default_device(tcfg.device)
    ecfg.n_items = len(ds.vocab)
    ck = load_checkpoint(resume, expected=ecfg) if resume else None
    enc = SeqEncoder(ecfg)
    if ck is not None:
        load_encoder_weights(enc, ck, resume)
    enc.to(device)
    heads = load_heads(ck.get("heads") if ck else None, ocfg.weights, ecfg)   # what the objectives train
    heads = heads.to(device) if heads is not None else None
    params = list(enc.parameters()) + (list(heads.parameters()) if heads is not None else [])
    opt = torch.optim.Adam(params, lr=tcfg.lr, betas=(0.9, 0.98), weight_decay=tcfg.weight_decay)
    if ck is None:
        return fit(ds, enc, heads, opt, ocfg, tcfg, out_dir, PRETRAIN)
    same_items = EncoderConfig.from_dict(ck["config"]).n_items == ecfg.n_items
    if ck.get("optimizer") and same_items:
        opt.load_state_dict(ck["optimizer"])
    if (ck.get("meta") or {}).get("data") != fingerprint(ds):
        # validated on other data: its best score says nothing about this validation split
        best_val = float("-inf")
        log.info("resumed from %s at step %d; it was trained on other data, so its best validation "
                 "score is not carried over", resume, ck["step"])
    else:
        best_val = ck["best_val"]
        log.info("resumed from %s at step %d (best val %.4f)", resume, ck["step"], best_val)
    return fit(ds, enc, heads, opt, ocfg, tcfg, out_dir, PRETRAIN, (ck["step"], best_val, ck["version"]),
               ck.get("average") if same_items else None)


def load_encoder_weights(enc: SeqEncoder, ck: dict, path: str) -> None:
    """Load a checkpoint's encoder into ``enc``, whose item table may have more rows (new items of
    the data being trained on keep their fresh rows)."""
    state = dict(ck["model"])
    table = state.pop("item_emb.weight")
    enc.item_emb.weight.data[:table.shape[0]] = table.to(enc.item_emb.weight.device)
    missing, unexpected = enc.load_state_dict(state, strict=False)
    if set(missing) != {"item_emb.weight"} or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the encoder: missing {missing}, "
                              f"unexpected {unexpected}")


def fit(ds: SeqDataset, enc: SeqEncoder, heads: torch.nn.ModuleDict | None, opt: torch.optim.Optimizer,
        ocfg: ObjectiveConfig, tcfg: TrainConfig, out_dir: str, stage: Stage,
        start: tuple[int, float, int] = (0, float("-inf"), 0), average_state: dict | None = None) -> dict:
    """Train ``enc`` (and ``heads``) with ``opt`` on the objectives ``ocfg``: the loop that every
    stage shares. ``opt``'s parameter groups say what trains and at which learning rate (a group's
    ``lr_scale``, default 1, multiplies the scheduled rate). Writes best/last checkpoints, history
    and curve; returns the summary with the history."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(tcfg.seed)
    py_rng = random.Random(tcfg.seed)
    device = enc.item_emb.weight.device
    params = [p for g in opt.param_groups for p in g["params"]]
    step, best_val, version = start
    nets = torch.nn.ModuleDict({"enc": enc, **({"heads": heads} if heads is not None else {})})
    average = WeightAverage(nets, tcfg.ema_decay) if tcfg.ema_decay else None
    if average is not None and average_state:
        average.load_state_dict(average_state)
    # what is validated and saved as best: the averaged weights when averaging, else the trained ones
    sel = average.module if average is not None else nets
    sel_heads = sel["heads"] if heads is not None else None

    train_items, train_types = loo_train(ds)
    with_scen = ds.scenarios is not None and enc.scen_emb is not None   # no table: scenarios ignored
    train_scen = [c[:len(s)] for c, s in zip(ds.scenarios, train_items)] if with_scen else None
    if with_scen and len(ds.scenario_vocab) > enc.cfg.n_scenarios:
        raise DataError(f"the data names {len(ds.scenario_vocab) - 1} scenarios; the encoder's scenario table "
                        f"has room for {max(enc.cfg.n_scenarios - 1, 0)} (raise --scenarios)")
    pop = popularity(ds)
    history: list[dict] = []
    meta = {"train": asdict(tcfg), "n_users": len(ds), "data": fingerprint(ds)}
    t0, bad_evals = time.time(), 0
    all_windows = tcfg.windows == "all"
    max_len = enc.cfg.max_len
    n_windows = sum(1 for _ in training_windows([len(s) for s in train_items], max_len, all_windows))
    if not n_windows:
        raise DataError(f"nothing to train on: none of the {len(ds)} users has 2 events left for training "
                        "(a user's last 2 events are held out for validation and test when they have more than 2)")
    n_batches = -(-n_windows // tcfg.batch_size)
    stop_reason = "epochs"
    for epoch in range(1, tcfg.epochs + 1):
        nets.train()
        losses = []
        bar = tqdm(iter_batches(train_items, train_types, max_len, tcfg.batch_size, rng, all_windows, train_scen),
                   total=n_batches, desc=f"epoch {epoch}", disable=not tcfg.progress, leave=False)
        for i, batch in enumerate(bar):
            lr = tcfg.lr_at(progress(tcfg, epoch - 1 + i / n_batches, time.time() - t0))
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            parts = compute_losses(enc, heads, batch.to(device), ocfg, py_rng)
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            if average is not None:
                average.update()
            step += 1
            losses.append({k: v.item() for k, v in parts.items()})
            bar.set_postfix(loss=f"{losses[-1]['total']:.3f}")
        rec = {"epoch": epoch, "step": step, "minutes": (time.time() - t0) / 60, "lr": lr,
               **{f"loss_{k}": float(np.mean([l[k] for l in losses])) for k in losses[0]}}
        out_of_time = tcfg.max_minutes and (time.time() - t0) / 60 >= tcfg.max_minutes
        if epoch % tcfg.eval_every == 0 or epoch == tcfg.epochs or out_of_time:
            val = stage.validate(sel["enc"], sel_heads, ds)
            score = val.pop("score")
            rec.update(val)
            if average is not None:   # the trained weights too, to see what the average adds
                raw = stage.validate(enc, heads, ds)
                rec.update({f"{k}_raw": v for k, v in raw.items() if k != "score"})
            if score > best_val:
                best_val, bad_evals = score, 0
                version += 1
                save_checkpoint(os.path.join(out_dir, "best.ckpt"),
                                make_ckpt(sel["enc"], sel_heads, opt, ocfg, ds, step, best_val, version,
                                          pop, {**meta, "epoch": epoch}, stage.name, stage.task))
            else:
                bad_evals += 1
        history.append(rec)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()})
        if bad_evals >= tcfg.patience:
            stop_reason = "early stopping"
            break
        if out_of_time:
            stop_reason = "time budget"
            break
    minutes = (time.time() - t0) / 60
    last = make_ckpt(enc, heads, opt, ocfg, ds, step, best_val, version, pop,
                     {**meta, "epoch": history[-1]["epoch"]}, stage.name, stage.task)
    if average is not None:
        last["average"] = average.state_dict()
    save_checkpoint(os.path.join(out_dir, "last.ckpt"), last)
    summary = {"best_val_ndcg10": best_val, "select": stage.validate.__name__,
               "epochs": history[-1]["epoch"], "steps": step, "train_minutes": minutes,
               "stop_reason": stop_reason, "device": str(device), "stage": stage.name}
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump({"summary": summary, "history": history}, f, indent=1)
    plot_history(history, os.path.join(out_dir, "curve.png"), f"{stage.name} ({stage.task})")
    return {**summary, "history": history}


def progress(tcfg: TrainConfig, epochs_done: float, seconds: float) -> float:
    """Fraction of the run done: of its epochs or of its time budget, whichever is further."""
    done = epochs_done / tcfg.epochs
    if tcfg.max_minutes:
        done = max(done, seconds / (60 * tcfg.max_minutes))
    return min(done, 1.0)


def plot_history(history: list[dict], path: str, title: str = "training curve") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ep = [h["epoch"] for h in history]
    for k in sorted(k for k in history[0] if k.startswith("loss_")):
        ax[0].plot(ep, [h[k] for h in history], label=k[5:])
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("training loss"), ax[0].legend()
    ev = [h for h in history if "val_ndcg10" in h]
    ax[1].plot([h["epoch"] for h in ev], [h["val_ndcg10"] for h in ev], label="val NDCG@10")
    ax[1].plot([h["epoch"] for h in ev], [h["val_hr10"] for h in ev], label="val HR@10")
    if any("val_ndcg10_raw" in h for h in ev):
        ax[1].plot([h["epoch"] for h in ev], [h["val_ndcg10_raw"] for h in ev], ":",
                   label="val NDCG@10, trained weights (not averaged)")
    ax[1].set_xlabel("epoch"), ax[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
