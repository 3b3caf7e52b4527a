"""A trainer that continues from the version in force gets back that version's optimizer state and
replay buffer (streams/lifecycle/trainer.py, model/incremental.py), without a broker."""

from __future__ import annotations

import numpy as np
import torch

from model.encoder import EncoderConfig
from model.incremental import OnlineTrainer
from model.recommender import Recommender
from streams.lifecycle.model_store import ModelStore
from streams.lifecycle.trainer import initial_trainer
from streams.settings import load_settings

ITEMS = [f"i{n}" for n in range(30)]


def trained(steps: int = 4) -> tuple[Recommender, OnlineTrainer]:
    rec = Recommender.fresh(EncoderConfig(dim=16, n_layers=1, max_len=10), item_ids=ITEMS, seed=0)
    trainer = OnlineTrainer(rec, replay_capacity=100, steps_per_update=1, device="cpu")
    for s in range(steps):
        trainer.update([[(f"i{(s + k) % 30}", "click") for k in range(6)] for _ in range(3)])
    return rec, trainer


def test_continuing_a_version_restores_its_optimizer_and_replay_buffer(tmp_path):
    settings = load_settings({"data_dir": tmp_path, "store": "memory", "replay_capacity": 100}, environ={})
    rec, trainer = trained()
    snapshot = rec.snapshot()
    update = ModelStore(settings.model_dir).save(snapshot, optimizer_state=trainer.optimizer_state(),
                                                 replay_state=trainer.replay_state())
    resumed_rec, resumed = initial_trainer(settings, update)
    assert resumed_rec.version == update.version
    assert len(resumed.replay) == len(trainer.replay) == 12 and resumed.replay.seen == trainer.replay.seen
    for kept, restored in zip(trainer.replay.items, resumed.replay.items):   # rows, types, scenarios
        assert all(np.array_equal(a, b) for a, b in zip(kept, restored, strict=True))
    before, after = trainer.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert before and set(before) == set(after)
    for key in before:
        assert float(after[key]["step"]) == float(before[key]["step"]) == 4.0
        assert torch.allclose(after[key]["exp_avg"], before[key]["exp_avg"].cpu())
    # and it trains on from there
    assert resumed.update([[("i1", "click"), ("i2", "click"), ("i3", "click")]]) > 0


def test_a_version_without_trainer_state_starts_with_fresh_moments(tmp_path):
    settings = load_settings({"data_dir": tmp_path, "store": "memory"}, environ={})
    rec, _ = trained(steps=1)
    update = ModelStore(settings.model_dir).save(rec.snapshot())  # e.g. a pretrained model announced
    _, resumed = initial_trainer(settings, update)
    assert resumed.opt.state_dict()["state"] == {} and len(resumed.replay) == 0


def test_the_trainer_reader_trains_on_an_event_read_twice_once(tmp_path):
    """A replay after a crash, or ingest's re-keyed copy of a message, reaches the trainer's reader
    again with the same event_id: ingest applies it once, so the trainer learns from it once."""
    import json

    from streams.lifecycle.trainer import StreamTrainer
    from streams.metrics import Metrics

    settings = load_settings({"data_dir": tmp_path, "store": "memory"}, environ={})
    metrics = Metrics()
    reader = StreamTrainer(settings, metrics, publish=lambda update: None)

    def event(item, event_id):
        return json.dumps({"user_id": "u1", "item_id": item, "type": "click", "ts": 1000.0,
                           "event_id": event_id}).encode()

    for raw in (event("a", "e1"), event("b", "e2"), event("b", "e2"), event("c", "e3"), event("a", "e1")):
        reader.observe(raw, None)
    offered = [reader.queue.get_nowait() for _ in range(reader.queue.qsize())]
    assert offered == [[("a", "click"), ("b", "click")], [("a", "click"), ("b", "click"), ("c", "click")]]
    assert metrics.train_duplicates._value.get() == 2


def test_every_published_version_carries_the_gate_scores(tmp_path):
    from streams.lifecycle.trainer import StreamTrainer
    from streams.metrics import Metrics

    settings = load_settings({"data_dir": tmp_path, "store": "memory"}, environ={})
    published = []
    scores = {"long": {"serving": "covisit", "hr": {"model": 0.01, "covisit": 0.03, "popular": 0.02}}}
    stream_trainer = StreamTrainer(settings, Metrics(), publish=published.append, quality=lambda: scores)
    from streams.lifecycle.training import Training

    rec, trainer = trained(steps=1)
    stream_trainer.training = Training(settings, rec, trainer, Metrics())
    stream_trainer._publish(rec.snapshot(), {"loss": 1.5})
    [update] = published
    assert update.metrics == {"loss": 1.5, "gate": scores}
    assert update.path.endswith(".pt") and update.version == 1
