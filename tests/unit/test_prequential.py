"""Prequential evaluation: stream interleaving, online beats frozen after a rule change, no leakage."""
import gzip
import json
import os
import random

import pytest
import torch

from model.encoder import EncoderConfig
from model.incremental import OnlineTrainer
from model.interactions import Interaction
from model.prequential import PrequentialConfig, run_prequential
from model.prequential_run import RunSpec, run
from model.replay import interleave_by_position, load_events, read_ml1m_events, split_events
from model.recommender import Recommender

torch.set_num_threads(1)

CFG = EncoderConfig(dim=32, n_layers=1, n_heads=1, max_len=8, dropout=0.0)
N_ITEMS = 60


def test_interleave_by_position_hand_built():
    seqs = {"a": [1, 2, 3], "b": [4], "c": [5, 6]}
    assert interleave_by_position(seqs) == [("a", 1), ("b", 4), ("c", 5), ("a", 2), ("c", 6), ("a", 3)]
    assert interleave_by_position({}) == []
    assert interleave_by_position({"x": []}) == []


def test_ml1m_and_taobao_streams(tmp_path):
    ml = tmp_path / "ml.txt.gz"
    with gzip.open(ml, "wt") as f:
        f.write("1 10\n1 11\n1 12\n2 20\n2 21\n10 30\n")
    ev = read_ml1m_events(str(ml))
    assert [(e.user_id, e.item_id) for e in ev] == [("1", "10"), ("2", "20"), ("10", "30"), ("1", "11"),
                                                ("2", "21"), ("1", "12")]
    tb = tmp_path / "tb.csv"
    tb.write_text("1,100,7,pv,30\n2,101,7,buy,10\n1,102,8,cart,20\n3,103,8,fav,20\n")
    ev = load_events(str(tb), "taobao")
    assert [(e.user_id, e.item_id, e.type, e.ts) for e in ev] == [
        ("2", "101", "purchase", 10.0), ("1", "102", "click", 20.0), ("3", "103", "click", 20.0),
        ("1", "100", "click", 30.0)]   # sorted by ts, ties keep file order
    pre, rest = split_events(ev, 0.5)
    assert len(pre) == 2 and len(rest) == 2
    assert split_events(ev, 0.25, max_events=1)[1] == [ev[1]]


def rule_sequences(n_users, length, step, rng):
    seqs = {}
    for u in range(n_users):
        x = rng.randrange(N_ITEMS)
        seqs[f"u{u}"] = [f"i{(x + step * t) % N_ITEMS}" for t in range(length)]
    return seqs


def train_rule_a(steps=150, seed=0):
    """The 'pretrained' model: learned rule A (next item = previous + 1)."""
    rng = random.Random(seed)
    rec = Recommender.fresh(CFG, [f"i{k}" for k in range(N_ITEMS)], seed=seed)
    tr = OnlineTrainer(rec, lr=1e-2, steps_per_update=1, replay_capacity=10, batch_size=64, device="cpu")
    for _ in range(steps):
        seqs = rule_sequences(64, 9, 1, rng)
        tr.update([[(i, "click") for i in s] for s in seqs.values()])
    rec.version = 0
    return rec


def stream_from(seqs):
    return [Interaction(u, i, "click", float(n)) for n, (u, i) in enumerate(interleave_by_position(seqs))]


def test_online_beats_frozen_after_rule_change():
    rec = train_rule_a()
    rng = random.Random(1)
    # sanity: the frozen model did learn rule A
    hist = [("i5", "click"), ("i6", "click"), ("i7", "click")]
    assert rec.recommend([hist], k=1)[0]["items"][0][0] == "i8"
    prefix = stream_from({f"p{u}": s for u, s in enumerate(rule_sequences(50, 6, 1, rng).values())})
    stream = stream_from(rule_sequences(150, 9, 3, rng))        # rule B: next = previous + 3
    cfg = PrequentialConfig(chunk=64, lr=1e-2, steps_per_update=4, batch_size=128, progress=False,
                            windows=4)
    res = run_prequential(stream, rec, prefix, cfg)
    hr = res["hr"]
    assert res["cold_events"] == 150                              # each user's first event
    assert hr["online"] > hr["frozen"] + 0.2, hr
    assert res["windows"][-1]["online"] > 0.6, res["windows"]
    # the frozen model was never updated
    assert rec.recommend([hist], k=1)[0]["items"][0][0] == "i8"


