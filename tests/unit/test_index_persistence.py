"""save/load round trip with checksum; truncated and corrupted files are clear errors naming the file."""

import numpy as np
import pytest

from index import IndexFileError, IndexParams, ItemIndex, load, save
from index.synthetic import clustered_items, user_queries

D, NB = 64, 10_000


@pytest.fixture(scope="module")
def data():
    return [f"i{i}" for i in range(NB)], clustered_items(NB, D, seed=5), user_queries(50, D, seed=5)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_round_trip(tmp_path, data, kind):
    ids, xb, xq = data
    index = ItemIndex.build(ids, xb, version=9, params=IndexParams(kind=kind, nlist=64), exact_threshold=0)
    index.retire(["i1", "i2"])
    index.add(["i7", "new"], xq[:2])  # replaces i7, adds new
    path = save(index, tmp_path / "items.idx")
    loaded = load(path)
    assert (loaded.version, loaded.kind, loaded.dim, len(loaded)) == (9, kind, D, len(index))
    assert loaded.effort == index.effort
    assert "i1" not in loaded and "new" in loaded
    assert loaded.search(xq, 10, exclude=[{"i9"}] * len(xq)) == index.search(xq, 10, exclude=[{"i9"}] * len(xq))
    loaded.add(["after"], xq[3:4] * 100)  # a loaded index stays writable
    assert loaded.search(xq[3:4], 1)[0][0][0] == "after"


def test_empty_round_trip(tmp_path):
    index = ItemIndex.build([], np.zeros((0, D), np.float32), version=1)
    loaded = load(save(index, tmp_path / "e.idx"))
    assert len(loaded) == 0 and loaded.dim == D and loaded.search(np.zeros((1, D), np.float32), 3) == [[]]


@pytest.fixture()
def saved(tmp_path, data):
    ids, xb, _ = data
    return save(ItemIndex.build(ids[:1000], xb[:1000], version=2), tmp_path / "cat.idx")


def test_truncated_file_names_the_file(saved):
    raw = saved.read_bytes()
    for cut in (len(raw) - 1, len(raw) // 2, 40, 10):
        saved.write_bytes(raw[:cut])
        with pytest.raises(IndexFileError, match="cat.idx") as e:
            load(saved)
        assert "truncated" in str(e.value) or "bad magic" in str(e.value)


def test_corrupted_byte_is_a_checksum_error(saved):
    raw = bytearray(saved.read_bytes())
    raw[len(raw) - 100] ^= 0xFF
    saved.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match=r"cat\.idx.*checksum"):
        load(saved)


def test_not_an_index_file_and_missing_file(tmp_path):
    junk = tmp_path / "junk.idx"
    junk.write_bytes(b"hello world, definitely not an index")
    with pytest.raises(IndexFileError, match="junk.idx"):
        load(junk)
    with pytest.raises(IndexFileError, match="missing.idx"):
        load(tmp_path / "missing.idx")


def test_save_is_atomic_no_temp_left(saved):
    assert not list(saved.parent.glob("*.tmp"))
