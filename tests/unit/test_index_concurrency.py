"""One ItemIndex under concurrent adds and searches; a rebuild given the index it replaces
(``base``) answers as a fresh build. (The swap of a new index with its model is serving's:
tests/unit/test_live_model.py.)"""

import threading

import numpy as np
import pytest

from index import IndexParams, ItemIndex
from index.synthetic import clustered_items, user_queries

D, NB = 64, 10_000


@pytest.fixture(scope="module")
def data():
    xb = clustered_items(NB, D, seed=11)
    return [f"i{i}" for i in range(NB)], xb, user_queries(64, D, seed=11)


def test_concurrent_adds_and_searches_on_one_index(data):
    ids, xb, xq = data
    index = ItemIndex.build(ids, xb, params=IndexParams(kind="ivf", nlist=64), exact_threshold=0)
    errors = []

    def writer():
        try:
            for j in range(50):
                index.add([f"w{j}"], xq[j % len(xq)][None, :])
                if j % 5 == 0:
                    index.retire([f"w{j}"])
        except Exception as e:  # pragma: no cover
            errors.append(e)

    def reader():
        try:
            for _ in range(100):
                for row in index.search(xq[:4], 10):
                    assert len(row) == 10
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(index) == NB + 40


def test_build_with_base_reuses_its_id_map_and_answers_the_same(data):
    ids, xb, xq = data
    base = ItemIndex.build(ids[:8000], xb[:8000], version=1)
    base.add(["stream-a", "stream-b"], xb[8000:8002])      # gained in the stream, not in the next version
    nxt_ids = ids[:9000] + ["i5"]                          # a repeat: the last occurrence wins
    nxt_vecs = np.concatenate([xb[:9000], xb[9500:9501]])
    fresh = ItemIndex.build(nxt_ids, nxt_vecs, version=2)
    reused = ItemIndex.build(nxt_ids, nxt_vecs, version=2, base=base)
    assert base._prefix_label_map(nxt_ids) is not None    # the id map was taken from base
    assert len(reused) == len(fresh) == 9000 and "stream-a" not in reused and "i8999" in reused
    assert reused.search(xq, 10, exclude=[{"i1"}] * len(xq)) == fresh.search(xq, 10, exclude=[{"i1"}] * len(xq))
    assert [h[0] for h in reused.search(xb[9500], 1)[0]] == ["i5"]
    assert "stream-a" in base and len(base) == 8002       # base itself is unchanged
    # a base with a retired item, or with other ids first, is not reused (same answers anyway)
    base.retire(["i3"])
    assert base._prefix_label_map(nxt_ids) is None
    other = ItemIndex.build(list(reversed(ids[:8000])), xb[:8000])
    assert other._prefix_label_map(nxt_ids) is None
    assert ItemIndex.build(nxt_ids, nxt_vecs, base=other).search(xq, 10) == fresh.search(xq, 10)
