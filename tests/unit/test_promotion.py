"""A new model version is announced only when it beats the version in force on the held-back tail
(streams/lifecycle/promotion.py and the trainer's judgement in streams/lifecycle/trainer.py)."""

from __future__ import annotations

import random

import pytest

from model.encoder import EncoderConfig
from model.incremental import OnlineTrainer
from model.recommender import Recommender
from streams.lifecycle.promotion import HeldBackTail, model_hits, scorable, score_tail
from streams.lifecycle.trainer import StreamTrainer
from streams.lifecycle.training import Training
from streams.metrics import Metrics
from streams.settings import load_settings

ITEMS = [f"i{n}" for n in range(40)]


def walks(n: int, rng: random.Random, length: int = 6, step: int = 1) -> list[list[tuple[str, str]]]:
    """Users walk the catalogue in steps of ``step``: a rule a model can learn."""
    out = []
    for _ in range(n):
        start = rng.randrange(len(ITEMS))
        out.append([(ITEMS[(start + step * k) % len(ITEMS)], "click") for k in range(length)])
    return out


def fresh() -> Recommender:
    return Recommender.fresh(EncoderConfig(dim=16, n_layers=1, max_len=10), item_ids=ITEMS, seed=0)


@pytest.fixture(scope="module")
def learned() -> tuple[Recommender, OnlineTrainer]:
    rec = fresh()
    trainer = OnlineTrainer(rec, lr=5e-3, replay_capacity=200, device="cpu")
    rng = random.Random(0)
    for _ in range(60):
        trainer.update(walks(16, rng))
    return rec, trainer


def test_the_tail_holds_the_newest_and_hands_back_the_oldest():
    tail = HeldBackTail(3)
    assert tail.push([1, 2]) == [] and tail.push([3, 4, 5]) == [1, 2] and len(tail) == 3
    assert tail.release() == [3, 4, 5] and len(tail) == 0


def test_only_events_on_items_new_to_the_user_are_scored():
    seqs = [[("a", "click"), ("b", "click")], [("a", "click"), ("b", "click"), ("a", "buy")], [("a", "click")]]
    prefixes, targets = scorable(seqs)
    assert prefixes == [[("a", "click")]] and targets == ["b"]


@pytest.mark.parametrize("which", ["learned", "fresh"])
def test_the_exact_top_k_is_a_full_stable_sort_with_seen_items_removed(learned, which):
    """``Recommender.recommend`` (what a version is judged by) takes its top-k from a partition:
    the same items, in the same order, as sorting every score (ties by row), seen items skipped."""
    import numpy as np

    rec = learned[0] if which == "learned" else fresh()
    histories = [h[:3] for h in walks(60, random.Random(1), length=4)] + [[("i3", "click")] * 2]
    ids, W = rec.item_matrix()
    U = rec.user_vectors(histories)
    for h, answer, u in zip(histories, rec.recommend(histories, k=5), U):
        s = W @ u
        seen = {i for i, _ in h}
        expected = [ids[j] for j in np.argsort(-s, kind="stable") if ids[j] not in seen][:5]
        assert answer["source"] == "model" and [i for i, _ in answer["items"]] == expected
    tied = rec.recommend([[("i0", "click")]], k=len(ITEMS) + 5)[0]["items"]  # more than there is
    assert len(tied) == len(ITEMS) - 1 and "i0" not in {i for i, _ in tied}


def test_hits_are_the_targets_in_the_exact_top_k(learned):
    rec, _ = learned
    prefixes, targets = scorable(walks(60, random.Random(1), length=4) + [[("unknown", "click"), ("i3", "click")]]
                                 + [[(ITEMS[n], "click"), ("new-item", "click")] for n in range(3)])
    hits = model_hits(rec, prefixes, targets, k=5)
    answers = rec.recommend(prefixes, k=5)
    assert list(hits) == [t in [i for i, _ in a["items"]] for a, t in zip(answers, targets)]
    assert 0 < hits.sum() < len(hits) and not hits[-3:].any()  # an item the model does not know: a miss
    assert answers[-4]["source"] == "popular"  # the unknown history: popularity, as in serving


def test_a_model_that_learned_the_stream_scores_above_a_fresh_one(learned):
    rec, _ = learned
    scores = score_tail(rec, fresh(), walks(200, random.Random(2)))
    assert scores.events == 200 and scores.candidate > 0.8 > 0.5 > scores.in_force
    assert scores.promote and not score_tail(fresh(), rec, walks(200, random.Random(2))).promote