def test_no_leakage_items_seen_once():
    """Every item occurs exactly once: nothing can be predicted before it happens, so any hit
    would mean an event was used to predict itself."""
    rec = Recommender.fresh(CFG, [f"old{k}" for k in range(20)], seed=0)
    prefix = [Interaction(f"p{k % 5}", f"old{k}", "click", float(k)) for k in range(20)]
    stream = [Interaction(f"u{k % 7}", f"new{k}", "click", 100.0 + k) for k in range(300)]
    for primary in ("exclude_seen", "allow_repeats"):
        res = run_prequential(stream, rec, prefix, PrequentialConfig(chunk=16, lr=5e-2, steps_per_update=3,
                                                                     progress=False, primary=primary))
        for proto in ("hr_exclude_seen", "hr_allow_repeats"):
            assert res[proto] == {"online": 0.0, "frozen": 0.0, "popularity": 0.0}, (proto, res[proto])
        assert res["cold_events"] == 7
        assert res["target_unknown_to_model"]["frozen"] == 300


def test_repeats_counted_only_when_allowed():
    """The same item repeated by every user: a hit under allow_repeats, never under exclude_seen."""
    rec = Recommender.fresh(CFG, ["x"], seed=0)
    stream = [Interaction(f"u{k % 4}", "x", "click", float(k)) for k in range(40)]
    res = run_prequential(stream, rec, [], PrequentialConfig(chunk=8, progress=False))
    assert res["hr_exclude_seen"]["popularity"] == 0.0
    # the first chunk (8 events) is predicted with the counts before it (none): 32 hits of 40
    assert res["hr_allow_repeats"]["popularity"] == pytest.approx(32 / 40)
    assert res["hr_allow_repeats_warm"]["online"] == 1.0


def test_context_seeds_counts_and_histories_but_is_not_replayed():
    """Events between the pretraining prefix and the replay (a held-out stretch) count for
    popularity and histories, are not scored, and no model learns from them."""
    items = [f"i{j}" for j in range(11)] + ["y"]
    rec = Recommender.fresh(CFG, items, seed=0)
    prefix = [Interaction(f"w{j}", f"i{j}", "click", float(j)) for j in range(11)]  # eleven items counted once
    context = [Interaction(f"c{k}", "y", "click", 20.0 + k) for k in range(5)]       # y, counted five times
    stream = [Interaction(f"v{k}", "y", "click", 40.0 + k) for k in range(8)]        # cold users buy y
    cfg = PrequentialConfig(chunk=8, progress=False)
    with_context = run_prequential(stream, rec, prefix, cfg, context)
    without = run_prequential(stream, rec, prefix, cfg)
    assert with_context["events"] == without["events"] == 8
    assert with_context["hr_allow_repeats"]["popularity"] == 1.0   # y is the most popular item
    assert without["hr_allow_repeats"]["popularity"] == 0.0        # y was never counted


def test_run_writes_json_and_png(tmp_path):
    rng = random.Random(2)
    data = tmp_path / "ml.txt"
    seqs = rule_sequences(40, 8, 1, rng)
    data.write_text("".join(f"{u[1:]} {i[1:]}\n" for u, s in seqs.items() for i in s))
    spec = RunSpec(str(data), "ml1m", str(tmp_path / "out"), pretrain_fraction=0.5, pretrain_minutes=0.1,
                   pretrain_epochs=2, encoder=dict(dim=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0),
                   preq=PrequentialConfig(chunk=32, progress=False), name="t")
    res = run(spec)
    assert res["events"] == 160 and res["prefix_events"] == 160
    back = json.loads((tmp_path / "out" / "t.json").read_text())
    assert set(back["hr"]) == {"online", "frozen", "popularity"}
    assert os.path.getsize(tmp_path / "out" / "t.png") > 1000


def test_cli_evaluate_prequential(tmp_path, capsys):
    from model.commands import main
    data = tmp_path / "tb.csv"
    rng = random.Random(3)
    rows = [f"{rng.randrange(30)},{rng.randrange(40)},{rng.randrange(5)},pv,{1000 + t}" for t in range(300)]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["evaluate", "--prequential", "--data", str(data), "--format", "taobao", "--out", str(out),
                 "--pretrain-fraction", "0.5", "--pretrain-minutes", "0.05", "--max-len", "8", "--chunk", "64",
                 "--quiet"]) == 0
    assert "| taobao |" in capsys.readouterr().out
    res = json.loads((out / "prequential_taobao.json").read_text())
    assert res["primary"] == "allow_repeats" and res["events"] == 150
    assert (out / "prequential_taobao.png").is_file()
    # errors: a missing checkpoint without --prequential, a jsonl stream with it
    assert main(["evaluate", "--data", str(data), "--format", "taobao"]) == 2
    assert main(["evaluate", "--prequential", "--data", str(data), "--format", "jsonl"]) == 2
    assert "not 'jsonl'" in capsys.readouterr().err
