"""Serving from two child processes (streams/serving/processes.py, behind streams.serving.service.Serving):
the same answers and records as in-process serving, versions swapped by the standby child, bad
checkpoints refused, new items, a child that dies. Real child processes (spawned: a few seconds
each to import torch)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from model.encoder import EncoderConfig
from model.recommender import Recommender
from streams.serving.live_model import LiveModel
from streams.metrics import Metrics
from streams.lifecycle.model_store import ModelStore
from streams.serving.recommend import Candidates, Request
from streams.serving.service import Serving
from streams.settings import load_settings

ITEMS = [f"i{n}" for n in range(60)]
HISTORIES = [[("i1", "click"), ("i2", "purchase")], [("i7", "click")], [("never-seen", "click")]]


def make_rec(version: int, seed: int) -> Recommender:
    rec = Recommender.fresh(EncoderConfig(dim=16, n_layers=1, max_len=10), item_ids=ITEMS, seed=seed)
    rec.scenarios.add("search")   # a scenario row of its own: asking for it changes the answer
    rec.version = version
    return rec


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pair")
    settings = load_settings({"data_dir": tmp, "store": "memory", "serving_processes": True}, environ={})
    model = Serving(settings, Metrics(), popular=lambda n: [])
    yield model
    model.close()
    assert not any(child.alive() for child in model.backend._children)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("models"), keep=10)


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_answers_as_in_process_serving_and_swaps_through_the_standby(pair, store, tmp_path):
    assert pair.backend.recommend(HISTORIES, 5) == [None] * 3  # nothing served yet: popularity
    [(user, source, value)], [ids], timings = pair.backend.serve([Request("u", HISTORIES[0])],
                                                                 Candidates([("i9", 1.0)]), 5)
    assert ids is None and set(timings) == {"records"}  # no model answer
    assert (user, source, json.loads(value)["items"]) == ("u", "popular", [{"item_id": "i9", "score": 1.0}])
    first = store.save(make_rec(1, seed=0))
    assert pair.load(first)
    assert pair.model_version == 1 and pair.index_version >= 1
    in_process = LiveModel(load_settings({"data_dir": tmp_path, "store": "memory"}, environ={}))
    assert in_process.load(first)
    answers = pair.backend.recommend(HISTORIES, 5)
    assert answers[2] is None and answers[0] and not {"i1", "i2"} & {item for item, _ in answers[0]}
    for got, expected in zip(answers, in_process.recommend(HISTORIES, 5)):
        assert (got is None and expected is None) or [i for i, _ in got] == [i for i, _ in expected]
    # the records as the worker sends them, built in the child: the same as built here
    requests = [Request(f"u{n}", h, 100.0 + n) for n, h in enumerate(HISTORIES)]
    requests[1].scenario = "search"   # asked for, and said so in its record
    popular = [("i50", 3.0), ("i1", 2.0), ("i51", 1.0)]
    sent, ids, timings = pair.backend.serve(requests, Candidates(popular), 5)
    here, ids_here, timings_here = in_process.serve(requests, Candidates(popular), 5)
    assert ids == ids_here and ids[2] is None and len(ids[0]) == 5
    assert [json.loads(value)["scenario"] for _, _, value in sent] == ["default", "search", "default"]
    unasked = in_process.serve([Request("u1", HISTORIES[1], 101.0)], Candidates(popular), 5)[1][0]
    assert ids[1] != unasked    # so the child answered for the scenario asked, as in process
    # each stage timed where it ran: encode, search and records in the child, ipc in this process
    assert set(timings) == {"encode", "search", "records", "ipc"} and set(timings_here) == {"encode", "search", "records"}
    assert all(seconds >= 0 for seconds in [*timings.values(), *timings_here.values()])
    # the gate's choice and the co-visitation lists reach the child: a segment served by covisit
    gated = Candidates(popular, covisit=[[("i9", 0.5)], [], []], choice={"cold": "popular", "short": "covisit",
                                                                        "long": "covisit"})
    [covisit, fallback, _], _, _ = pair.backend.serve(requests, gated, 3)
    assert covisit[1] == "covisit" and [i["item_id"] for i in json.loads(covisit[2])["items"]] == ["i9", "i50", "i51"]
    assert fallback[1] == "popular"  # the chosen source had no answer for this user
    assert [(u, s) for u, s, _ in sent] == [("u0", "model"), ("u1", "model"), ("u2", "popular")]
    assert [(u, s) for u, s, _ in here] == [(u, s) for u, s, _ in sent]
    for (_, _, value), (_, _, record) in zip(sent, here):
        got, expected = json.loads(value), json.loads(record)
        assert got.pop("emitted_ts") <= time.time() and expected.pop("emitted_ts")
        assert [i["item_id"] for i in got.pop("items")] == [i["item_id"] for i in expected.pop("items")]
        assert got == expected  # user, source, versions, event_ts
    in_process.close()
    # a new version: the standby child loads it and becomes the active one; then both hold it
    serving_before = pair.backend._active
    assert pair.load(store.save(make_rec(2, seed=1)))
    assert pair.model_version == 2 and pair.backend._active is not serving_before
    assert all(child.model_version == 2 for child in pair.backend._children)
    assert pair.staleness() is not None


def test_a_corrupted_checkpoint_is_refused_and_the_version_in_force_keeps_serving(pair, store, caplog):
    good = store.save(make_rec(3, seed=2))
    assert pair.load(good)
    bad = store.save(make_rec(4, seed=3))
    with open(bad.path, "r+b") as f:
        f.seek(100)
        f.write(b"corrupted")
    active = pair.backend._active
    assert not pair.load(bad)
    assert "refusing model version 4: ModelStoreError: checkpoint" in caplog.text and "sha256" in caplog.text
    assert pair.model_version == 3 and pair.backend._active is active
    assert pair.backend.recommend(HISTORIES[:1], 5)[0]


def test_an_item_first_seen_in_the_stream_becomes_recommendable(pair, store):
    assert pair.load(store.save(make_rec(5, seed=4)))
    assert pair.backend.recommend([[("fresh-item", "click")]], 5) == [None]  # unknown to the model
    pair.note_item("fresh-item", ["i1", "i2"])
    pair.note_item("i3", [])  # known to the model: nothing to add
    assert pair.add_new_items() == 1
    assert pair.backend.recommend([[("fresh-item", "click")]], 5)[0]
    # both children have it, and they carry it over to the next version
    assert pair.load(store.save(make_rec(6, seed=5)))
    assert pair.backend.recommend([[("fresh-item", "click")]], 5)[0]


def test_a_dead_child_is_replaced_and_the_other_serves_meanwhile(pair, store):
    assert pair.load(store.save(make_rec(7, seed=6)))
    dead = pair.backend._active
    os.kill(dead.proc.pid, signal.SIGKILL)
    dead.proc.join(10)
    assert pair.backend.recommend(HISTORIES[:1], 5) == [None]  # this batch: popularity
    # the swap thread makes the other child (which holds version 7) the active one at once
    wait_for(lambda: pair.backend._active is not None and pair.backend._active is not dead)
    assert pair.model_version == 7 and pair.backend.recommend(HISTORIES[:1], 5)[0]
    # the next version starts a new child in place of the dead one and loads it there too
    assert pair.load(store.save(make_rec(8, seed=7)))
    assert pair.model_version == 8 and all(child.alive() for child in pair.backend._children)
    assert dead not in pair.backend._children


def test_a_child_that_does_not_answer_is_killed_and_replaced(pair, store):
    from streams.serving.processes import ChildGone

    assert pair.load(store.save(make_rec(9, seed=8)))
    [stuck] = [child for child in pair.backend._children if child is not pair.backend._active]
    os.kill(stuck.proc.pid, signal.SIGSTOP)
    with pytest.raises(ChildGone, match="did not answer versions within 1 s: killed"):
        stuck.call("versions", timeout=1.0)
    stuck.proc.join(10)
    assert not stuck.alive()
    assert pair.load(store.save(make_rec(10, seed=9)))  # loaded by a new child in its place
    assert pair.model_version == 10 and stuck not in pair.backend._children
