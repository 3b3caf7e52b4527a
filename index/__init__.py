"""FAISS item index: build (exact / IVF / HNSW, CPU or GPU), filtered batched top-k, incremental
add and retire, double-buffered hot swap, persistence. Imports only faiss and numpy."""

from .errors import IndexFileError, ItemIndexError, StaleIndexError
from .exact import exact_topk, recall_at_k
from .factory import DEFAULT_EXACT_THRESHOLD, IndexParams
from .hotswap import IndexHolder
from .item_index import ItemIndex
from .persistence import load, save

__all__ = [
    "DEFAULT_EXACT_THRESHOLD", "IndexFileError", "IndexHolder", "IndexParams", "ItemIndex",
    "ItemIndexError", "StaleIndexError", "exact_topk", "load", "recall_at_k", "save",
]