def judge(tmp_path, candidate: Recommender, in_force: Recommender, tail: list, **settings):
    s = load_settings({"data_dir": tmp_path, "store": "memory", "promotion_tail": 100, "promotion_min_events": 20,
                       **settings}, environ={})
    metrics = Metrics()
    trainer = OnlineTrainer(candidate, replay_capacity=500, device="cpu")
    training = Training(s, candidate, trainer, metrics, in_force=in_force)
    training.tail.push(tail)
    replayed = len(trainer.replay)
    judged, version, announced = training.judge()
    return judged, version, announced, metrics, training, len(trainer.replay) - replayed


def test_a_better_candidate_is_announced_with_its_tail_scores(tmp_path, learned):
    rec, _ = learned
    judged, version, announced, metrics, training, trained_on = judge(tmp_path, rec.snapshot(), fresh(),
                                                                      walks(60, random.Random(3)))
    tail = announced["tail"]
    assert judged and tail["events"] == 60 and tail["candidate"] > tail["in_force"]
    assert metrics.promotion_hit_rate.labels(model="candidate")._value.get() == tail["candidate"]
    assert metrics.versions_held_back._value.get() == 0
    assert training.in_force is version is not None
    assert len(training.tail) == 0 and trained_on == 60  # the judged tail is trained on afterwards


def test_a_candidate_no_better_than_the_version_in_force_is_held_back(tmp_path, learned):
    rec, _ = learned
    in_force = rec.snapshot()
    judged, version, _, metrics, training, trained_on = judge(tmp_path, fresh(), in_force, walks(60, random.Random(4)))
    assert judged and version is None and metrics.versions_held_back._value.get() == 1
    assert training.in_force is in_force and trained_on == 60
    assert metrics.promotion_hit_rate.labels(model="in_force")._value.get() > 0.8


def test_too_small_a_tail_waits_for_more_events(tmp_path, learned):
    rec, _ = learned
    judged, version, _, _, training, trained_on = judge(tmp_path, rec.snapshot(), fresh(), walks(10, random.Random(5)))
    assert not judged and version is None and len(training.tail) == 10 and trained_on == 0


def test_the_training_loop_holds_back_versions_until_one_is_better(tmp_path):
    """The trainer's loop, fed walks in steps of one: the first version is announced as soon as it
    has trained, and learns the walk (HR@10 1.0), so later candidates are no better and are held
    back. Then the users change their walk to steps of seven: the version in force is wrong about
    it, the candidate learns it from what leaves the tail, and is announced with its tail scores."""
    import threading
    import time

    s = load_settings({"data_dir": tmp_path, "store": "memory", "promotion_tail": 200, "promotion_min_events": 50,
                       "publish_interval_s": 0.5, "seq_len": 10}, environ={})
    published, metrics = [], Metrics()
    stream_trainer = StreamTrainer(s, metrics, publish=published.append)
    thread = threading.Thread(target=stream_trainer._train, args=(None,), daemon=True)
    thread.start()
    rng = random.Random(6)

    def feed(step: int, until, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            for seq in walks(32, rng, step=step):
                stream_trainer.offer(seq)
            time.sleep(0.05)

    try:
        feed(1, lambda: metrics.versions_held_back._value.get() >= 2)
        announced = len(published)
        feed(7, lambda: len(published) > announced)
    finally:
        stream_trainer.stop()
        thread.join(10)
    assert metrics.versions_held_back._value.get() >= 2 and len(published) > announced >= 1
    assert "tail" not in published[0].metrics  # the first version: nothing in force to beat
    for update in published[1:]:
        tail = update.metrics["tail"]
        assert tail["candidate"] > tail["in_force"] and tail["events"] >= 50


def test_after_a_rollback_candidates_are_judged_against_the_rolled_back_version(tmp_path, learned):
    from streams.lifecycle.model_store import ModelStore

    rec, _ = learned
    s = load_settings({"data_dir": tmp_path, "store": "memory"}, environ={})
    stream_trainer = StreamTrainer(s, Metrics(), publish=lambda update: None)
    own = fresh()  # the trainer's own last announcement
    stream_trainer.training = training = Training(s, own, OnlineTrainer(own, device="cpu"), Metrics(), in_force=own)
    good = rec.snapshot()
    good.version = 3
    store = ModelStore(s.model_dir)
    store.save(good)
    stream_trainer.follow(store.update_for(3))  # announced again, but not as a rollback: ignored
    stream_trainer._follow_rollback()
    assert training.in_force is own
    stream_trainer.follow(store.update_for(3, rollback=True))
    stream_trainer._follow_rollback()
    assert training.in_force.version == 3
    assert score_tail(fresh(), training.in_force, walks(100, random.Random(7))).in_force > 0.8
