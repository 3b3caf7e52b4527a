"""ItemIndex: recall of every configuration, filters, adds, retires, edge cases.
Seeded synthetic data, d=64, nb=10000 (index.synthetic)."""

import numpy as np
import pytest

from index import IndexParams, ItemIndex, ItemIndexError, exact_topk, recall_at_k
from index.synthetic import clustered_items, user_queries

D, NB, NQ, K = 64, 10_000, 200, 10


@pytest.fixture(scope="module")
def data():
    xb = clustered_items(NB, D, seed=7)
    xq = user_queries(NQ, D, seed=7)
    ids = [f"sku-{i}" for i in range(NB)]
    _, truth = exact_topk(xq, xb, K)
    return ids, xb, xq, truth


CONFIGS = {
    "flat": IndexParams(kind="flat"),
    "ivf-tuned": IndexParams(kind="ivf"),
    "ivf-nlist64": IndexParams(kind="ivf", nlist=64),
    "hnsw-tuned": IndexParams(kind="hnsw"),
    "hnsw-m16": IndexParams(kind="hnsw", hnsw_m=16, ef_construction=40),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def built(request, data):
    ids, xb, _, _ = data
    return ItemIndex.build(ids, xb, params=CONFIGS[request.param], exact_threshold=1000)


def labels_of(results):
    return np.array([[int(s.split("-")[1]) for s, _ in row] + [-1] * (K - len(row)) for row in results])


def test_recall_at_10_at_least_095(built, data):
    _, _, xq, truth = data
    r = recall_at_k(labels_of(built.search(xq, K)), truth, K)
    assert r >= 0.95, f"{built.kind} effort={built.effort}: recall@10={r:.4f}"


def test_scores_are_inner_products_best_first(built, data):
    ids, xb, xq, _ = data
    for row, q in zip(built.search(xq[:20], K), xq[:20]):
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        for item, s in row:
            assert s == pytest.approx(float(xb[int(item.split("-")[1])] @ q), rel=1e-4, abs=1e-3)


def test_flat_is_exact(data):
    ids, xb, xq, truth = data
    index = ItemIndex.build(ids, xb)  # below the default threshold -> exact
    assert index.kind == "flat"
    assert recall_at_k(labels_of(index.search(xq, K)), truth, K) == 1.0


def test_large_catalogue_goes_approximate(data):
    ids, xb, _, _ = data
    assert ItemIndex.build(ids, xb, exact_threshold=5000).kind == "ivf"
    assert ItemIndex.build(ids, xb, exact_threshold=NB + 1).kind == "flat"


def test_vectors_without_clusters_are_searched_exactly(data):
    """An untrained model's item vectors (random): IVF would probe most lists, so "auto" keeps
    exact search; asked for by name, IVF is built anyway."""
    ids, _, _, _ = data
    noise = np.random.default_rng(3).standard_normal((NB, D)).astype(np.float32)
    assert ItemIndex.build(ids, noise, exact_threshold=5000).kind == "flat"
    assert ItemIndex.build(ids, noise, params=IndexParams(kind="ivf"), exact_threshold=5000).kind == "ivf"


def centroids(index: ItemIndex) -> np.ndarray:
    ivf = index._index
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


def test_a_rebuilt_ivf_reuses_its_predecessors_centroids_while_they_fit(data):
    ids, xb, xq, truth = data
    params = IndexParams(kind="ivf", nlist=64)
    first = ItemIndex.build(ids, xb, params=params, exact_threshold=0)
    # the next model version: vectors moved a little, one new item
    rng = np.random.default_rng(1)
    moved = (xb + 0.01 * rng.standard_normal(xb.shape)).astype(np.float32)
    second = ItemIndex.build(ids + [f"sku-{NB}"], np.vstack([moved, moved[:1]]), params=params,
                             exact_threshold=0, base=first)
    assert np.array_equal(centroids(second), centroids(first))  # no k-means this time
    assert second.effort <= 2 * first.effort and second.tuned_recall >= params.target_recall
    assert recall_at_k(labels_of(second.search(xq, K)), exact_topk(xq, np.vstack([moved, moved[:1]]), K)[1], K) >= 0.95
    # unrelated vectors: the old centroids would need far more lists probed, so k-means runs again
    unrelated = np.ascontiguousarray(rng.permutation(xb, axis=1))
    third = ItemIndex.build(ids, unrelated, params=params, exact_threshold=0, base=second)
    assert not np.array_equal(centroids(third), centroids(second))
    assert third.tuned_recall >= params.target_recall
    # without a base, or from an exact index, an IVF index trains its own
    assert not np.array_equal(centroids(ItemIndex.build(ids, moved, params=params, exact_threshold=0,
                                                        base=ItemIndex.build(ids, xb))), centroids(first))


@pytest.mark.parametrize("batch", [1, 7])
def test_exclusions_never_returned_and_k_kept(built, data, batch):
    ids, _, xq, truth = data
    q = xq[:batch]
    # exclude each row's true top-30 plus some unrelated ids (and an unknown id)
    _, top = exact_topk(q, data[1], 30)
    exclude = [{ids[j] for j in top[i]} | {ids[i], "never-seen"} for i in range(batch)]
    res = built.search(q, K, exclude=exclude)
    for row, ex in zip(res, exclude):
        assert len(row) == K
        assert not {s for s, _ in row} & ex
        assert len({s for s, _ in row}) == K


def test_retired_never_returned_and_k_kept(data):
    ids, xb, xq, truth = data
    for kind in ("flat", "ivf", "hnsw"):
        index = ItemIndex.build(ids, xb, params=IndexParams(kind=kind), exact_threshold=0)
        retired = {ids[j] for j in np.unique(truth[:50])}
        assert index.retire(sorted(retired)) == len(retired)
        assert len(index) == NB - len(retired)
        assert not any(s in index for s in retired)
        for batch in (1, 50):
            for row in index.search(xq[:batch], K):
                assert len(row) == K
                assert not {s for s, _ in row} & retired


def test_batch_answers_equal_one_query_at_a_time_with_exclusions_and_retired_items(data):
    # the batch path filters all rows at once; one query puts its exclusions in the selector
    ids, xb, xq, truth = data
    index = ItemIndex.build(ids, xb, params=IndexParams(kind="flat"))
    index.retire([ids[j] for j in truth[:5, 0]])
    rng = np.random.default_rng(3)
    exclude = [{ids[j] for j in truth[i, 1:1 + i % 7]} | {ids[j] for j in rng.integers(0, NB, i % 4)}
               for i in range(40)]
    exclude[3] = set()
    batch = index.search(xq[:40], K, exclude=exclude)
    for i in range(40):
        assert batch[i] == index.search(xq[i:i + 1], K, exclude=[exclude[i]])[0]


def test_filters_when_catalogue_is_nearly_exhausted():
    xb = clustered_items(500, D, seed=3)
    ids = [f"i{i}" for i in range(500)]
    for kind in ("flat", "ivf", "hnsw"):
        index = ItemIndex.build(ids, xb, params=IndexParams(kind=kind, nlist=8), exact_threshold=0)
        index.retire(ids[:400])
        q = user_queries(3, D, seed=3)
        exclude = [set(ids[400:480])] * 3
        res = index.search(q, 50, exclude=exclude)
        assert [len(r) for r in res] == [20, 20, 20]  # only 20 live, non-excluded items remain
        assert all({s for s, _ in r} == set(ids[480:]) for r in res)


def test_added_item_found_by_next_query(built, data):
    _, _, xq, _ = data
    q = xq[3]
    v = (q / np.linalg.norm(q) * 100).astype(np.float32)  # beats every item for this query
    built.add(["new-1"], v[None, :])
    try:
        assert "new-1" in built
        assert built.search(q[None, :], K)[0][0][0] == "new-1"
    finally:
        built.retire(["new-1"])
    assert "new-1" not in built
    assert all(s != "new-1" for s, _ in built.search(q[None, :], K)[0])


def test_readding_an_id_replaces_its_vector(data):
    ids, xb, xq, _ = data
    index = ItemIndex.build(ids, xb)
    q = xq[0]
    index.add(["sku-5"], (q * 50)[None, :])
    assert index.search(q[None, :], 1)[0][0][0] == "sku-5"
    index.add(["sku-5"], (-q * 50)[None, :])  # now the worst item for q
    assert len(index) == NB
    assert all(s != "sku-5" for s, _ in index.search(q[None, :], K)[0])
    assert index.search((-q)[None, :], 1)[0][0][0] == "sku-5"
    # retire then re-add brings it back
    index.retire(["sku-5"])
    index.add(["sku-5"], (q * 50)[None, :])
    assert index.search(q[None, :], 1)[0] == [("sku-5", pytest.approx(float(q @ q) * 50, rel=1e-4))]
    assert index.stats()["dead"] == 3  # three superseded labels of sku-5


def test_duplicate_ids_in_one_call_last_wins():
    x = np.eye(4, D, dtype=np.float32)
    index = ItemIndex.build(["a", "b", "a"], x[:3])
    assert len(index) == 2
    assert index.search(x[2:3], 1)[0][0][0] == "a"
    assert index.search(x[0:1], 1)[0][0] != ("a", 1.0)


def test_k_larger_than_catalogue_and_empty_index():
    x = clustered_items(5, D, seed=1)
    index = ItemIndex.build(list("abcde"), x)
    res = index.search(x, 100)
    assert [len(r) for r in res] == [5] * 5
    empty = ItemIndex.build([], np.zeros((0, D), np.float32))
    assert len(empty) == 0 and empty.dim == D
    assert empty.search(x, 10) == [[]] * 5
    empty.add(["z"], x[:1])
    assert empty.search(x[:1], 10)[0][0][0] == "z"
    assert index.search(x, 0) == [[]] * 5
    assert index.search(np.zeros((0, D), np.float32), 10) == []
    index.retire(list("abcde"))
    assert index.search(x, 3) == [[]] * 5


def test_input_validation(data):
    ids, xb, _, _ = data
    index = ItemIndex.build(ids[:100], xb[:100])
    with pytest.raises(ValueError):
        index.search(np.zeros((2, D + 1), np.float32), 5)
    with pytest.raises(ValueError):
        index.search(np.zeros((2, D), np.float32), 5, exclude=[set()])
    with pytest.raises(ValueError):
        index.add(["x"], np.full((1, D), np.nan, np.float32))
    with pytest.raises(ValueError):
        ItemIndex.build(ids[:3], xb[:2])
    with pytest.raises(TypeError):
        index.retire("sku-1")
    with pytest.raises(ValueError):
        IndexParams(kind="lsh")
    # 1-D query and float64 input are accepted
    assert len(index.search(xb[0].astype(np.float64), 3)[0]) == 3


def test_use_gpu_true_without_gpu_is_a_clear_error(data):
    import faiss
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(ItemIndexError, match="GPU"):
        ItemIndex.build(data[0][:10], data[1][:10], use_gpu=True)


def test_sample_queries_tune_on_real_distribution(data):
    ids, xb, xq, truth = data
    index = ItemIndex.build(ids, xb, params=IndexParams(kind="ivf", target_recall=0.97),
                            exact_threshold=0, sample_queries=xq[:100])
    assert index.tuned_recall >= 0.97
    assert recall_at_k(labels_of(index.search(xq[100:], K)), truth[100:], K) >= 0.95


def test_exact_topk_and_recall_helpers():
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(1000, 8)).astype(np.float32)
    xq = rng.normal(size=(5, 8)).astype(np.float32)
    s, i = exact_topk(xq, xb, 7, chunk=128)
    ref = np.argsort(-(xq @ xb.T), axis=1)[:, :7]
    assert (i == ref).all()
    assert np.allclose(s, np.take_along_axis(xq @ xb.T, ref, axis=1), atol=1e-5)
    assert recall_at_k(ref, ref, 7) == 1.0
    assert recall_at_k(np.full_like(ref, -1), ref, 7) == 0.0
