"""The serving side of the live model, without a broker: versions, checksums, swaps, new items."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from model.encoder import EncoderConfig
from model.recommender import Recommender
from streams.serving.live_model import LiveModel
from streams.lifecycle.model_store import ModelStore, ModelStoreError, ModelUpdate
from streams.settings import load_settings

ITEMS = [f"i{n}" for n in range(60)]


def make_rec(version: int, seed: int = 0) -> Recommender:
    rec = Recommender.fresh(EncoderConfig(dim=16, n_layers=1, max_len=10), item_ids=ITEMS, seed=seed)
    rec.version = version
    return rec


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", keep=3)


@pytest.fixture
def live(tmp_path: Path) -> LiveModel:
    settings = load_settings({"data_dir": tmp_path, "store": "memory"}, environ={})
    model = LiveModel(settings)
    yield model
    model.close()


def test_serves_a_verified_version_with_seen_items_excluded(live, store):
    assert live.recommend([[("i1", "click")]], 5) == [None]  # nothing served yet
    assert live.load(store.save(make_rec(1)))
    history = [("i1", "click"), ("i2", "purchase")]
    [answer, unknown] = live.recommend([history, [("never-seen", "click")]], 5)
    assert unknown is None  # no known item: the caller serves popularity
    assert len(answer) == 5 and not {"i1", "i2"} & {item for item, _ in answer}
    assert live.model_version == 1 and live.index_version >= 1


def test_a_replaced_version_is_freed_although_its_objects_were_frozen(live, store):
    """load() takes the served version's objects out of the garbage collector's reach
    (streams.tuning.freeze_long_lived); the version it replaces must still be freed, by reference
    counting alone, as soon as nothing serves it."""
    assert live.load(store.save(make_rec(1)))
    old_model, old_index = weakref.ref(live.served.recommender), weakref.ref(live.served.index)
    assert gc.get_freeze_count() > 0
    assert live.load(store.save(make_rec(2, seed=1)))
    assert live.model_version == 2
    assert old_model() is None and old_index() is None


def test_corrupted_checkpoint_is_refused_and_previous_version_keeps_serving(live, store, caplog):
    assert live.load(store.save(make_rec(1)))
    good = store.save(make_rec(2, seed=1))
    Path(good.path).write_bytes(Path(good.path).read_bytes()[:100])  # truncated after announcing
    with caplog.at_level("ERROR"):
        assert not live.load(good)
    assert "refusing model version 2" in caplog.text and "sha256" in caplog.text
    assert live.model_version == 1
    assert live.recommend([[("i3", "click")]], 3)[0]


def test_queries_during_swaps_never_fail_and_versions_only_increase(live, tmp_path):
    store = ModelStore(tmp_path / "many", keep=10)
    assert live.load(store.save(make_rec(1)))
    updates = [store.save(make_rec(v, seed=v)) for v in range(2, 6)]
    errors, stop = [], threading.Event()
    versions_by_thread: list[list[int]] = [[], []]

    def query(seen_versions: list[int]):
        while not stop.is_set():
            try:
                version = live.model_version
                answer = live.recommend([[("i5", "click"), ("i6", "click")]], 10)[0]
                assert answer and len(answer) == 10
                seen_versions.append(version)
            except Exception as exc:  # noqa: BLE001 - the test reports any failure
                errors.append(exc)

    threads = [threading.Thread(target=query, args=(v,)) for v in versions_by_thread]
    for t in threads:
        t.start()
    for update in updates:
        assert live.load(update)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    for seen in versions_by_thread:  # each reader saw versions only increase
        assert seen and seen == sorted(seen)
    assert live.model_version == 5


def test_item_first_seen_in_stream_becomes_recommendable(live, store):
    assert live.load(store.save(make_rec(1)))
    assert live.add_items([("brand-new", ["i1", "i2"]), ("i3", [])]) == ["brand-new"]  # i3: known
    assert "brand-new" in live.served.index
    # A user whose only item is the new one now gets a model answer...
    assert live.recommend([[("brand-new", "click")]], 5)[0]
    # ...and the new item can be recommended: it is near the items it co-occurred with.
    hits = live.served.index.search(live.served.recommender.user_vectors([[("i1", "click")]]), len(ITEMS) + 1)
    assert "brand-new" in {item for item, *_ in hits[0]}


def test_new_items_survive_a_swap_to_a_version_that_lacks_them(live, store):
    assert live.load(store.save(make_rec(1)))
    assert live.add_items([("late", ["i1"])]) == ["late"]
    carry = LiveModel._carry_new_items
    served_then = []

    def watched(previous, rec, index, co_items):
        served_then.append(live.served)
        carry(previous, rec, index, co_items)

    live._carry_new_items = watched
    assert live.load(store.save(make_rec(2)))
    assert "late" in live.served.index
    # carried into the new pair before it was served (adding items takes the recommender's lock,
    # which serving would wait for), not added to it while serving read it
    assert served_then[0].update.version == 1 and live.model_version == 2


def test_carried_over_items_keep_vectors_of_their_own(live, store):
    """Items added from the stream and missing from the next version are cold-started again in
    that version from the items they came with, so they do not all get the same fallback vector."""
    assert live.load(store.save(make_rec(1)))
    assert live.add_items([("near-i1", ["i1", "i2"]), ("near-i40", ["i40", "i41"])]) == ["near-i1", "near-i40"]
    assert live.load(store.save(make_rec(2, seed=1)))  # a version that has neither
    rec = live.served.recommender
    _, vectors = rec.item_matrix()
    a, b = (vectors[rec.vocab.row(i) - 1] for i in ("near-i1", "near-i40"))
    assert not np.allclose(a, b)
    expected = vectors[[rec.vocab.row(i) - 1 for i in ("i1", "i2")]].mean(0)
    assert np.allclose(a, expected, atol=1e-5)  # the mean of its co-items in the new version


def test_rollback_record_swaps_back_to_an_older_version(live, store):
    assert live.load(store.save(make_rec(1)))
    assert live.load(store.save(make_rec(2)))
    assert live.load(store.update_for(1, rollback=True))
    assert live.model_version == 1


def test_store_prunes_old_versions_and_refuses_unknown_ones(store):
    for v in range(1, 6):
        store.save(make_rec(v))
    assert store.versions() == [3, 4, 5]
    with pytest.raises(ModelStoreError, match="version 1 is not in the model store"):
        store.update_for(1)


def test_update_record_round_trip_and_bad_record():
    update = ModelUpdate(3, "/x/v3.pt", "ab" * 32, 1.5, {"loss": 2.0})
    assert ModelUpdate.from_bytes(update.to_bytes()) == update
    with pytest.raises(ModelStoreError):
        ModelUpdate.from_bytes(b'{"version": 1}')


def with_purchase_heads(rec: Recommender, seed: int = 0) -> Recommender:
    import torch
    from model.heads import build_heads
    torch.manual_seed(seed)
    heads = build_heads(["purchase"], rec.encoder.cfg)
    for p in heads.parameters():   # a head far from the identity: the blend must move the ranking
        torch.nn.init.normal_(p, std=0.5)
    rec.heads_state = heads.state_dict()
    return rec


def test_purchase_weight_blends_the_two_scores_in_one_query_and_each_record_says_it():
    import torch
    from model.heads import load_heads
    rec = with_purchase_heads(make_rec(1))
    history = [[("i1", "click"), ("i2", "purchase"), ("i3", "click")]]
    u = rec.user_vectors(history)
    head = rec.heads_state
    assert rec.set_purchase_weight(1.0) == 1.0
    p = load_heads(head, ["purchase"], rec.encoder.cfg)["purchase"].eval()
    with torch.no_grad():
        want = p.purchase_state(torch.from_numpy(u)).numpy()
    np.testing.assert_allclose(rec.user_vectors(history), want, rtol=1e-5, atol=1e-6)
    rec.set_purchase_weight(0.25)
    np.testing.assert_allclose(rec.user_vectors(history), 0.75 * u + 0.25 * want, rtol=1e-5, atol=1e-6)
    assert [i for i, _ in rec.recommend(history, 10)[0]["items"]] != [
        i for i, _ in make_rec(1).recommend(history, 10)[0]["items"]]
    rec.set_purchase_weight(0.0)
    np.testing.assert_allclose(rec.user_vectors(history), u)
    with pytest.raises(ValueError, match="purchase weight"):
        rec.set_purchase_weight(1.5)
    assert make_rec(1).set_purchase_weight(0.5) == 0.0   # no purchase heads: next-item only


@pytest.mark.parametrize("heads", [True, False])
def test_served_records_carry_the_purchase_weight_in_force(tmp_path, store, heads):
    import orjson
    from streams.serving.recommend import Candidates, Request
    settings = load_settings({"data_dir": tmp_path, "store": "memory", "purchase_weight": "0.3"}, environ={})
    live = LiveModel(settings)
    rec = make_rec(1)
    assert live.load(store.save(with_purchase_heads(rec) if heads else rec))
    requests = [Request("u1", [("i1", "click")], 1.0), Request("u2", [("never-seen", "click")], 2.0)]
    sent, _, _ = live.serve(requests, Candidates(popular=[(i, 1.0) for i in ITEMS]), 5)
    records = {user: orjson.loads(body) for user, _, body in sent}
    assert records["u1"]["source"] == "model" and records["u1"]["purchase_weight"] == (0.3 if heads else 0.0)
    assert records["u2"]["source"] == "popular" and records["u2"]["purchase_weight"] == 0.0
