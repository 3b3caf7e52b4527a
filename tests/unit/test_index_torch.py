"""The torch backend of ItemIndex (index/torch_flat.py): the same answers as FAISS's exact index,
filters exact in one pass, adds, retires, persistence and the automatic choice. It runs on CUDA
where there is one and on torch's CPU device otherwise (CI)."""

import threading

import faiss
import numpy as np
import pytest
import torch

from index import IndexParams, ItemIndex, ItemIndexError, load, save
from index import factory, torch_flat
from index.synthetic import clustered_items, user_queries

D, NB = 32, 3_000


@pytest.fixture(scope="module")
def data():
    xb = clustered_items(NB, D, seed=11)
    xq = user_queries(64, D, seed=11)
    ids = [f"sku-{i}" for i in range(NB)]
    return ids, xb, xq


def both(data, **kw):
    ids, xb, _ = data
    return (ItemIndex.build(ids, xb, params=IndexParams(kind="flat"), backend="faiss", **kw),
            ItemIndex.build(ids, xb, backend="torch", **kw))


def same_answers(a: list, b: list) -> None:
    assert [[item for item, _ in row] for row in a] == [[item for item, _ in row] for row in b]
    for ra, rb in zip(a, b):
        np.testing.assert_allclose([s for _, s in ra], [s for _, s in rb], rtol=1e-4, atol=1e-4)


def test_built_on_the_torch_device_exact(data):
    flat, index = both(data)
    assert index.backend == "torch" and index.kind == "flat"
    assert index.stats()["on_gpu"] == torch.cuda.is_available()
    assert index._index.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    same_answers(flat.search(data[2], 10), index.search(data[2], 10))


@pytest.mark.parametrize("batch", [1, 64])
def test_exclusions_and_retired_items_filtered_on_the_device_k_kept(data, batch):
    flat, index = both(data)
    first = index.search(data[2][:batch], 10)
    exclude = [{item for item, _ in row[:5]} | {"sku-0", "not-an-item"} for row in first]
    retired = [row[7][0] for row in first[:3]]
    for ix in (flat, index):
        assert ix.retire(retired) == len(set(retired))
    got = index.search(data[2][:batch], 10, exclude=exclude)
    same_answers(flat.search(data[2][:batch], 10, exclude=exclude), got)
    for row, excl in zip(got, exclude):
        assert len(row) == 10 and not {item for item, _ in row} & (excl | set(retired))
    # one pass: no row needed the CPU-side escalation FAISS GPU falls back on
    assert all(len(row) == 10 for row in got)


def test_blocks_of_queries_answer_like_one_block(data, monkeypatch):
    _, index = both(data)
    whole = index.search(data[2], 10, exclude=[{"sku-1"}] * len(data[2]))
    monkeypatch.setattr(torch_flat, "BLOCK_SCORES", NB * 5)  # 5 queries per matrix product
    same_answers(whole, index.search(data[2], 10, exclude=[{"sku-1"}] * len(data[2])))


def test_adds_readds_and_a_nearly_exhausted_catalogue(data):
    ids, xb, xq = data
    flat = ItemIndex.build(ids[:10], xb[:10], params=IndexParams(kind="flat"), backend="faiss")
    index = ItemIndex.build(ids[:10], xb[:10], backend="torch")
    assert index.add(["new"], xq[:1] * 100) == 1  # far above every item: first for its own query
    assert index.search(xq[:1], 1)[0][0][0] == "new"
    assert index.add(["new"], -xq[:1] * 100) == 1  # re-added: the new vector wins, the old label is dead
    assert "new" not in {item for item, _ in index.search(xq[:1], 5)[0]}
    assert index.stats()["dead"] == 1
    got = index.search(xq[:2], 10, exclude=[set(ids[:8]), set()])
    assert sorted(item for item, _ in got[0]) == sorted(["new", *ids[8:10]])  # all that is left
    assert len(got[1]) == 10
    index.retire(ids[:10])
    assert [item for item, _ in index.search(xq[:1], 10)[0]] == ["new"]
    flat.add(["new"], -xq[:1] * 100)
    flat.retire(ids[:10])
    for n in range(3):  # past the spare capacity: the tensors grow, labels keep their vectors
        for ix in (flat, index):
            ix.add([f"x{n}-{m}" for m in range(700)], xb[700 * n:700 * (n + 1)])
    assert len(index) == len(flat) == 2101
    same_answers(flat.search(xq, 10, exclude=[{"x0-1"}] * len(xq)), index.search(xq, 10, exclude=[{"x0-1"}] * len(xq)))


def test_save_and_load_keep_the_backend_and_the_dead_labels(tmp_path, data):
    _, index = both(data)
    index.retire(["sku-5", "sku-6"])
    path = save(index, tmp_path / "t.idx")
    again = load(path, backend="torch")
    assert again.backend == "torch" and len(again) == NB - 2
    same_answers(index.search(data[2], 10), again.search(data[2], 10))
    as_faiss = load(path, backend="faiss")
    assert as_faiss.backend == "faiss"
    same_answers(index.search(data[2], 10), as_faiss.search(data[2], 10))


def test_a_rebuild_from_a_torch_base_reuses_its_id_map(data):
    ids, xb, xq = data
    first = ItemIndex.build(ids, xb, backend="torch")
    second = ItemIndex.build(ids + ["extra"], np.vstack([xb, xq[:1]]), backend="torch", base=first, version=2)
    assert second.version == 2 and len(second) == NB + 1 and "extra" in second
    same_answers(first.search(xq, 5, exclude=[{"extra"}] * len(xq)),
                 second.search(xq, 5, exclude=[{"extra"}] * len(xq)))


def test_concurrent_searches_and_adds(data):
    ids, xb, xq = data
    index = ItemIndex.build(ids, xb, backend="torch")
    errors = []

    def search():
        try:
            for _ in range(30):
                for row in index.search(xq[:8], 10, exclude=[{"sku-3"}] * 8):
                    assert len(row) == 10 and "sku-3" not in {item for item, _ in row}
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for n in range(30):
        index.add([f"a{n}-{m}" for m in range(50)], xb[:50])
    for t in threads:
        t.join()
    assert not errors and len(index) == NB + 1500


def test_the_automatic_choice(monkeypatch):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert factory.resolve_backend(None) == "faiss"  # no CUDA: FAISS on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert factory.resolve_backend(None) == "torch"  # CUDA without FAISS GPU
    assert factory.resolve_backend("auto", use_gpu=True) == "torch"
    assert factory.resolve_backend(None, use_gpu=False) == "faiss"  # asked to stay off the GPU
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    assert factory.resolve_backend(None) == "faiss"  # FAISS GPU stays the choice where it is installed
    assert factory.resolve_backend("torch") == "torch"
    with pytest.raises(ItemIndexError, match="backend"):
        factory.resolve_backend("cuvs")
