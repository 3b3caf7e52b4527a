"""Item index: FAISS (exact / IVF / HNSW, CPU or GPU) or exact torch search on CUDA (torch_flat),
filtered batched top-k, incremental add and retire, persistence. (The double-buffered swap of a new
index with its model version is serving's: ``streams.serving.live_model``.) Imports faiss and
numpy; torch only for the torch backend."""

from .errors import IndexFileError, ItemIndexError
from .exact import exact_topk, recall_at_k
from .factory import DEFAULT_EXACT_THRESHOLD, IndexParams, set_search_threads
from .item_index import ItemIndex
from .persistence import load, save

__all__ = [
    "DEFAULT_EXACT_THRESHOLD", "IndexFileError", "IndexParams", "ItemIndex",
    "ItemIndexError", "exact_topk", "load", "recall_at_k", "save", "set_search_threads",
]
