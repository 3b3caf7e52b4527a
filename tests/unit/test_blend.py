"""The blend source: the model's list fused with co-visitation's (streams.serving.recommend.fuse),
made into records where the gate chooses it and scored by the gate beside the others."""
from __future__ import annotations

import json

from streams.serving.gate import SOURCES, Gate
from streams.serving.recommend import Candidates, Request, build_records, fuse, made_by


def test_fuse_puts_items_on_both_lists_first_then_alternates():
    model, covisit = ["a", "b", "c", "d"], ["x", "c", "y", "a"]
    fused = [item for item, _ in fuse(model, covisit, 6)]
    assert fused[:2] == ["a", "c"]                   # on both lists: a (ranks 1 and 4), c (3 and 2)
    assert fused[2:] == ["x", "b", "y", "d"]         # then by rank (x 1, b 2, y 3, d 4)
    assert [item for item, _ in fuse(model, [], 3)] == ["a", "b", "c"]
    assert [item for item, _ in fuse(["a", "b"], ["x", "y"], 4)] == ["a", "x", "b", "y"]   # a tie: the first list's first
    scores = [score for _, score in fuse(model, covisit, 6)]
    assert scores == sorted(scores, reverse=True)


def test_the_record_is_made_by_the_chosen_source_where_it_has_an_answer():
    assert made_by("blend", True, True) == "blend"
    assert [made_by("blend", m, c) for m, c in ((True, False), (False, True), (False, False))] == \
        ["model", "covisit", "popular"]
    assert [made_by("model", False, True), made_by("covisit", True, False), made_by("popular", True, True)] == \
        ["popular", "popular", "popular"]
    assert "blend" in SOURCES


def test_records_where_the_gate_serves_the_blend():
    history = [("h1", "click"), ("h2", "click"), ("h3", "click"), ("h4", "click"), ("h5", "click")]  # long
    requests = [Request("both", history), Request("no-covisit", history), Request("no-model", history)]
    answers = [[("a", 0.9), ("b", 0.8), ("c", 0.7)], [("a", 0.9), ("b", 0.8), ("c", 0.7)], None]
    candidates = Candidates([("p1", 5.0), ("p2", 4.0), ("p3", 3.0)], covisit=[[("c", 2.0), ("x", 1.0)], [], [("x", 1.0)]],
                            choice={"cold": "popular", "short": "popular", "long": "blend"})
    records = [json.loads(r.to_bytes()) for r in build_records(requests, answers, candidates, 3, 7, 7, 0.25)]
    assert [r["source"] for r in records] == ["blend", "model", "covisit"]
    assert [i["item_id"] for i in records[0]["items"]] == ["c", "a", "b"]   # c on both lists, then a and b (ranks 1, 2) against x (2)
    assert records[0]["purchase_weight"] == 0.25                            # the model's blend made half of it
    assert [i["item_id"] for i in records[2]["items"]] == ["x", "p1", "p2"]  # co-visitation, filled up


def test_the_gate_switches_to_the_blend_where_it_beats_both_of_its_lists():
    """Half of the next items are the model's second, the other half co-visitation's second: each
    list alone hits half the events, their fusion (top 2 of each in a top 4) hits all."""
    gate = Gate(half_life_events=500, min_evidence=30)
    for n in range(400):
        model, covisit = ["m1", "m2", "m3", "m4"], ["c1", "c2", "c3", "c4"]
        lists = {"model": model, "covisit": covisit, "popular": ["p"],
                 "blend": [item for item, _ in fuse(model, covisit, 4)]}
        gate.remember(f"u{n}", "long", lists)
        gate.score(f"u{n}", "m2" if n % 2 else "c2", seen_before=False)
    assert gate.choice("long") == "blend"
    report = gate.report()["long"]
    assert report["hr"]["blend"] == 1.0 and 0.4 < report["hr"]["model"] < 0.6
