"""The live quality gate (streams/serving/gate.py): every source scored on the user's next event,
the best one served per segment once there is evidence, and the choice follows the stream."""

from __future__ import annotations

import pytest

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


def test_a_source_missing_from_a_record_is_not_scored_and_records_are_sampled():
    gate = Gate(min_evidence=1, sample=4)
    for n in range(10):
        serve_and_score(gate, f"u{n}", "long", {"model": ["x"], "popular": ["y"]}, "x")  # no co-visitation list
    assert gate.scores["long", "covisit"].events == 0 and gate.scores["long", "model"].hits > 9
    assert gate.choice("long") == "model"  # co-visitation, never scored, is not in the comparison
    sampled = [gate.samples() for _ in range(4000)]   # records, not users: about 1 in 4
    assert 800 < sum(sampled) < 1200 and sum(sampled[:2000]) not in (0, 2000)


def test_a_clear_difference_switches_quickly_and_alike_sources_do_not_flap():
    gate = Gate(half_life_events=5000, min_evidence=30)
    for n in range(30):  # co-visitation hits 1 in 3, popularity 1 in 30
        item = "c" if n % 3 == 0 else "p" if n == 1 else "x"
        serve_and_score(gate, f"u{n}", "long", {"covisit": ["c"], "popular": ["p"]}, item)
    assert gate.choice("long") == "covisit"  # 10 hits against 1 in 30 events: far beyond 2 standard errors
    alike = Gate(half_life_events=5000, min_evidence=30)
    choices = set()
    for n in range(3000):  # both hit 1 event in 10, on different events: neither is better
        item = "a" if n % 20 == 0 else "b" if n % 20 == 10 else "x"
        serve_and_score(alike, f"u{n}", "long", {"covisit": ["a"], "popular": ["b"]}, item)
        choices.add(alike.choice("long"))
    assert choices == {"popular"}


def test_a_sampled_source_forgets_on_the_segment_clock():
    """Co-visitation, scored for 1 user in 4, decays per scored event of the segment, not per
    event of its own: after the stream changes it takes over as soon as a fully scored one would."""
    def run(sample_every):
        gate = Gate(half_life_events=200, min_evidence=30)
        for n in range(2000):
            late = n >= 1000  # first popularity is right, then co-visitation
            item = ("c" if late else "p") if n % 2 == 0 else "x"
            lists = {"popular": ["p"], "covisit": ["c"]} if n % sample_every == 0 else {"popular": ["p"]}
            serve_and_score(gate, f"u{n}", "long", lists, item)
            if late and gate.choice("long") == "covisit":
                return n
    full, sampled = run(1), run(4)
    assert full is not None and sampled is not None
    assert sampled - 1000 < 2 * (full - 1000)  # on its own trials' clock it would lag about 4 times


def test_one_early_hit_does_not_switch():
    gate = Gate(min_evidence=1)
    serve_and_score(gate, "u", "long", {"model": ["x"], "popular": ["y"]}, "x")
    assert gate.choice("long") == "popular"  # 1 hit against 0 in one event: chance, not evidence


def test_where_hits_are_rare_the_memory_holds_enough_of_them_to_choose():
    """A choice made on early chance (the model hit 6 of the first 100 events), then popularity
    hits 1 event in 500 and the model 1 in 2,500: a half-life of 1,000 events holds about 3 hits
    to compare, too few to see the difference; one of 20 popularity hits (the serving model's
    rate makes it about 50,000 events) finds popularity better."""
    def run(half_life_hits):
        gate = Gate(half_life_events=1000, half_life_hits=half_life_hits, min_evidence=30)
        lists = {"model": ["m"], "popular": ["p"]}
        for n in range(100):
            serve_and_score(gate, f"a{n}", "long", lists, "m" if n % 16 == 0 else "x")
        assert gate.choice("long") == "model"
        for n in range(40_000):
            serve_and_score(gate, f"b{n}", "long", lists, "p" if n % 500 == 0 else "m" if n % 2500 == 250 else "x")
            gate.choice("long")
        return gate.choice("long"), gate.report()["long"]["half_life_events"]
    assert run(1e-9) == ("model", 1000)  # stuck on chance
    choice, half_life = run(20.0)
    assert choice == "popular" and half_life > 5000


