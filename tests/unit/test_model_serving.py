"""Checkpoints, the Recommender facade, cold start, the online trainer and the commands."""
import json
import os

import numpy as np
import pytest
import torch

from model.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint
from model.encoder import EncoderConfig
from model.incremental import OnlineTrainer, ReplayBuffer
from model.objectives import ObjectiveConfig
from model.recommender import Recommender
from model.vocab import ItemVocab

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine

CFG = EncoderConfig(dim=16, n_layers=1, n_heads=1, max_len=10, dropout=0.0)


def fresh(n=20, seed=0):
    return Recommender.fresh(CFG, [f"i{k}" for k in range(n)], seed=seed)


# ---- checkpoints ------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    rec = fresh()
    rec.version = 7
    path = str(tmp_path / "m.ckpt")
    rec.save(path, step=12, best_val=0.25)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".ckpt-")]  # no temporary left
    back = Recommender.from_checkpoint(path, expected=CFG)
    assert back.version == 7 and back.step == 12 and back.best_val == 0.25
    assert back.vocab.ids() == rec.vocab.ids()
    ids, M = back.item_matrix()
    np.testing.assert_array_equal(M, rec.item_matrix()[1])
    h = [[("i1", "click"), ("i2", "purchase")]]
    np.testing.assert_allclose(back.user_vectors(h), rec.user_vectors(h), atol=1e-6)
    ck = load_checkpoint(path)
    assert set(ck) >= {"model", "optimizer", "config", "vocab", "step", "best_val", "version"}


def test_checkpoint_refuses_other_architecture(tmp_path):
    path = str(tmp_path / "m.ckpt")
    fresh().save(path)
    other = EncoderConfig(dim=32, n_layers=1, n_heads=1, max_len=10)
    with pytest.raises(CheckpointError, match=r"different architecture \(dim: checkpoint 16 vs expected 32\)"):
        load_checkpoint(path, expected=other)
    # n_items (grows online) and dropout (training only) are not architecture
    load_checkpoint(path, expected=EncoderConfig(n_items=99, dim=16, n_layers=1, n_heads=1, max_len=10, dropout=0.5))


def test_checkpoint_corrupted_or_foreign(tmp_path):
    path = tmp_path / "m.ckpt"
    fresh().save(str(path))
    data = path.read_bytes()
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.ckpt.*corrupted or truncated"):
        load_checkpoint(str(trunc))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        Recommender.from_checkpoint(str(garbage))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"format_version": FORMAT_VERSION, "weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.ckpt is not a StreamRec checkpoint"):
        load_checkpoint(str(foreign))
    with pytest.raises(CheckpointError, match="not found: .*nope.ckpt"):
        load_checkpoint(str(tmp_path / "nope.ckpt"))


# ---- recommender ------------------------------------------------------------------------------
def test_serving_trace_is_made_again_when_the_encoder_is_on_another_device():
    rec = fresh()
    history = [[("i1", "click"), ("i3", "purchase")]]
    first = rec.user_vectors(history)
    traced_for = rec._encode
    assert traced_for[0] == rec.device
    rec._encode = (torch.device("meta"), None)       # as if traced before OnlineTrainer moved it
    np.testing.assert_allclose(rec.user_vectors(history), first, atol=1e-6)
    assert rec._encode[0] == rec.device and rec._encode[1] is not traced_for[1]


def test_user_vectors_and_item_matrix_shapes():
    rec = fresh()
    U = rec.user_vectors([[("i1", "click"), ("i3", "purchase")], [("unknown", "click")], []])
    assert U.shape == (3, 16) and U.dtype == np.float32
    assert np.abs(U[0]).sum() > 0 and not U[1].any() and not U[2].any()
    assert rec.known([[("i1", "click")], [("x", "click")], []]).tolist() == [True, False, False]
    ids, M = rec.item_matrix()
    assert ids == [f"i{k}" for k in range(20)] and M.shape == (20, 16) and M.dtype == np.float32
    long = [(f"i{k % 20}", "click") for k in range(50)]   # longer than max_len: most recent kept
    assert rec.user_vectors([long]).shape == (1, 16)


def test_recommend_model_and_popular_fallback():
    rec = fresh()
    rec.count(np.array([5, 5, 5, 2]))                      # rows 5 (i4) and 2 (i1) popular
    out = rec.recommend([[("i0", "click")], [("nobody-knows", "click")]], k=3)
    assert out[0]["source"] == "model" and len(out[0]["items"]) == 3
    assert "i0" not in [i for i, _ in out[0]["items"]]    # seen items excluded
    assert out[1] == {"source": "popular", "items": [("i4", 3.0), ("i1", 1.0), ("i0", 0.0)]}


