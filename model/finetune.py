"""Fine-tuning: a downstream task on a pretrained encoder (``streamrec finetune --from CKPT``).

Tasks:
- ``next``: next-item ranking on the downstream data. Its head is the item table, which is also
  the output layer: it always trains (new items of the downstream data need rows).
- ``purchase``: the purchase heads (``model.heads.PurchaseHeads``): the propensity that the next
  event on an item is a purchase (AUC and log-loss on held-out events, beside an item-popularity
  propensity baseline) and "which item is bought next" (purchase HR@10 / NDCG@10). The next-item
  loss trains beside it at ``next_weight``, so click ranking is kept.

The encoder (transformer, position, type and mask embeddings) is ``frozen`` or trains at its own
learning rate, ``encoder_lr_scale`` times the heads'. The checkpoint is chosen on the task's
validation score (purchase: NDCG@10 of the next purchased item) and says ``stage: finetune``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.data import SeqDataset, loo_split, loo_train
from model.encoder import TYPE_IDS, EncoderConfig, SeqEncoder
from model.evaluate import evaluate_model, user_vectors
from model.heads import load_heads
from model.metrics import auc, log_loss
from model.objectives import ObjectiveConfig
from model.pretrain import Stage, TrainConfig, default_device, fit, load_encoder_weights, next_item_validation

log = logging.getLogger(__name__)

TASKS = ("next", "purchase")
ENCODER_MODES = ("train", "frozen")
PURCHASE = TYPE_IDS["purchase"]


@dataclass
class FinetuneConfig:
    task: str = "next"
    encoder: str = "train"          # "frozen": only the heads and the item table train
    encoder_lr_scale: float = 0.3   # the encoder's learning rate, as a share of TrainConfig.lr
    next_weight: float = 1.0        # purchase task: weight of the next-item loss beside it
    n_negatives: int = 0            # sampled softmax for large catalogues (0 = full)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if self.encoder not in ENCODER_MODES:
            raise ValueError(f"encoder must be one of {', '.join(ENCODER_MODES)}, not {self.encoder!r}")
        if not self.encoder_lr_scale > 0:
            raise ValueError(f"encoder_lr_scale must be > 0, not {self.encoder_lr_scale}")


def purchase_figures(enc: SeqEncoder, heads, ds: SeqDataset, which: str) -> dict:
    """Purchase figures on the held-out events of ``which`` split: HR/NDCG@10 of ranking the next
    purchased item, the item-popularity propensity's AUC and log-loss (each item's smoothed purchase
    share in the training events) and, with purchase heads, theirs. Without purchase heads (a
    next-item model) the next purchase is ranked with the user vector and there is no propensity."""
    split = loo_split(ds, which)
    bought = split.target_types == PURCHASE
    base = popularity_propensity(ds)[split.targets]
    out = {"events": int(len(bought)), "purchases": int(bought.sum()),
           "popularity_auc": auc(base, bought), "popularity_log_loss": log_loss(base, bought)}
    head = None
    if heads is not None and "purchase" in heads:
        head = copy.deepcopy(heads["purchase"]).cpu().eval()   # the queries are CPU tensors
    with torch.no_grad():
        if head is not None:
            u = user_vectors(enc, split.inputs, split.input_types, scenarios=split.input_scenarios)
            e = enc.item_vectors().detach().float().cpu()[torch.from_numpy(split.targets)]
            p = torch.sigmoid(head.propensity_logit(u, e)).numpy()
            out.update(auc=auc(p, bought), log_loss=log_loss(p, bought))
        ranking = evaluate_model(enc, ds, which, with_popularity=False, only_types=[PURCHASE],
                                 query_fn=head.purchase_state if head is not None else None)
    r = ranking["model"]["filtered"] if ranking["users"] else {"HR@10": float("nan"), "NDCG@10": float("nan")}
    return {**out, "purchase_hr10": r["HR@10"], "purchase_ndcg10": r["NDCG@10"], "purchase_users": ranking["users"]}


def popularity_propensity(ds: SeqDataset, prior: float = 10.0) -> np.ndarray:
    """Per item row: (purchases + prior * overall share) / (events + prior) in the training events."""
    items, types = loo_train(ds)
    it = np.concatenate(items) if items else np.zeros(0, np.int64)
    ty = np.concatenate(types) if types else np.zeros(0, np.int64)
    n = len(ds.vocab)
    events = np.bincount(it, minlength=n)[:n].astype(np.float64)
    buys = np.bincount(it[ty == PURCHASE], minlength=n)[:n].astype(np.float64)
    share = buys.sum() / max(events.sum(), 1.0)
    seen = events + prior > 0
    return np.where(seen, (buys + prior * share) / np.where(seen, events + prior, 1.0), share)


def purchase_validation(enc: SeqEncoder, heads, ds: SeqDataset) -> dict:
    f = purchase_figures(enc, heads, ds, "valid")
    score = f["purchase_ndcg10"]
    return {"score": -1.0 if np.isnan(score) else score, "val_ndcg10": f["purchase_ndcg10"],
            "val_hr10": f["purchase_hr10"], "val_auc": f["auc"], "val_log_loss": f["log_loss"]}


def finetune(ds: SeqDataset, checkpoint: str, fcfg: FinetuneConfig, tcfg: TrainConfig, out_dir: str) -> dict:
    """Fine-tune the encoder of ``checkpoint`` on ``ds`` (whose vocabulary must extend the
    checkpoint's: ``load_dataset(..., vocab=ItemVocab.from_state(ck["vocab"]), grow=True)``)."""
    torch.manual_seed(tcfg.seed)
    ck = load_checkpoint(checkpoint)
    ecfg = EncoderConfig.from_dict(ck["config"])
    if len(ds.vocab) < ecfg.n_items:
        raise ValueError(f"the data's vocabulary ({len(ds.vocab)} rows) does not extend the checkpoint's "
                         f"({ecfg.n_items}): load it on the checkpoint's vocabulary")
    ecfg.n_items = len(ds.vocab)
    device = default_device(tcfg.device)
    enc = SeqEncoder(ecfg)
    load_encoder_weights(enc, ck, checkpoint)
    enc.to(device)
    weights = {"next": 1.0} if fcfg.task == "next" else {"purchase": 1.0, "next": fcfg.next_weight}
    weights = {k: v for k, v in weights.items() if v > 0}
    heads = load_heads(ck.get("heads"), ["purchase"], ecfg) if fcfg.task == "purchase" else None
    heads = heads.to(device) if heads is not None else None
    body = [p for name, p in enc.named_parameters() if name != "item_emb.weight"]
    if fcfg.encoder == "frozen":
        for p in body:
            p.requires_grad_(False)
    groups = [{"params": [enc.item_emb.weight] + (list(heads.parameters()) if heads is not None else []),
               "lr_scale": 1.0}]
    if fcfg.encoder == "train":
        groups.append({"params": body, "lr_scale": fcfg.encoder_lr_scale})
    opt = torch.optim.Adam(groups, lr=tcfg.lr, betas=(0.9, 0.98), weight_decay=tcfg.weight_decay)
    stage = Stage("finetune", fcfg.task, next_item_validation if fcfg.task == "next" else purchase_validation)
    log.info("fine-tuning %s (stage %s) for %s, encoder %s", checkpoint, ck["stage"], fcfg.task, fcfg.encoder)
    summary = fit(ds, enc, heads, opt, ObjectiveConfig(weights=weights, n_negatives=fcfg.n_negatives),
                  tcfg, out_dir, stage)
    summary["from"] = {"checkpoint": checkpoint, "stage": ck["stage"], "task": ck["task"],
                       "objectives": (ck.get("objectives") or {}).get("weights")}
    return summary
