"""The live quality gate (streams/serving/gate.py): every source scored on the user's next event,
the best one served per segment once there is evidence, and the choice follows the stream."""

from __future__ import annotations

from streams.serving.gate import DEFAULT, Gate


def serve_and_score(gate, user, seg, lists, item, seen_before=False):
    gate.remember(user, seg, lists)
    gate.score(user, item, seen_before)


def test_popularity_until_evidence_then_the_best_source_and_back():
    gate = Gate(half_life_events=50, min_evidence=20)
    lists = {"model": ["m"], "covisit": ["c"], "popular": ["p"]}
    for n in range(19):
        serve_and_score(gate, f"u{n}", "long", lists, "c")
    assert gate.choice("long") == DEFAULT == "popular"  # 19 trials: not enough evidence
    serve_and_score(gate, "u19", "long", lists, "c")
    assert gate.choice("long") == "covisit" and gate.choice("short") == "popular"
    for n in range(200):  # the stream changes: the model is right now
        serve_and_score(gate, f"v{n}", "long", lists, "m")
    assert gate.choice("long") == "model"
    report = gate.report()["long"]
    assert report["serving"] == "model" and report["hr"]["model"] > 0.9 > report["hr"]["covisit"]
    assert report["events"] == 220


def test_seen_items_and_unserved_users_are_not_scored():
    gate = Gate(min_evidence=1)
    gate.score("nobody", "x", seen_before=False)  # no record in force
    serve_and_score(gate, "u", "short", {"model": ["x"], "covisit": [], "popular": []}, "x", seen_before=True)
    assert all(score.events == 0 for score in gate.scores.values())
    gate.score("u", "x", seen_before=False)  # the lists were used up by the event above
    assert all(score.events == 0 for score in gate.scores.values())


def test_segments_and_capacity():
    gate = Gate(long_from=3, capacity=2)
    assert [gate.segment(n) for n in (0, 1, 2, 3, 10)] == ["cold", "short", "short", "long", "long"]
    for user in ("a", "b", "c"):
        gate.remember(user, "cold", {"popular": ["x"]})
    gate.score("a", "x", False)  # dropped: least recently served
    assert gate.scores["cold", "popular"].events == 0
    gate.score("c", "x", False)
    assert gate.scores["cold", "popular"].hits == 1.0


def test_a_source_missing_from_a_record_is_not_scored_and_users_are_sampled():
    gate = Gate(min_evidence=1, sample=4)
    serve_and_score(gate, "u", "long", {"model": ["x"], "popular": ["y"]}, "x")  # no co-visitation list
    assert gate.scores["long", "covisit"].events == 0 and gate.scores["long", "model"].hits == 1.0
    assert gate.choice("long") == DEFAULT  # co-visitation has no evidence yet
    sampled = sum(gate.samples(f"user-{n}") for n in range(4000))
    assert 800 < sampled < 1200 and gate.samples("user-1") == gate.samples("user-1")