def test_cold_start_vector_close_to_co_items():
    rec = Recommender.fresh(EncoderConfig(dim=64, n_layers=1, max_len=10), [f"i{k}" for k in range(50)])
    _, M = rec.item_matrix()
    vec = rec.add_items(["new"], co_items=[["i3", "i7", "i9"]])[0]
    co = M[[3, 7, 9]]
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    others = [cos(vec, M[j]) for j in range(50) if j not in (3, 7, 9)]
    assert min(cos(vec, c) for c in co) > max(others)
    np.testing.assert_allclose(vec, co.mean(0), atol=1e-6)
    # trained rows untouched, the new item is in the index matrix
    ids, M2 = rec.item_matrix()
    np.testing.assert_array_equal(M2[:50], M)
    assert ids[-1] == "new" and M2.shape == (51, 64)
    # category fallback, then popularity fallback; known items keep their vector
    rec.add_items(["c1", "c2"], category="shoes")
    v = rec.add_items(["c3"], category="shoes")[0]
    np.testing.assert_allclose(v, rec.item_matrix()[1][[-3, -2]].mean(0), atol=1e-6)
    np.testing.assert_array_equal(rec.add_items(["i3"])[0], M[3])
    assert np.isfinite(rec.add_items(["orphan"])).all()


def test_snapshot_is_independent():
    rec = fresh()
    snap = rec.snapshot()
    rec.add_items(["zzz"])
    assert len(snap.vocab) == 21 and len(rec.vocab) == 22


# ---- online trainer ---------------------------------------------------------------------------
def test_online_update_lowers_loss_and_grows_vocab():
    rec = fresh(10)
    trainer = OnlineTrainer(rec, lr=1e-2, replay_capacity=50, steps_per_update=3, device="cpu")
    seqs = [[(f"i{(s + k) % 10}", "click") for k in range(8)] for s in range(10)]
    first = trainer.update(seqs)
    for _ in range(15):
        last = trainer.update(seqs)
    assert last < 0.7 * first
    assert trainer.version == 16 and rec.version == 16
    trainer.update([[("i1", "click"), ("brand-new", "purchase"), ("i2", "click")]])
    ids, M = rec.item_matrix()
    assert "brand-new" in ids and M.shape[0] == 11
    assert trainer.update([[("i1", "click")]]) == 0.0 and trainer.version == 17   # nothing to train on
    assert len(trainer.replay) <= 50


def test_online_trainer_trains_the_purchase_heads_that_serving_blends_with():
    """With the purchase objective the trainer learns a purchase rule that depends on the user's
    history (marker item m1 = buyer) and hands the heads to every snapshot."""
    import torch
    from model.heads import load_heads
    rec = fresh(10)
    trainer = OnlineTrainer(rec, lr=1e-2, replay_capacity=200, steps_per_update=3, device="cpu",
                            objectives=ObjectiveConfig(weights={"next": 1.0, "purchase": 1.0}))
    rng = np.random.default_rng(0)

    def user(buyer: bool) -> list:
        s = int(rng.integers(10))
        return [("m1" if buyer else "m2", "click")] + [(f"i{(s + k) % 10}", "purchase" if buyer else "click")
                                                       for k in range(6)]
    for _ in range(25):
        trainer.update([user(bool(b)) for b in rng.integers(2, size=32)])
    snap = rec.snapshot()
    assert any(k.startswith("purchase.") for k in snap.heads_state)
    head = load_heads(snap.heads_state, ["purchase"], snap.encoder.cfg)["purchase"].eval()
    tests = [user(b) for b in (True, False) * 20]
    u = torch.from_numpy(snap.user_vectors([t[:-1] for t in tests]))
    e = snap.encoder.item_vectors()[[snap.vocab.row(t[-1][0]) for t in tests]].detach()
    with torch.no_grad():
        p = torch.sigmoid(head.propensity_logit(u, e)).numpy()
    from model.metrics import auc
    assert auc(p, [t[-1][1] == "purchase" for t in tests]) > 0.9
    assert snap.set_purchase_weight(0.5) == 0.5
    # without the objective, no heads are trained or handed on
    plain = fresh(10)
    OnlineTrainer(plain, device="cpu").update([user(True) for _ in range(8)])
    assert not plain.heads_state


def test_online_popularity_counts_each_event_once():
    """A user's growing sequence is offered once per event (the stream trainer), or once per chunk
    with its new events counted (prequential): each event counts once in popularity."""
    rec = fresh(10)
    trainer = OnlineTrainer(rec, replay_capacity=50, steps_per_update=1, device="cpu")
    history = [("i1", "click"), ("i2", "click"), ("i3", "click"), ("i1", "purchase")]
    for n in range(1, len(history) + 1):
        trainer.update([history[:n]])                      # one new event each time
    counts = {item: rec.popularity[rec.vocab.row(item)] for item in ("i1", "i2", "i3", "i4")}
    assert counts == {"i1": 2.0, "i2": 1.0, "i3": 1.0, "i4": 0.0}
    trainer.update([history + [("i4", "click"), ("i4", "click")]], new_events=[2])
    assert rec.popularity[rec.vocab.row("i4")] == 2.0 and rec.popularity[rec.vocab.row("i1")] == 2.0


