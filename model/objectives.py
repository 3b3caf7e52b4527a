"""Pretraining objectives, each selectable and weighted, combined in one training step.

- ``next``: next-item prediction at every position; full-softmax cross-entropy over the whole
  catalogue, or sampled softmax (``n_negatives > 0``, uniform shared negatives) for large ones.
- ``masked``: Cloze — mask a fraction of input items, encode bidirectionally (shared weights),
  predict the masked items (full softmax).
- ``contrastive``: two augmented views (crop / mask / reorder) of each sequence; InfoNCE between
  their user vectors, the other 2B-2 views of the batch as negatives.
- ``purchase``: multi-task heads — (a) next purchased item: a projection of the hidden state
  scored against the item table, trained where the next event is a purchase; (b) purchase
  propensity of a (user state, next item) pair: binary click vs. purchase.
- ``adversarial``: FGSM/APR-style — perturb the input embeddings by ``adv_eps`` along the
  normalised gradient of the next-item loss and add the loss at the perturbed input.
- ``denoising``: a denoising sequence autoencoder — replace a fraction of the input items by
  random ones, encode bidirectionally, and reconstruct the original item at every position.
- ``replaced``: replaced-item detection (generator-discriminator, as ELECTRA) — a small generator
  trained on Cloze fills masked positions with items sampled from its predictions; the encoder,
  bidirectionally over the filled sequence, learns which positions were replaced.

The heads that ``purchase`` and ``replaced`` train are in :mod:`model.heads`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.encoder import PAD, TYPE_IDS, SeqEncoder
from model.heads import PurchaseHeads, ReplacedItemHeads

OBJECTIVES = ("next", "masked", "contrastive", "denoising", "replaced", "purchase", "adversarial")
PURCHASE = TYPE_IDS["purchase"]


@dataclass
class ObjectiveConfig:
    weights: dict[str, float] = field(default_factory=lambda: {"next": 1.0})
    n_negatives: int = 0           # 0 = full softmax; > 0 = sampled softmax with this many negatives
    mask_prob: float = 0.2         # Cloze masking ratio
    cl_temperature: float = 0.2    # InfoNCE on cosine similarity
    crop_ratio: float = 0.6        # contrastive augmentations (CL4SRec eta, gamma, beta)
    mask_ratio: float = 0.3
    reorder_ratio: float = 0.3
    adv_eps: float = 0.5           # L2 norm of the perturbation per position
    noise_prob: float = 0.2        # denoising: share of input items replaced by random ones
    replace_prob: float = 0.15     # replaced: share of input items the generator fills
    detector_weight: float = 10.0  # replaced: detection loss against the generator's Cloze loss

    def __post_init__(self):
        unknown = set(self.weights) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"unknown objectives {sorted(unknown)}; choose from {', '.join(OBJECTIVES)}")
        if "adversarial" in self.weights and "next" not in self.weights:
            raise ValueError("the adversarial objective perturbs the next-item loss: enable 'next' too")
        for name in ("mask_prob", "noise_prob", "replace_prob"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), not {getattr(self, name)}")
        if self.adv_eps < 0:
            raise ValueError(f"adv_eps must be >= 0, not {self.adv_eps}")


@dataclass
class Batch:
    """Left-padded (B, T) input items/types and next-item targets/target types (0 = none); with
    scenarios, the targets' scenario rows (what each position predicts for, ``SeqEncoder``)."""
    items: torch.Tensor
    types: torch.Tensor
    targets: torch.Tensor
    target_types: torch.Tensor
    scenarios: torch.Tensor | None = None

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.items, self.types, self.targets, self.target_types)),
                     None if self.scenarios is None else self.scenarios.to(device))