def test_sources_are_compared_on_the_events_both_were_scored_on():
    """Co-visitation is listed for a sample of the users only; here those users are easy (every
    source hits often) and the rest hard. On the users scored with both, popularity is better:
    compared against popularity's rate over everyone, co-visitation would look twice as good,
    and serving it would lose."""
    def run(covisit_better):
        gate = Gate(half_life_events=2000, min_evidence=30)
        for n in range(4000):
            j = n // 4
            if n % 4 == 0:  # sampled and easy: popularity hits 3 in 5
                if covisit_better:  # co-visitation hits those and the other two
                    item, covisit = ("p" if j % 5 < 3 else "c"), ["c", "p"]
                else:  # co-visitation hits 2 of popularity's 3
                    item, covisit = ("p" if j % 5 < 3 else "x"), (["p"] if j % 5 < 2 else ["c"])
                lists = {"popular": ["p"], "covisit": covisit}
            else:  # hard: popularity hits 1 in 20, co-visitation not listed
                item, lists = ("p" if n % 20 == 1 else "x"), {"popular": ["p"]}
            serve_and_score(gate, f"u{n}", "long", lists, item)
        return gate.choice("long"), gate.report()["long"]
    choice, report = run(covisit_better=False)
    assert report["hr"]["covisit"] > 2 * report["hr"]["popular"] and choice == "popular"
    # what the choice rests on is in the report too: on the events scored side by side, co-visitation trails
    against = report["against_serving"]
    assert against["covisit"]["z"] < -2 and 900 <= against["covisit"]["side_by_side"] <= 1000
    assert against["model"] == {"z": 0.0, "side_by_side": 0}   # never listed: no evidence either way
    choice, report = run(covisit_better=True)
    assert choice == "covisit" and report["against_serving"]["popular"]["z"] < -2


def test_a_quarantined_users_scored_events_are_taken_back_out_of_the_choice():
    gate = Gate(keep_scored=50)
    for n in range(60):  # real users: the category list holds their next item, popularity's does not
        gate.remember(f"real{n}", "short", {"category": ["x"], "popular": ["p"]})
        gate.score(f"real{n}", "x", seen_before=False)
        for j in range(3):  # fake users among them: their next item is popular filler
            fake = f"fake{n % 20}"
            gate.remember(fake, "short", {"category": ["y"], "popular": ["p"]})
            gate.score(fake, "p", seen_before=False)
    assert gate.choice("short") == "popular"  # the fakes' 180 events outweigh the 60 real ones
    before = gate.scores["short", "popular"].events
    assert sum(gate.forget(f"fake{n}") for n in range(20)) == 180
    assert gate.scores["short", "popular"].events == before - 180 == 60
    assert gate.scores["short", "popular"].hits == pytest.approx(0.0, abs=1e-9)
    assert gate.choice("short") == "category"
    assert gate.forget("real0") == 1 and gate.forget("nobody") == 0


def test_without_suspicion_nothing_is_kept_to_take_back():
    gate = Gate()
    gate.remember("u", "short", {"popular": ["p"]})
    gate.score("u", "p", seen_before=False)
    assert gate.forget("u") == 0 and gate.scores["short", "popular"].events == 1


def test_with_a_wait_users_quarantined_before_their_events_count_never_move_the_choice():
    """With ``settle_s`` a scored event counts in the settled evidence once it has waited that
    long of event time; the choice rests on it once the serving source has ``min_evidence``
    events there. Fakes caught within the wait (their next items: popular filler) move nothing."""
    def stream(gate):
        for n in range(60):  # ten minutes of real users: the category list holds their next item
            gate.remember(f"real{n}", "short", {"category": ["x"], "popular": ["p"]})
            gate.score(f"real{n}", "x", False, ts=10.0 * n)
        early = gate.choice("short"), gate.report()["short"]["settled"]
        for n in range(60):  # later, with a promotion's fake users among them
            t = 1200.0 + 5 * n
            gate.remember(f"later{n}", "short", {"category": ["x"], "popular": ["p"]})
            gate.score(f"later{n}", "x", False, ts=t)
            for j in range(3):
                gate.remember(f"fake{n % 20}", "short", {"category": ["y"], "popular": ["p"]})
                gate.score(f"fake{n % 20}", "p", False, ts=t + j)
        return early, gate.choice("short")

    waits = Gate(keep_scored=16, settle_s=600.0, min_evidence=20)
    early, during = stream(waits)
    assert early == ("category", False)  # nothing has waited long enough yet: every scored event counts
    assert during == "category" and waits.report()["short"]["settled"]  # the fakes' events still wait
    assert waits.fresh.scores["short", "popular"].hits > 100 and waits.settled.scores["short", "popular"].hits == 0
    assert sum(waits.forget(f"fake{n}") for n in range(20)) == 180  # quarantined within the wait
    waits.remember("last", "short", {"category": ["x"], "popular": ["p"]})
    waits.score("last", "x", False, ts=3000.0)  # every event before it has waited long enough (it waits)
    assert waits.settled.scores["short", "popular"].events == 120 and waits.settled.scores["short", "popular"].hits == 0
    assert waits.fresh.scores["short", "popular"].events == 121

    at_once = Gate(keep_scored=16, min_evidence=20)
    assert stream(at_once) == (("category", False), "popular")  # without the wait the fakes' filler takes over
