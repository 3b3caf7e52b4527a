"""FAISS item index: build (exact / IVF / HNSW, CPU or GPU), filtered batched top-k, incremental
add and retire, persistence. (The double-buffered swap of a new index with its model version is
serving's: ``streams.serving.live_model``.) Imports only faiss and numpy."""

from .errors import IndexFileError, ItemIndexError
from .exact import exact_topk, recall_at_k
from .factory import DEFAULT_EXACT_THRESHOLD, IndexParams, set_search_threads
from .item_index import ItemIndex
from .persistence import load, save

__all__ = [
    "DEFAULT_EXACT_THRESHOLD", "IndexFileError", "IndexParams", "ItemIndex",
    "ItemIndexError", "exact_topk", "load", "recall_at_k", "save", "set_search_threads",
]