# ---- losses ------------------------------------------------------------------------------------
class FullSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of ``h @ W.T`` (padding row 0 excluded) against ``targets``, computed in
    row chunks and recomputed in backward: never holds the (M, N) logits, and on CPU it is about
    1.5x faster than ``F.cross_entropy`` on materialised logits (log_softmax backward is slow)."""

    @staticmethod
    def forward(ctx, h, W, targets, chunk: int = 256):
        M = h.shape[0]
        lse = torch.empty(M, dtype=h.dtype, device=h.device)
        total = h.new_zeros(())
        for s in range(0, M, chunk):
            lg = h[s:s + chunk] @ W.T                                             # (c, N)
            lg[:, PAD] = float("-inf")
            lse[s:s + chunk] = torch.logsumexp(lg, 1)
            total = total + (lse[s:s + chunk] - lg.gather(1, targets[s:s + chunk, None])[:, 0]).sum()
        ctx.save_for_backward(h, W, targets, lse)
        ctx.chunk = chunk
        return total / max(M, 1)

    @staticmethod
    def backward(ctx, g):
        h, W, targets, lse = ctx.saved_tensors
        M, chunk = h.shape[0], ctx.chunk
        gh, gW = torch.empty_like(h), torch.zeros_like(W)
        scale = g / max(M, 1)
        for s in range(0, M, chunk):
            lg = h[s:s + chunk] @ W.T
            lg[:, PAD] = float("-inf")
            p = lg.sub_(lse[s:s + chunk, None]).exp_()                            # softmax
            p[torch.arange(p.shape[0], device=p.device), targets[s:s + chunk]] -= 1
            p.mul_(scale)
            gh[s:s + chunk] = p @ W
            gW.addmm_(p.T, h[s:s + chunk])
        return gh, gW, None, None


def item_ce(enc: SeqEncoder, h: torch.Tensor, targets: torch.Tensor, n_negatives: int = 0) -> torch.Tensor:
    """Cross-entropy of hidden states (M, D) against target rows (M,): full or sampled softmax."""
    if n_negatives <= 0:
        return FullSoftmaxCE.apply(h, enc.item_vectors(), targets)
    W = enc.item_vectors()
    neg = torch.randint(1, W.shape[0], (n_negatives,), device=h.device)         # shared negatives
    pos_logit = (h * W[targets]).sum(-1, keepdim=True)                           # (M, 1)
    neg_logit = h @ W[neg].T                                                     # (M, K)
    neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], float("-inf"))  # accidental hits
    return F.cross_entropy(torch.cat([pos_logit, neg_logit], 1), torch.zeros_like(targets))


def next_item_loss(enc, batch: Batch, cfg: ObjectiveConfig, x=None) -> torch.Tensor:
    h = enc(batch.items, batch.types, x=x, scenarios=batch.scenarios)            # (B, T, D)
    sel = batch.targets != PAD
    return item_ce(enc, h[sel], batch.targets[sel], cfg.n_negatives)


def masked_item_loss(enc, batch: Batch, cfg: ObjectiveConfig) -> torch.Tensor:
    masked = random_positions(batch.items, cfg.mask_prob, with_last=True)
    x = enc.embed(batch.items, batch.types, masked=masked)
    h = enc(batch.items, batch.types, x=x, causal=False)
    return item_ce(enc, h[masked], batch.items[masked], cfg.n_negatives)


def _augment(items: np.ndarray, types: np.ndarray, cfg: ObjectiveConfig, rng: random.Random):
    """One random CL4SRec augmentation of a real (unpadded) sequence -> items, types, masked."""
    n = len(items)
    masked = np.zeros(n, dtype=bool)
    op = rng.choice(("crop", "mask", "reorder"))
    if op == "crop" and n > 1:
        m = max(1, int(cfg.crop_ratio * n))
        s = rng.randrange(0, n - m + 1)
        return items[s:s + m], types[s:s + m], masked[s:s + m]
    if op == "mask":
        k = int(cfg.mask_ratio * n)
        if k:
            masked[rng.sample(range(n), k)] = True
        return items, types, masked
    m = int(cfg.reorder_ratio * n)
    if m > 1:
        s = rng.randrange(0, n - m + 1)
        perm = s + np.array(rng.sample(range(m), m))
        items, types = items.copy(), types.copy()
        items[s:s + m], types[s:s + m] = items[perm], types[perm]
    return items, types, masked


def _augmented_view(batch: Batch, cfg: ObjectiveConfig, rng: random.Random):
    B, T = batch.items.shape
    items = torch.zeros_like(batch.items)
    types = torch.zeros_like(batch.types)
    masked = torch.zeros_like(batch.items, dtype=torch.bool)
    it, ty = batch.items.cpu().numpy(), batch.types.cpu().numpy()
    for b in range(B):
        real = it[b] != PAD
        i, t, m = _augment(it[b][real], ty[b][real], cfg, rng)
        L = len(i)
        items[b, T - L:], types[b, T - L:] = torch.from_numpy(i), torch.from_numpy(t)
        masked[b, T - L:] = torch.from_numpy(m)
    return items, types, masked


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2B views: each view's positive is its twin, the other 2B-2 are negatives."""
    B = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.T / temperature                                                 # (2B, 2B)
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(sim, target)


def contrastive_loss(enc, batch: Batch, cfg: ObjectiveConfig, rng: random.Random) -> torch.Tensor:
    zs = []
    for _ in range(2):
        items, types, masked = (t.to(batch.items.device) for t in _augmented_view(batch, cfg, rng))
        zs.append(enc(items, types, x=enc.embed(items, types, masked=masked))[:, -1])
    return info_nce(zs[0], zs[1], cfg.cl_temperature)


