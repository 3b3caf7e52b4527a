"""Trainable heads that objectives and fine-tuning tasks put on top of the shared encoder.

A model's heads are one ``nn.ModuleDict`` keyed by head name; a checkpoint stores its state dict
under ``heads`` (so ``purchase.propensity.0.weight``) and the names under ``head_names``.

- ``purchase`` (:class:`PurchaseHeads`): the multi-task purchase towers: a query for "what will be
  bought next" and the propensity that the next event on an item is a purchase.
- ``replaced`` (:class:`ReplacedItemHeads`): replaced-item detection, the generator-discriminator
  objective (as ELECTRA's replaced-token detection): a small generator of its own proposes items for
  masked positions, and a detector on the encoder's hidden state says which positions were replaced.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from model.encoder import EncoderConfig, SeqEncoder

HEADS = ("purchase", "replaced")


class PurchaseHeads(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.next_purchase = nn.Linear(dim, dim)
        self.propensity = nn.Sequential(nn.Linear(3 * dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def purchase_state(self, h: torch.Tensor) -> torch.Tensor:
        """Query vectors (.., D) to score against the item table for 'what will be bought next'."""
        return h + self.next_purchase(h)

    def propensity_logit(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Logit (..) that the next event, on the item of vector ``e``, is a purchase, from the state ``h``."""
        return self.propensity(torch.cat([h, e, h * e], -1)).squeeze(-1)


class ReplacedItemHeads(nn.Module):
    """The generator (a one-layer encoder a quarter of the size, with its own item table, trained on
    Cloze) and the detector (a linear layer on the main encoder's bidirectional hidden states)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        gdim = max(16, cfg.dim // 4)
        self.generator = SeqEncoder(EncoderConfig(n_items=cfg.n_items, dim=gdim, n_layers=1, n_heads=1,
                                                  max_len=cfg.max_len, dropout=cfg.dropout,
                                                  n_types=cfg.n_types, ffn_mult=2))
        self.detector = nn.Linear(cfg.dim, 1)

    def detect_logit(self, h: torch.Tensor) -> torch.Tensor:
        """Logit (B, T) that each position's item was replaced."""
        return self.detector(h).squeeze(-1)


def build_heads(names, cfg: EncoderConfig) -> nn.ModuleDict | None:
    """The heads ``names`` need (any of ``HEADS``; other names are ignored), or None if none."""
    wanted = [n for n in HEADS if n in set(names)]
    if not wanted:
        return None
    make = {"purchase": lambda: PurchaseHeads(cfg.dim), "replaced": lambda: ReplacedItemHeads(cfg)}
    return nn.ModuleDict({n: make[n]() for n in wanted})


def load_heads(state: dict | None, names, cfg: EncoderConfig) -> nn.ModuleDict | None:
    """Heads ``names`` holding the matching part of a checkpoint's ``heads`` state (heads not in it
    keep their fresh weights; a head whose item table is smaller than the encoder's grows)."""
    heads = build_heads(names, cfg)
    if heads is None or not state:
        return heads
    for name, head in heads.items():
        part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        if not part:
            continue
        if name == "replaced":
            table = part["generator.item_emb.weight"]
            if table.shape[0] < cfg.n_items:   # the fine-tuning data brought new items
                head.generator.item_emb.weight.data[:table.shape[0]] = table
                part["generator.item_emb.weight"] = head.generator.item_emb.weight.data
        head.load_state_dict(part)
    return heads
