"""The category source (streams/ingest/categories.py): recent popularity within the category of
the user's last event, seen items removed; kept from accepted events that name a category, taken
back for a quarantined user, listed and served where the gate chooses it."""

from __future__ import annotations

import json
import time

import pytest

import streams.wiring
from streams.ingest.categories import CategoryPopularity
from streams.ingest.events import InvalidEvent, parse_event
from streams.serving.recommend import Candidates, Request, build_records, made_by

NOW = time.time()


def test_each_category_ranks_its_own_items_recent_counts_first_seen_items_removed():
    board = CategoryPopularity(half_life_s=100.0)
    for n in range(3):
        board.add("shoes", "old-boot", 0.0 + n)  # three counts, long ago
    board.add("shoes", "sneaker", 1000.0)  # one count, ten half-lives later: worth ~1000 old ones
    board.add("shoes", "sandal", 1000.0)
    board.add("hats", "cap", 1000.0)
    assert [item for item, _ in board.recommend("shoes", [], 3)] == ["sneaker", "sandal", "old-boot"]
    assert [item for item, _ in board.recommend("shoes", ["sneaker"], 2)] == ["sandal", "old-boot"]
    assert board.recommend("hats", [], 5) == [("cap", 1.0)]  # a decayed count as of the latest event
    assert board.recommend("gloves", [], 5) == [] and board.recommend(None, [], 5) == []
    assert len(board) == 2


def test_a_quarantined_users_counts_are_taken_back_and_the_others_stay():
    board = CategoryPopularity(half_life_s=100.0)
    board.add("shoes", "target", 10.0)  # the fake user's
    board.add("shoes", "sneaker", 10.0)
    board.add("shoes", "sneaker", 11.0)
    board.add("shoes", "target", 12.0)  # another user's
    board.retract_history([("target", 10.0), ("target", 10.5), ("unknown", 11.0)])  # one count per item
    # as of the latest event (12): sneaker's two counts decayed by 2 and 1 s, target's other one
    assert dict(board.recommend("shoes", [], 5)) == pytest.approx(
        {"sneaker": 2 ** (-2 / 100) + 2 ** (-1 / 100), "target": 1.0}, rel=1e-5)


def test_the_boards_are_bounded_the_least_recently_counted_category_goes():
    board = CategoryPopularity(half_life_s=100.0, per_category=2, capacity=4)
    for n in range(6):  # capacity 4 (+ a quarter before shrinking): the oldest categories go
        board.add(f"c{n}", f"i{n}", float(n))
    assert len(board) == 4 and board.recommend("c0", [], 1) == [] and board.recommend("c5", [], 1) == [("i5", 1.0)]
    for n in range(10):
        board.add("c5", f"j{n}", 10.0 + n)
    assert len(board.boards["c5"]) <= 2 + 2 // 4 + 1  # items per category bounded as popularity bounds them
    board._of_limit = 0
    board.add("c5", "k", 30.0)
    assert set(board.category_of) == {item for b in board.boards.values() for item in b.log_scores}


def test_the_event_contract_takes_an_optional_category():
    ev = parse_event(json.dumps({"user_id": "u", "item_id": "i", "type": "click", "ts": NOW, "category": 4021}).encode(),
                     max_bytes=10_000, max_future_s=86_400, now=NOW)
    assert ev.category == "4021" and ev.to_json()["category"] == "4021"
    plain = parse_event(b'{"user_id": "u", "item_id": "i", "type": "click"}', max_bytes=10_000, max_future_s=86_400,
                        now=NOW)
    assert plain.category is None and "category" not in plain.to_json()
    with pytest.raises(InvalidEvent) as bad:
        parse_event(b'{"user_id": "u", "item_id": "i", "type": "click", "category": {"id": 1}}', max_bytes=10_000,
                    max_future_s=86_400, now=NOW)
    assert bad.value.reason == "invalid_field"


def test_a_record_from_the_category_list_is_filled_up_with_popularity():
    assert made_by("category", True, True, True) == "category"
    assert made_by("category", True, True, False) == "popular"
    assert made_by("covisit", False, True, True) == "covisit"
    requests = [Request("u1", [("seen", "click")], category="shoes"), Request("u2", [("seen", "click")])]
    candidates = Candidates([("seen", 9.0), ("p1", 5.0), ("p2", 4.0)], category=[[("sneaker", 2.0)], None],
                            choice={"cold": "category", "short": "category", "long": "category"})
    first, second = build_records(requests, [None, None], candidates, 2, 0, 0)
    assert first.source == "category" and [i.item_id for i in first.items] == ["sneaker", "p1"]
    assert second.source == "popular" and [i.item_id for i in second.items] == ["p1", "p2"]


async def test_without_the_setting_there_is_no_category_source(make_settings):
    app = streams.wiring.create(make_settings(partitions=1, http_port=1, serving_processes=False, categories=False))
    try:
        assert app.serving.categories is None
        _, candidates, _ = app.serving._batch([Request("u", [("i", "click")], category="shoes")], None, scored=True)
        assert candidates.category is None
    finally:
        app.close()