def purchase_loss(enc, heads: PurchaseHeads, batch: Batch, cfg: ObjectiveConfig) -> torch.Tensor:
    h = enc(batch.items, batch.types, scenarios=batch.scenarios)
    sel = batch.targets != PAD
    hs, tgt, buy = h[sel], batch.targets[sel], (batch.target_types[sel] == PURCHASE)
    # (b) propensity of the (state, next item) pair being a purchase
    e = enc.item_vectors()[tgt]
    loss = F.binary_cross_entropy_with_logits(heads.propensity_logit(hs, e), buy.float())
    # (a) next purchased item, only where there is one
    if buy.any():
        loss = loss + item_ce(enc, heads.purchase_state(hs[buy]), tgt[buy], cfg.n_negatives)
    return loss


def random_positions(items: torch.Tensor, prob: float, with_last: bool = False) -> torch.Tensor:
    """(B, T) bool: each real position with probability ``prob``; ``with_last``: and the last real
    one of every row (so every row takes part; not where a position's choice must be unpredictable,
    as for the replaced-item detector)."""
    real = items != PAD
    chosen = (torch.rand(items.shape, device=items.device) < prob) & real
    if with_last:
        chosen[:, -1] |= real[:, -1]
    return chosen


def denoising_loss(enc, batch: Batch, cfg: ObjectiveConfig) -> torch.Tensor:
    noisy = random_positions(batch.items, cfg.noise_prob)
    n_items = enc.item_vectors().shape[0]
    random_items = torch.randint(1, n_items, batch.items.shape, device=batch.items.device)
    corrupted = torch.where(noisy, random_items, batch.items)
    h = enc(corrupted, batch.types, causal=False)
    real = batch.items != PAD
    return item_ce(enc, h[real], batch.items[real], cfg.n_negatives)


def replaced_loss(enc, heads: ReplacedItemHeads, batch: Batch, cfg: ObjectiveConfig) -> torch.Tensor:
    gen = heads.generator
    masked = random_positions(batch.items, cfg.replace_prob)
    hg = gen(batch.items, batch.types, x=gen.embed(batch.items, batch.types, masked=masked), causal=False)
    if not masked.any():
        return hg.sum() * 0.0
    gen_loss = item_ce(gen, hg[masked], batch.items[masked], cfg.n_negatives)
    with torch.no_grad():   # the generator's samples: the detector's gradient does not reach it
        queries, table = hg[masked].float(), gen.item_vectors().float()
        parts = []
        for s in range(0, len(queries), 256):   # (256, N) logits at a time: large catalogues fit
            logits = queries[s:s + 256] @ table.T
            logits[:, PAD] = float("-inf")
            parts.append(torch.multinomial(torch.softmax(logits, -1), 1)[:, 0])
        sampled = torch.cat(parts)
    filled = batch.items.clone()
    filled[masked] = sampled
    replaced = filled != batch.items            # a sample equal to the original counts as original
    real = batch.items != PAD
    logit = heads.detect_logit(enc(filled, batch.types, causal=False))
    detect = F.binary_cross_entropy_with_logits(logit[real], replaced[real].float())
    return gen_loss + cfg.detector_weight * detect


def adversarial_loss(enc, batch: Batch, cfg: ObjectiveConfig) -> torch.Tensor:
    x = enc.embed(batch.items, batch.types, scenarios=batch.scenarios)
    x_det = x.detach().requires_grad_(True)
    clean = next_item_loss(enc, batch, cfg, x=x_det)
    (g,) = torch.autograd.grad(clean, x_det)
    delta = cfg.adv_eps * F.normalize(g, dim=-1)                                  # FGSM, L2 per position
    return next_item_loss(enc, batch, cfg, x=x + delta.detach())


def compute_losses(enc: SeqEncoder, heads: nn.ModuleDict | None, batch: Batch, cfg: ObjectiveConfig,
                   rng: random.Random | None = None) -> dict[str, torch.Tensor]:
    """Weighted losses of the enabled objectives plus their sum under ``"total"``; ``heads`` holds
    what ``purchase`` and ``replaced`` train (``model.heads.build_heads``)."""
    rng = rng or random.Random()
    out: dict[str, torch.Tensor] = {}
    w = cfg.weights
    if w.get("next"):
        out["next"] = next_item_loss(enc, batch, cfg)
    if w.get("masked"):
        out["masked"] = masked_item_loss(enc, batch, cfg)
    if w.get("contrastive"):
        out["contrastive"] = contrastive_loss(enc, batch, cfg, rng)
    if w.get("denoising"):
        out["denoising"] = denoising_loss(enc, batch, cfg)
    for name, loss in (("replaced", replaced_loss), ("purchase", purchase_loss)):
        if w.get(name):
            if heads is None or name not in heads:
                raise ValueError(f"the {name} objective needs its head (model.heads.build_heads)")
            out[name] = loss(enc, heads[name], batch, cfg)
    if w.get("adversarial"):
        out["adversarial"] = adversarial_loss(enc, batch, cfg)
    if not out:
        raise ValueError("no objective enabled")
    out["total"] = sum(w[k] * v for k, v in out.items())
    return out
