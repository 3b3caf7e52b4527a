"""Each objective's loss decreases on a tiny batch; sampled softmax and the custom full-softmax CE."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.data import pad_left
from model.encoder import EncoderConfig, SeqEncoder
from model.heads import build_heads
from model.objectives import (OBJECTIVES, Batch, FullSoftmaxCE, ObjectiveConfig, _augment, compute_losses,
                              info_nce)

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine


def tiny_batch(seed=0, n_items=20, B=16, L=8):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, n_items + 1, size=int(rng.integers(3, L + 2))) for _ in range(B)]
    tys = [rng.choice([1, 2], size=len(s), p=[0.7, 0.3]) for s in seqs]
    f = lambda xs: torch.from_numpy(pad_left(xs, L))
    return Batch(f([s[:-1] for s in seqs]), f([t[:-1] for t in tys]), f([s[1:] for s in seqs]),
                 f([t[1:] for t in tys]))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_each_objective_loss_decreases(name):
    torch.manual_seed(0)
    weights = {name: 1.0} if name != "adversarial" else {"next": 1.0, "adversarial": 1.0}
    cfg = ObjectiveConfig(weights=weights)
    ecfg = EncoderConfig(n_items=21, dim=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0)
    enc = SeqEncoder(ecfg)
    heads = build_heads(OBJECTIVES, ecfg)
    opt = torch.optim.Adam(list(enc.parameters()) + list(heads.parameters()), lr=1e-2)
    batch = tiny_batch()

    def loss():
        torch.manual_seed(1)  # same masks/augmentations each time, so the values are comparable
        return compute_losses(enc, heads, batch, cfg, random.Random(1))[name]

    first = loss().item()
    for _ in range(40):  # the same masks/augmentations as measured: the tiny batch can be fitted
        torch.manual_seed(1)
        total = compute_losses(enc, heads, batch, cfg, random.Random(1))["total"]
        opt.zero_grad(); total.backward(); opt.step()
    assert loss().item() < 0.8 * first


def test_full_softmax_ce_matches_reference():
    torch.manual_seed(0)
    h = torch.randn(50, 8, requires_grad=True)
    W = torch.randn(13, 8, requires_grad=True)
    t = torch.randint(1, 13, (50,))
    ours = FullSoftmaxCE.apply(h, W, t, 7)
    gh, gW = torch.autograd.grad(ours, (h, W))
    logits = h @ W.T
    ref = F.cross_entropy(torch.cat([torch.full((50, 1), -1e9), logits[:, 1:]], 1), t)
    rh, rW = torch.autograd.grad(ref, (h, W))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(gh, rh)
    torch.testing.assert_close(gW, rW)


def test_sampled_softmax_and_weights():
    torch.manual_seed(0)
    enc = SeqEncoder(EncoderConfig(n_items=21, dim=16, n_layers=1, max_len=8))
    out = compute_losses(enc, None, tiny_batch(), ObjectiveConfig(weights={"next": 2.0, "masked": 0.5},
                                                                  n_negatives=5))
    assert torch.isfinite(out["total"])
    torch.testing.assert_close(out["total"], 2.0 * out["next"] + 0.5 * out["masked"])
    with pytest.raises(ValueError, match="unknown objectives"):
        ObjectiveConfig(weights={"nope": 1.0})
    with pytest.raises(ValueError, match="enable 'next'"):
        ObjectiveConfig(weights={"adversarial": 1.0})


def test_augmentations_and_info_nce():
    rng = random.Random(0)
    items, types = np.arange(1, 11), np.ones(10, dtype=np.int64)
    for _ in range(30):
        i, t, m = _augment(items, types, ObjectiveConfig(), rng)
        assert len(i) == len(t) == len(m) and 1 <= len(i) <= 10
        assert set(i.tolist()) <= set(items.tolist())
    z = torch.randn(4, 8)
    assert info_nce(z, z, 0.1) < info_nce(z, torch.randn(4, 8), 0.1)


# ---- what each new objective is for: a planted rule, learned only when the objective works --------
N_WALK = 20


def walk_batch(B=64, L=10, seed=None) -> Batch:
    """Rows walk items k -> k + 1 (mod N_WALK) from random starts: any item follows from its neighbours."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    start = torch.randint(0, N_WALK, (B, 1), generator=g)
    items = (start + torch.arange(L + 1)) % N_WALK + 1
    ones = torch.ones_like(items)
    return Batch(items[:, :-1], ones[:, :-1], items[:, 1:], ones[:, 1:])