def test_replay_buffer_is_bounded_reservoir():
    buf = ReplayBuffer(5, seed=0)
    for k in range(100):
        buf.add((np.array([k]), np.array([1])))
    assert len(buf) == 5 and buf.seen == 100
    assert max(int(s[0][0]) for s in buf.items) > 5       # later sequences get in
    assert len(buf.sample(10)) == 5


# ---- commands ---------------------------------------------------------------------------------
def test_commands_pretrain_evaluate_and_errors(tmp_path, capsys):
    from model.commands import main
    rng = np.random.default_rng(0)
    lines = []
    for u in range(30):
        start = int(rng.integers(1, 15))
        lines += [f"{u} {(start + k) % 15 + 1}" for k in range(12)]
    data = tmp_path / "d.txt"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(data), "--format", "ml1m", "--out", str(out), "--epochs", "2",
                 "--dim", "16", "--layers", "1", "--max-len", "12", "--quiet",
                 "--objectives", "next,masked", "--weights", "1,0.5", "--lr-schedule", "cosine", "--windows", "all"]) == 0
    assert {"best.ckpt", "last.ckpt", "curve.png", "history.json"} <= set(os.listdir(out))
    with open(out / "history.json") as f:
        lrs = [h["lr"] for h in json.load(f)["history"]]
    assert 1e-3 >= lrs[0] > lrs[1]                                      # the cosine schedule decays
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "best.ckpt"), "--data", str(data), "--format", "ml1m"]) == 0
    text = capsys.readouterr().out
    assert '"popular"' in text and '"filtered"' in text and '"NDCG@20"' in text
    # resume continues from the checkpoint (same architecture, a new item grows the vocabulary)
    with open(data, "a") as f:
        f.write("0 99\n")
    assert main(["pretrain", "--data", str(data), "--format", "ml1m", "--out", str(tmp_path / "run2"), "--epochs", "1",
                 "--dim", "16", "--layers", "1", "--max-len", "12", "--quiet", "--resume", str(out / "last.ckpt")]) == 0
    ck = load_checkpoint(str(tmp_path / "run2" / "last.ckpt"))
    assert ItemVocab.from_state(ck["vocab"]).ids()[-1] == "99" and ck["step"] > load_checkpoint(str(out / "last.ckpt"))["step"]
    capsys.readouterr()
    # resume refuses another architecture
    assert main(["pretrain", "--data", str(data), "--format", "ml1m", "--out", str(out), "--epochs", "1",
                 "--dim", "32", "--layers", "1", "--max-len", "12", "--quiet", "--resume", str(out / "best.ckpt")]) == 2
    assert "different architecture" in capsys.readouterr().err
    for argv, msg in [
        (["pretrain", "--data", str(tmp_path / "missing.txt"), "--format", "ml1m", "--out", str(out)], "not found"),
        (["pretrain", "--data", str(data), "--format", "parquet", "--out", str(out)], "unknown format"),
        (["pretrain", "--data", str(data), "--format", "ml1m", "--out", str(out), "--objectives", "magic"],
         "unknown objectives"),
        (["evaluate", "--checkpoint", str(tmp_path / "x.ckpt"), "--data", str(data), "--format", "ml1m"], "not found"),
        (["pretrain", "--data", str(data), "--format", "ml1m", "--out", str(out), "--ema-decay", "1"], "ema_decay"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_pretrain_with_weight_average_selects_and_saves_the_average(tmp_path):
    """--ema-decay: validation scores the averaged weights (the trained ones beside them), best.ckpt
    holds the average, last.ckpt the trained weights plus the average, and a resume continues both."""
    from model.commands import main
    lines = [f"{u} {(u + k) % 15 + 1}" for u in range(30) for k in range(12)]
    data = tmp_path / "d.txt"
    data.write_text("\n".join(lines) + "\n")
    args = ["pretrain", "--data", str(data), "--format", "ml1m", "--dim", "16", "--layers", "1",
            "--max-len", "12", "--quiet", "--ema-decay", "0.9"]
    assert main(args + ["--out", str(tmp_path / "run"), "--epochs", "3"]) == 0
    with open(tmp_path / "run" / "history.json") as f:
        history = json.load(f)["history"]
    assert all({"val_ndcg10", "val_ndcg10_raw"} <= set(h) for h in history)
    best, last = (load_checkpoint(str(tmp_path / "run" / n)) for n in ("best.ckpt", "last.ckpt"))
    assert last["average"]["updates"] == last["step"] > 0
    if best["step"] == last["step"]:       # the last epoch was the best: best.ckpt is the average
        for name, w in best["model"].items():
            torch.testing.assert_close(w, last["average"]["module"]["enc." + name])
    assert any(not torch.equal(w, last["average"]["module"]["enc." + name])   # the average is not a copy
               for name, w in last["model"].items())
    assert main(args + ["--out", str(tmp_path / "run2"), "--epochs", "1",
                        "--resume", str(tmp_path / "run" / "last.ckpt")]) == 0
    again = load_checkpoint(str(tmp_path / "run2" / "last.ckpt"))
    assert again["average"]["updates"] == again["step"] > last["step"]
