"""Each objective's loss decreases on a tiny batch; sampled softmax and the custom full-softmax CE."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.data import pad_left
from model.encoder import EncoderConfig, SeqEncoder
from model.objectives import (OBJECTIVES, Batch, FullSoftmaxCE, ObjectiveConfig, PurchaseHeads,
                              _augment, compute_losses, info_nce)

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
    enc = SeqEncoder(EncoderConfig(n_items=21, dim=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0))
    heads = PurchaseHeads(16)
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
