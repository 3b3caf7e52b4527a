"""IndexHolder: atomic swap under concurrent queries, versions only increase, background refresh,
adds during a rebuild are not lost."""

import threading
import time

import numpy as np
import pytest

from index import IndexHolder, IndexParams, ItemIndex, StaleIndexError
from index.synthetic import clustered_items, user_queries

D, NB = 64, 10_000


@pytest.fixture(scope="module")
def data():
    xb = clustered_items(NB, D, seed=11)
    return [f"i{i}" for i in range(NB)], xb, user_queries(64, D, seed=11)


def test_swap_while_other_threads_query(data):
    ids, xb, xq = data
    holder = IndexHolder(ItemIndex.build(ids, xb, version=1))
    stop = threading.Event()
    errors, seen_versions = [], []

    def reader(seed):
        rng = np.random.default_rng(seed)
        last = -1
        try:
            while not stop.is_set():
                b = int(rng.integers(1, 8))
                version, res = holder.search_versioned(xq[:b], 10, exclude=[{"i1", "i2"}] * b)
                assert version >= last, "version went backwards"
                last = version
                assert all(len(r) == 10 for r in res)
                # every index has the same catalogue, so version tags must be consistent too
                seen_versions.append(version)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    kinds = ["flat", "ivf", "hnsw", "flat", "ivf"]
    for v, kind in enumerate(kinds, start=2):
        holder.swap(ItemIndex.build(ids, xb, version=v, params=IndexParams(kind=kind, nlist=64),
                                    exact_threshold=0))
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert holder.version == 1 + len(kinds)
    assert seen_versions and max(seen_versions) <= holder.version


def test_versions_only_increase(data):
    ids, xb, _ = data
    holder = IndexHolder(ItemIndex.build(ids[:100], xb[:100], version=5))
    with pytest.raises(StaleIndexError):
        holder.swap(ItemIndex.build(ids[:100], xb[:100], version=5))
    with pytest.raises(StaleIndexError):
        holder.swap(ItemIndex.build(ids[:100], xb[:100], version=4))
    assert holder.version == 5
    old = holder.swap(ItemIndex.build(ids[:100], xb[:100], version=6))
    assert old.version == 5 and holder.version == 6


def test_refresh_async_queries_never_wait(data):
    ids, xb, xq = data
    holder = IndexHolder(ItemIndex.build(ids, xb, version=1))
    release = threading.Event()

    def slow_build():
        release.wait(5)
        return ItemIndex.build(ids, xb, version=2)

    fut = holder.refresh_async(slow_build)
    t0 = time.perf_counter()
    for _ in range(20):
        assert len(holder.search(xq[:1], 10)[0]) == 10
    assert time.perf_counter() - t0 < 2.0
    assert holder.version == 1 and not fut.done()
    release.set()
    assert fut.result(timeout=10).version == 2
    assert holder.version == 2
    holder.close()


def test_adds_and_retires_during_rebuild_are_not_lost(data):
    ids, xb, xq = data
    holder = IndexHolder(ItemIndex.build(ids, xb, version=1))
    started, release = threading.Event(), threading.Event()
    snapshot = (list(ids), xb.copy())  # what the rebuild sees: the catalogue before the adds

    def build():
        started.set()
        release.wait(5)
        return ItemIndex.build(*snapshot, version=2)

    fut = holder.refresh_async(build)
    started.wait(5)
    q = xq[0]
    holder.add(["fresh"], (q * 100)[None, :])
    holder.retire(["i3"])
    assert holder.search(q[None, :], 1)[0][0][0] == "fresh"  # visible before the swap
    release.set()
    fut.result(timeout=10)
    assert holder.version == 2
    assert "fresh" in holder and "i3" not in holder
    assert holder.search(q[None, :], 1)[0][0][0] == "fresh"  # still there after it
    holder.close()


def test_replay_false_drops_the_log(data):
    ids, xb, xq = data
    holder = IndexHolder(ItemIndex.build(ids[:100], xb[:100], version=1))
    release = threading.Event()
    fut = holder.refresh_async(lambda: (release.wait(5), ItemIndex.build(ids[:100], xb[:100], version=2))[1],
                               replay=False)
    holder.add(["tmp"], xq[:1])
    release.set()
    fut.result(timeout=10)
    assert "tmp" not in holder
    holder.close()


def test_failed_rebuild_keeps_live_index(data):
    ids, xb, xq = data
    holder = IndexHolder(ItemIndex.build(ids[:100], xb[:100], version=3))

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        holder.refresh(broken)
    with pytest.raises(StaleIndexError):
        holder.refresh(lambda: ItemIndex.build(ids[:100], xb[:100], version=2))
    assert holder.version == 3 and len(holder.search(xq[:1], 5)[0]) == 5
    holder.add(["x"], xq[:1])  # no log left behind
    assert not holder._logs
    holder.close()


def test_empty_holder():
    holder = IndexHolder()
    assert holder.version == -1 and holder.current is None and len(holder) == 0
    assert holder.search(np.zeros((2, D), np.float32), 5) == [[], []]
    with pytest.raises(StaleIndexError):
        holder.add(["a"], np.zeros((1, D), np.float32))
    holder.close()


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
