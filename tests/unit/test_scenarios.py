"""Multi-scenario: an event's scenario is kept in user state, fed to the encoder as what each
position predicts for, asked for by serving, and scored per scenario in evaluation."""
import json

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.data import load_dataset
from model.encoder import EncoderConfig, SeqEncoder
from model.evaluate import evaluate_model
from model.incremental import OnlineTrainer, ReplayBuffer
from model.objectives import ObjectiveConfig
from model.pretrain import TrainConfig, pretrain
from model.recommender import Recommender
from model.vocab import ScenarioVocab
from streams.ingest.events import parse_event
from streams.ingest.user_state import apply_event, history
from streams.serving.recommend import Candidates, Request, build_records

torch.set_num_threads(1)

N_ITEMS = 20
STEP = {"feed": 1, "search": 3}  # the planted rule: the next item is the last one + STEP[its scenario]


def planted_events(users: int, length: int, seed: int = 0) -> list[dict]:
    """Each user's next item is their last + 1 when the next event is in the feed, + 3 when it is
    a search: a model that cannot tell the scenario apart gets at most one of the two right."""
    rng = np.random.default_rng(seed)
    events = []
    for u in range(users):
        item = int(rng.integers(N_ITEMS))
        for t in range(length):
            scenario = str(rng.choice(list(STEP)))
            if t:
                item = (item + STEP[scenario]) % N_ITEMS
            events.append({"user_id": f"u{u}", "item_id": str(item), "type": "click", "ts": t,
                           "scenario": scenario})
    return events


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted data and a model trained on it with and without a scenario table."""
    root = tmp_path_factory.mktemp("scenarios")
    path = root / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in planted_events(300, 12)))
    out = {}
    for name, n_scenarios in (("with", 8), ("without", 0)):
        ds = load_dataset(str(path), "jsonl")
        cfg = EncoderConfig(dim=32, n_layers=1, n_heads=1, max_len=12, dropout=0.0, n_scenarios=n_scenarios)
        pretrain(ds, cfg, ObjectiveConfig(), TrainConfig(epochs=40, progress=False, patience=100, lr=3e-3),
                 str(root / name))
        out[name] = root / name / "best.ckpt"
    return path, out


def top1(rec: Recommender, histories, scenarios) -> list[str]:
    return [a["items"][0][0] for a in rec.recommend(histories, k=1, exclude_seen=False, scenarios=scenarios)]


def test_each_scenarios_next_item_rule_is_learned_and_not_without_the_scenario(planted):
    _, ckpts = planted
    rng = np.random.default_rng(7)
    starts = rng.integers(N_ITEMS, size=40)
    histories = [[(str((s + k) % N_ITEMS), "click", "feed") for k in range(5)] for s in starts]
    last = [int(h[-1][0]) for h in histories]
    accuracy = {}
    for name, path in ckpts.items():
        rec = Recommender.from_checkpoint(str(path))
        for scenario, step in STEP.items():
            got = top1(rec, histories, [scenario] * len(histories))
            want = [str((x + step) % N_ITEMS) for x in last]
            accuracy[name, scenario] = np.mean([g == w for g, w in zip(got, want)])
    assert accuracy["with", "feed"] >= 0.9 and accuracy["with", "search"] >= 0.9, accuracy
    # without the table both questions get the same answer: at most one rule can be right
    assert accuracy["without", "feed"] + accuracy["without", "search"] <= 1.0, accuracy


def test_the_scenario_asked_defaults_to_the_last_events(planted):
    _, ckpts = planted
    rec = Recommender.from_checkpoint(str(ckpts["with"]))
    h = [("4", "click", "feed"), ("7", "click", "search")]
    assert top1(rec, [h], None) == top1(rec, [h], ["search"]) == ["10"]
    assert top1(rec, [h], [None]) == ["10"] and top1(rec, [h], ["feed"]) == ["8"]
    # a name the model never learned is the default scenario, not an error
    assert rec.user_vectors([h], scenarios=["unheard-of"]).shape == (1, 32)


def test_checkpoint_keeps_the_scenario_names_and_evaluation_scores_each(planted):
    path, ckpts = planted
    ck = load_checkpoint(str(ckpts["with"]))
    assert ck["scenarios"] == ["feed", "search"] and ck["config"]["n_scenarios"] == 8
    rec = Recommender.from_checkpoint(str(ckpts["with"]))
    assert rec.scenarios.names() == ["feed", "search"]
    assert rec.snapshot().scenarios.names() == ["feed", "search"]
    enc = SeqEncoder.from_state(EncoderConfig.from_dict(ck["config"]), ck["model"])
    ds = load_dataset(str(path), "jsonl", scenario_vocab=rec.scenarios)
    res = evaluate_model(enc, ds, "test", ks=(1,))
    per = res["scenarios"]
    assert set(per) == {"feed", "search"} and per["feed"]["users"] + per["search"]["users"] == 300
    for scenario in STEP:
        assert per[scenario]["model"]["HR@1"] > 0.9 > 0.3 > per[scenario]["popular"]["HR@1"]


def test_a_config_saved_before_scenarios_loads_without_a_table():
    saved = EncoderConfig(n_items=5, dim=8, n_layers=1, max_len=4, n_scenarios=0)
    state = SeqEncoder(saved).state_dict()
    old = {k: v for k, v in saved.to_dict().items() if k != "n_scenarios"}
    enc = SeqEncoder.from_state(EncoderConfig.from_dict(old), state)
    assert enc.scen_emb is None and "scen_emb.weight" not in state


def test_scenario_rows():
    v = ScenarioVocab(3, ["feed"])
    assert (v.add("search"), v.add("ads"), v.add("default"), v.row("feed"), v.row(None)) == (2, 0, 0, 1, 0)
    assert v.names() == ["feed", "search"] and len(v) == 3
    assert len(ScenarioVocab(0, ["feed"])) == 1   # no table: every event in the default scenario


def test_state_and_records_keep_the_scenario():
    raw = json.dumps({"user_id": "u", "item_id": "i1", "type": "click", "ts": 1.0, "scenario": "search"}).encode()
    plain = json.dumps({"user_id": "u", "item_id": "i2", "type": "click", "ts": 2.0}).encode()
    state = apply_event(None, parse_event(raw, max_bytes=1000, max_future_s=60, now=10.0), seq_len=5, dedupe_window=5)
    state = apply_event(state, parse_event(plain, max_bytes=1000, max_future_s=60, now=10.0), seq_len=5, dedupe_window=5)
    assert state["items"] == [["i1", "click", 1.0, "search"], ["i2", "click", 2.0]]   # the default costs nothing
    h = history(state)
    assert h == [("i1", "click", "search"), ("i2", "click")]
    requests = [Request("u", h), Request("u", h[:1]), Request("u", h, scenario="feed")]
    records = build_records(requests, [None] * 3, Candidates([("i3", 1.0)]), 5, 0, 0)
    assert [r.to_json()["scenario"] for r in records] == ["default", "search", "feed"]


def test_the_online_trainer_learns_new_scenario_names_and_keeps_them_in_its_replay():
    rec = Recommender.fresh(EncoderConfig(dim=8, n_layers=1, max_len=6, n_scenarios=4), item_ids=["a", "b", "c"])
    trainer = OnlineTrainer(rec, steps_per_update=1, device="cpu")
    trainer.update([[("a", "click", "feed"), ("b", "click", "search"), ("c", "click")]])
    assert rec.scenarios.names() == ["feed", "search"]
    assert trainer.replay.items[0][2].tolist() == [1, 2, 0]
    copy = ReplayBuffer(10)
    copy.load(trainer.replay_state())
    assert copy.items[0][2].tolist() == [1, 2, 0]
    wide = ReplayBuffer(10)
    wide.add((np.array([1, 2]), np.array([0, 1]), np.array([200, 5])))   # a table of more than 128 rows
    copy.load(wide.state())
    assert copy.items[0][2].tolist() == [200, 5]
    old = {k: v for k, v in trainer.replay_state().items() if k != "scenarios"}   # written before scenarios
    copy.load(old)
    assert copy.items[0][2].tolist() == [0, 0, 0]


def test_a_served_record_names_the_scenario_its_model_answered_for(planted, tmp_path):
    """The last event is on an item the model does not know yet (a new item of the stream): the
    record is for that event's scenario, and so is the model's answer (not the last known item's)."""
    from streams.lifecycle.model_store import ModelStore
    from streams.serving.live_model import LiveModel
    from streams.settings import load_settings

    _, ckpts = planted
    rec = Recommender.from_checkpoint(str(ckpts["with"]))
    rec.version = 1
    live = LiveModel(load_settings({"data_dir": tmp_path, "store": "memory"}, environ={}))
    try:
        assert live.load(ModelStore(tmp_path / "models", keep=2).save(rec))
        h = [("4", "click", "feed"), ("7", "click", "feed"), ("not-yet-known", "click", "search")]
        sent, _, _ = live.serve([Request("u", h)], Candidates([("0", 1.0)]), 1)
        record = json.loads(sent[0][2])
        assert record["scenario"] == "search" and record["source"] == "model"
        assert record["items"][0]["item_id"] == "10"    # 7 + 3: the search rule; the feed's is 8
    finally:
        live.close()


def test_pretrain_resumes_a_checkpoint_without_a_scenario_table_unless_told_otherwise(tmp_path, capsys):
    """A checkpoint saved before scenarios (or with --scenarios 0) resumes without the flag; asking
    for a table it does not have is refused as another architecture."""
    from model.commands import main
    data = tmp_path / "d.txt"
    data.write_text("".join(f"{u} {(u + k) % 15 + 1}\n" for u in range(30) for k in range(8)))
    args = ["pretrain", "--data", str(data), "--format", "ml1m", "--epochs", "1", "--dim", "16",
            "--layers", "1", "--max-len", "8", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a"), "--scenarios", "0"]) == 0
    resume = ["--resume", str(tmp_path / "a" / "last.ckpt")]
    assert main(args + ["--out", str(tmp_path / "b")] + resume) == 0
    assert load_checkpoint(str(tmp_path / "b" / "last.ckpt"))["config"]["n_scenarios"] == 0
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "c"), "--scenarios", "8"] + resume) == 2
    assert "different architecture" in capsys.readouterr().err


def test_evaluation_reads_a_scenario_the_model_never_learned_as_the_default_one(planted, tmp_path):
    """As serving does: an unseen name gets no row of the table (its row would be untrained)."""
    path, ckpts = planted
    rec = Recommender.from_checkpoint(str(ckpts["with"]))
    other = tmp_path / "other.jsonl"
    other.write_text(path.read_text().replace('"search"', '"ads"'))
    ds = load_dataset(str(other), "jsonl", vocab=rec.vocab, scenario_vocab=rec.scenarios)
    assert rec.scenarios.names() == ["feed", "search"]              # not grown
    assert set(np.concatenate(ds.scenarios).tolist()) == {0, 1}     # "ads" is the default row
    grown = load_dataset(str(other), "jsonl", vocab=rec.vocab, grow=True, scenario_vocab=rec.scenarios)
    assert rec.scenarios.names() == ["feed", "search", "ads"] and 3 in np.concatenate(grown.scenarios)