def train_on_walks(weights: dict, steps: int = 300, **cfg_kw):
    torch.manual_seed(0)
    ecfg = EncoderConfig(n_items=N_WALK + 1, dim=32, n_layers=1, max_len=10, dropout=0.0)
    enc, cfg = SeqEncoder(ecfg), ObjectiveConfig(weights=weights, **cfg_kw)
    heads = build_heads(weights, ecfg)
    params = list(enc.parameters()) + (list(heads.parameters()) if heads is not None else [])
    opt = torch.optim.Adam(params, lr=5e-3)
    for _ in range(steps):
        loss = compute_losses(enc, heads, walk_batch(), cfg)["total"]
        opt.zero_grad(); loss.backward(); opt.step()
    return enc.eval(), heads.eval() if heads is not None else None


def corrupt(batch: Batch, prob: float = 0.2, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    noisy = torch.rand(batch.items.shape, generator=g) < prob
    random_items = torch.randint(1, N_WALK + 1, batch.items.shape, generator=g)
    noisy &= random_items != batch.items
    return torch.where(noisy, random_items, batch.items), noisy


@torch.no_grad()
def reconstruction_accuracy(enc) -> float:
    """Share of corrupted positions whose original item the bidirectional encoder puts first."""
    batch = walk_batch(256, seed=1)
    corrupted, noisy = corrupt(batch)
    pred = (enc(corrupted, batch.types, causal=False) @ enc.item_vectors().T)[..., 1:].argmax(-1) + 1
    return (pred[noisy] == batch.items[noisy]).float().mean().item()


def test_denoising_reconstructs_corrupted_items_from_their_neighbours():
    enc, _ = train_on_walks({"denoising": 1.0})
    assert reconstruction_accuracy(enc) > 0.35        # 0.55 measured; 1 in 20 by chance
    # switched off (next-item only: no bidirectional reconstruction learned) it does not
    enc_next, _ = train_on_walks({"next": 1.0})
    assert reconstruction_accuracy(enc_next) < 0.15


@torch.no_grad()
def detection_auc(enc, heads) -> float:
    from model.metrics import auc
    batch = walk_batch(256, seed=2)
    corrupted, noisy = corrupt(batch, 0.15)
    logit = heads["replaced"].detect_logit(enc(corrupted, batch.types, causal=False))
    return auc(logit.flatten().numpy(), noisy.flatten().numpy())


def test_replaced_item_detection_finds_the_items_that_do_not_fit():
    enc, heads = train_on_walks({"replaced": 1.0}, steps=600)
    assert detection_auc(enc, heads) > 0.7            # 0.82 measured
    enc_next, _ = train_on_walks({"next": 1.0})     # its detector never trained
    assert detection_auc(enc_next, build_heads(["replaced"], enc_next.cfg).eval()) < 0.6
    # the generator learnt Cloze: it fills a masked item with the original far more often than chance
    gen = heads["replaced"].generator
    batch = walk_batch(256, seed=4)
    masked = torch.zeros_like(batch.items, dtype=torch.bool)
    masked[:, 3:7:2] = True
    with torch.no_grad():
        h = gen(batch.items, batch.types, x=gen.embed(batch.items, batch.types, masked=masked), causal=False)
        pred = (h[masked] @ gen.item_vectors().T)[:, 1:].argmax(-1) + 1
    assert (pred == batch.items[masked]).float().mean() > 0.6   # 0.94 measured


def test_adversarial_perturbation_has_the_size_eps_says():
    from model.objectives import adversarial_loss, next_item_loss
    torch.manual_seed(0)
    enc = SeqEncoder(EncoderConfig(n_items=N_WALK + 1, dim=16, n_layers=1, max_len=10, dropout=0.0))
    batch = walk_batch(32, seed=3)
    clean = next_item_loss(enc, batch, ObjectiveConfig()).item()
    at = {eps: adversarial_loss(enc, batch, ObjectiveConfig(weights={"next": 1.0, "adversarial": 1.0},
                                                             adv_eps=eps)).item() for eps in (0.0, 0.5, 2.0)}
    assert at[0.0] == pytest.approx(clean, rel=1e-5)
    assert clean < at[0.5] < at[2.0]                  # along the gradient: the loss rises with eps
    with pytest.raises(ValueError, match="adv_eps"):
        ObjectiveConfig(adv_eps=-1.0)
