"""The model a worker serves in one process: a Recommender and the FAISS index of its item vectors,
swapped together (the serving :class:`~streams.serving.recommend.Backend` of the serving thread,
and what each serving child holds).

The pair (model, index) is the double buffer: a new version is verified (checksum), loaded
(``weights_only``) and indexed beside the one in force, then made visible by one reference
assignment, so a query sees either the old pair or the new one and never waits for a rebuild.
``load`` and ``add_items`` are called from one thread at a time (the swap thread); ``recommend``
and ``serve`` from the serving thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from index import ItemIndex
from model.recommender import Recommender

from ..lifecycle.model_store import ModelUpdate, verify
from ..settings import Settings
from ..tuning import freeze_long_lived
from .recommend import (Answer, Candidates, History, ModelIds, Payload, Request, Timings, build_records,
                        model_ids, payloads)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    recommender: Recommender
    index: ItemIndex
    update: ModelUpdate


class LiveModel:
    def __init__(self, settings: Settings) -> None:
        torch.set_num_threads(settings.torch_threads)  # process-wide; see Settings.torch_threads
        self.settings = settings
        self.served: Served | None = None
        self.last_refusal: str | None = None  # why the last refused version was refused
        self._index_builds = 0
        # items added from the stream -> the co-items their cold-start vector came from, so that a
        # later version lacking them gives each its own vector again (in that version's space)
        self._stream_items: dict[str, list[str]] = {}

    # --- what serving reads --------------------------------------------------------------------
    @property
    def model_version(self) -> int:
        served = self.served
        return served.update.version if served else 0

    @property
    def index_version(self) -> int:
        served = self.served
        return served.index.version if served else 0

    def recommend(self, histories: Sequence[History], k: int) -> list[Answer]:
        """Top-k per history with seen items excluded; None where the model has no answer."""
        return self._answers(self.served, histories, k, {})

    def _answers(self, served: Served | None, histories: Sequence[History], k: int, timings: Timings,
                 scenarios: Sequence[str | None] | None = None) -> list[Answer]:
        """The answers, with the encode and search stages' CPU time in ``timings`` (this thread's:
        in a serving child FAISS searches on it alone); ``scenarios``: each one's ``Request.asked``."""
        answers: list[Answer] = [None] * len(histories)
        if served is None:
            return answers
        started = time.thread_time()
        vectors, known = served.recommender.user_vectors_and_known(histories, scenarios=scenarios)
        known = np.flatnonzero(known)
        encoded = time.thread_time()
        timings["encode"] = encoded - started
        if len(known) == 0:
            return answers
        seen = [{item for item, *_ in histories[i]} for i in known]
        hits = served.index.search(vectors[known], k, exclude=seen)
        for row, found in zip(known.tolist(), hits):
            answers[row] = found or None  # (item_id, score as a Python float) pairs
        timings["search"] = time.thread_time() - encoded
        return answers

    def serve(self, requests: Sequence[Request], candidates: Candidates, k: int) -> tuple[list[Payload], ModelIds, Timings]:
        served = self.served  # one pair for the whole batch, even if a swap lands meanwhile
        versions = (served.update.version, served.index.version) if served else (0, 0)
        weight = served.recommender.purchase_weight if served else 0.0
        timings: Timings = {}
        # the scenario the record names (Request.asked: the last event's, not the last known item's)
        answers = self._answers(served, [r.history for r in requests], k, timings, [r.asked() for r in requests])
        started = time.thread_time()
        sent = payloads(build_records(requests, answers, candidates, k, *versions, purchase_weight=weight))
        timings["records"] = time.thread_time() - started
        return sent, model_ids(answers), timings

    # --- new versions --------------------------------------------------------------------------
    def load(self, update: ModelUpdate) -> bool:
        """Verify, load and swap in ``update`` (blocking; the swap thread calls it)."""
        previous = self.served
        try:
            path = verify(update)
            rec = Recommender.from_checkpoint(
                str(path), vocab_base=previous.recommender.vocab if previous else None)
            rec.prepare_serving()
            if rec.set_purchase_weight(self.settings.purchase_weight) != self.settings.purchase_weight:
                log.warning("model version %d has no purchase heads: it ranks by next-item only "
                            "(STREAMREC_PURCHASE_WEIGHT=%g)", update.version, self.settings.purchase_weight)
        except Exception as exc:  # a bad checkpoint must never take serving down
            self.last_refusal = f"{type(exc).__name__}: {exc}"
            log.error("refusing model version %d: %s; still serving version %d",
                      update.version, self.last_refusal, self.model_version)
            return False
        self._index_builds += 1
        ids, vectors = rec.item_matrix()
        index = ItemIndex.build(ids, vectors, version=self._index_builds, base=previous.index if previous else None,
                                exact_threshold=self.settings.index_exact_below,
                                backend=self.settings.index_backend)
        if previous is not None:
            for item in [i for i in self._stream_items if i in rec.vocab]:  # trained: its own row now
                del self._stream_items[item]
            # before the pair is served: adding items takes the recommender's lock, which serving
            # would wait for (tens of ms for a grown 100k-item table)
            self._carry_new_items(previous, rec, index, self._stream_items)
        self.served = Served(rec, index, update)
        del previous
        freeze_long_lived()  # the new version's objects live until the next swap
        log.info("loaded model version %d (%d items, index v%d)", update.version, len(ids), index.version)
        return True

    @staticmethod
    def _carry_new_items(previous: Served, rec: Recommender, index: ItemIndex,
                         co_items: dict[str, list[str]]) -> None:
        """Items the old pair had gained in the stream but the new version (``rec``, ``index``, not
        served yet) lacks: cold-start them again from the co-items they were first added with
        (``co_items``), so each keeps a vector of its own. The swap thread is the only one that
        adds items, so none can reach the old pair after this."""
        new_vocab = rec.vocab
        # rows 1..reused_rows are the same in both (ItemVocab.from_state was given the old one)
        missing = [i for i in previous.recommender.vocab.ids(new_vocab.reused_rows) if i not in new_vocab]
        if missing:
            index.add(missing, rec.add_items(missing, co_items={i: co_items.get(i, []) for i in missing}))

    # --- items first seen in the stream --------------------------------------------------------
    def wants(self, item_id: str) -> bool:
        served = self.served
        return served is not None and item_id not in served.recommender.vocab

    def add_items(self, items: list[tuple[str, list[str]]]) -> list[str]:
        """Cold-start vectors for the items the served model lacks, added to its index."""
        served = self.served
        if served is None:
            return []
        new = {item: co_items for item, co_items in items if item not in served.recommender.vocab}
        if not new:
            return []
        ids = list(new)
        served.index.add(ids, served.recommender.add_items(ids, co_items=new))
        self._stream_items.update(new)
        return ids

    def close(self) -> None:
        pass
