"""Dataset loaders -> per-user chronological sequences of (item_id, type); leave-one-out splits.

Formats:
- ``ml1m``: SASRec-format ``user item`` lines (.gz or plain), chronological within a user; every
  interaction is a ``click``.
- ``taobao``: UserBehavior CSV ``user_id,item_id,category_id,behavior_type,timestamp`` (no header);
  ``pv``/``cart``/``fav`` -> ``click``, ``buy`` -> ``purchase``; item categories are kept.
- ``jsonl``: one event per line as in the event contract (``user_id``, ``item_id``, ``type``,
  optional ``ts`` and ``scenario``); events are ordered by ``ts`` (ties and missing ``ts`` keep
  file order). The only format with scenarios: a dataset whose events name none has no scenario
  rows (``SeqDataset.scenarios`` is None) and trains as before.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from model.encoder import TYPE_IDS
from model.interactions import DEFAULT_SCENARIO, TAOBAO_TYPES
from model.vocab import ItemVocab, ScenarioVocab

log = logging.getLogger(__name__)

FORMATS = ("ml1m", "taobao", "jsonl")


class DataError(ValueError):
    """A dataset file is missing or malformed (message names the file and line)."""


@dataclass
class SeqDataset:
    """Sequences as item rows and type ids (numpy int64), one entry per user; with scenarios, the
    scenario row of every event (``scenario_vocab``)."""
    vocab: ItemVocab
    users: list[str]
    items: list[np.ndarray]
    types: list[np.ndarray]
    categories: dict[str, str] = field(default_factory=dict)
    scenarios: list[np.ndarray] | None = None
    scenario_vocab: ScenarioVocab | None = None

    def __len__(self) -> int:
        return len(self.users)


def _open_text(path: str):
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_ml1m(path: str) -> dict[str, list[tuple[str, str]]]:
    seqs: dict[str, list[tuple[str, str]]] = {}
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected 'user item', got {line.strip()!r}")
            seqs.setdefault(parts[0], []).append((parts[1], "click"))
    return seqs


def iter_taobao_rows(path: str):
    """Validated Taobao UserBehavior rows in file order: (user, item, category, type, ts), with
    pv/cart/fav -> click and buy -> purchase; a bad row is a DataError naming file:line."""
    with _open_text(path) as f:
        for n, rec in enumerate(csv.reader(f), 1):
            if not rec:
                continue
            if len(rec) != 5 or rec[3] not in TAOBAO_TYPES:
                raise DataError(f"{path}:{n}: expected user,item,category,pv|cart|fav|buy,ts; got {rec!r}")
            try:
                ts = float(rec[4])
            except ValueError:
                raise DataError(f"{path}:{n}: bad timestamp {rec[4]!r}") from None
            yield rec[0], rec[1], rec[2], TAOBAO_TYPES[rec[3]], ts


def read_taobao(path: str, categories: dict[str, str] | None = None) -> dict[str, list[tuple[str, str]]]:
    rows: dict[str, list[tuple[float, str, str]]] = {}
    for user, item, cat, typ, ts in iter_taobao_rows(path):
        if categories is not None:
            categories[item] = cat
        rows.setdefault(user, []).append((ts, item, typ))
    # sort by timestamp, stable so that file order breaks ties
    return {u: [(i, t) for _, i, t in sorted(ev, key=lambda e: e[0])] for u, ev in rows.items()}


def read_jsonl(path: str, scenarios: dict[str, list[str]] | None = None) -> dict[str, list[tuple[str, str]]]:
    """``scenarios``, if given, is filled with each user's event scenarios, aligned with the
    sequence (left empty when no event names one)."""
    rows: dict[str, list[tuple[float, int, str, str, str]]] = {}
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
                user, item, typ = str(ev["user_id"]), str(ev["item_id"]), ev["type"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{n}: not an event object ({e})") from None
            if typ not in TYPE_IDS:
                raise DataError(f"{path}:{n}: unknown type {typ!r}")
            ts = float(ev.get("ts", n))
            rows.setdefault(user, []).append((ts, n, item, typ, str(ev.get("scenario") or DEFAULT_SCENARIO)))
    ordered = {u: sorted(ev) for u, ev in rows.items()}
    if scenarios is not None and any(e[4] != DEFAULT_SCENARIO for ev in ordered.values() for e in ev):
        scenarios.update({u: [e[4] for e in ev] for u, ev in ordered.items()})
    return {u: [(e[2], e[3]) for e in ev] for u, ev in ordered.items()}


def read_sequences(path: str, fmt: str, categories: dict | None = None,
                   scenarios: dict | None = None) -> dict[str, list[tuple[str, str]]]:
    if fmt == "ml1m":
        return read_ml1m(path)
    if fmt == "taobao":
        return read_taobao(path, categories)
    if fmt == "jsonl":
        return read_jsonl(path, scenarios)
    raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _sort_key(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def build_dataset(seqs: dict[str, list[tuple[str, str]]], vocab: ItemVocab | None = None,
                  categories: dict[str, str] | None = None, scenarios: dict[str, list[str]] | None = None,
                  scenario_vocab: ScenarioVocab | None = None, grow_scenarios: bool = True) -> SeqDataset:
    """Map sequences to rows; a new vocabulary (numeric ids in numeric order) unless one is given.
    ``scenarios``: each user's event scenarios (as ``read_jsonl`` fills them), mapped to the rows
    of ``scenario_vocab`` (grown with the names it has room for; without ``grow_scenarios`` a name
    it lacks is the default scenario, as serving treats it), else of a new one holding every name,
    in sorted order."""
    if vocab is None:
        vocab = ItemVocab()
        for item in sorted({i for s in seqs.values() for i, _ in s}, key=_sort_key):
            vocab.add(item, (categories or {}).get(item))
    if scenarios and scenario_vocab is None:
        every = sorted({n for s in scenarios.values() for n in s} - {DEFAULT_SCENARIO})
        scenario_vocab = ScenarioVocab(len(every) + 1, every)
    scenario_row = None
    if scenario_vocab is not None:
        scenario_row = scenario_vocab.add if grow_scenarios else scenario_vocab.row
    users, items, types, scens = [], [], [], []
    for u in sorted(seqs, key=_sort_key):
        names = scenarios.get(u, ()) if scenarios else ()
        rows = [(vocab.row(i), TYPE_IDS[t], scenario_row(names[j]) if names else 0)
                for j, (i, t) in enumerate(seqs[u])]
        rows = [r for r in rows if r[0] is not None]
        if not rows:
            continue
        users.append(u)
        items.append(np.array([r[0] for r in rows], dtype=np.int64))
        types.append(np.array([r[1] for r in rows], dtype=np.int64))
        scens.append(np.array([r[2] for r in rows], dtype=np.int64))
    return SeqDataset(vocab, users, items, types, dict(categories or {}),
                      scens if scenarios else None, scenario_vocab if scenarios else None)


def fingerprint(ds: SeqDataset) -> str:
    """A short hash of a dataset's sequences by item id (a checkpoint records what it was trained on)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.array([len(s) for s in ds.items], dtype=np.int64).tobytes())
    ids = [ds.vocab.item_id(r) for r in range(1, len(ds.vocab))]
    h.update("\n".join(ids).encode())
    for s in ds.items:
        h.update(s.tobytes())
    return h.hexdigest()


def load_dataset(path: str, fmt: str, vocab: ItemVocab | None = None, grow: bool = False,
                 scenario_vocab: ScenarioVocab | None = None) -> SeqDataset:
    """The dataset of ``path`` on a new vocabulary, or on ``vocab``: its items not in ``vocab`` are
    dropped, or with ``grow`` added to it (new rows after the existing ones, as a checkpoint's
    vocabulary grows when it trains on new data). ``scenario_vocab``: a checkpoint's scenarios, which
    ``grow`` extends with new names as well (without it a name it lacks is the default scenario)."""
    cats: dict[str, str] = {}
    scens: dict[str, list[str]] = {}
    seqs = read_sequences(path, fmt, cats, scens)
    if vocab is not None and grow:
        for s in seqs.values():
            for item, _ in s:
                vocab.add(item, cats.get(item))
    ds = build_dataset(seqs, vocab, cats, scens, scenario_vocab, grow_scenarios=grow or scenario_vocab is None)
    log.info("loaded %s (%s): %d users, %d items, %d events", path, fmt, len(ds),
             len(ds.vocab) - 1, sum(len(s) for s in ds.items))
    return ds


def split_users(ds: SeqDataset, fraction: float, seed: int = 0) -> tuple[SeqDataset, SeqDataset]:
    """Two datasets on the same vocabulary: a random ``fraction`` of the users, and the others (for
    transfer: pretrain on one part, fine-tune and evaluate on the other)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    order = np.random.default_rng(seed).permutation(len(ds))
    cut = int(round(fraction * len(ds)))

    def part(idx) -> SeqDataset:
        idx = sorted(idx)
        return SeqDataset(ds.vocab, [ds.users[i] for i in idx], [ds.items[i] for i in idx],
                          [ds.types[i] for i in idx], ds.categories,
                          None if ds.scenarios is None else [ds.scenarios[i] for i in idx], ds.scenario_vocab)

    return part(order[:cut]), part(order[cut:])


# ---- leave-one-out -------------------------------------------------------------------------------
@dataclass
class EvalSplit:
    """Inputs (history) and the held-out target row for each evaluated user; with scenarios, the
    scenario each input position predicts for (``SeqEncoder``'s convention: the next event's, the
    target's at the last position) and the target's."""
    user_idx: np.ndarray          # index into the dataset's users
    inputs: list[np.ndarray]
    input_types: list[np.ndarray]
    targets: np.ndarray
    target_types: np.ndarray
    input_scenarios: list[np.ndarray] | None = None
    target_scenarios: np.ndarray | None = None

    def subset(self, keep) -> "EvalSplit":
        """The users where ``keep`` (a boolean array, or a slice) holds."""
        pick = np.arange(len(self.targets))[keep]
        return EvalSplit(self.user_idx[pick], [self.inputs[i] for i in pick], [self.input_types[i] for i in pick],
                         self.targets[pick], self.target_types[pick],
                         None if self.input_scenarios is None else [self.input_scenarios[i] for i in pick],
                         None if self.target_scenarios is None else self.target_scenarios[pick])


def loo_train(ds: SeqDataset, holdout: int = 2) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Training sequences: each user's sequence minus the last ``holdout`` events (users with
    fewer than ``holdout + 1`` events are not evaluated, so their whole sequence trains)."""
    items, types = [], []
    for s, t in zip(ds.items, ds.types):
        cut = len(s) - holdout if len(s) > holdout else len(s)
        items.append(s[:cut])
        types.append(t[:cut])
    return items, types


def loo_split(ds: SeqDataset, which: str) -> EvalSplit:
    """``valid``: predict the second-to-last event from what precedes it; ``test``: the last one."""
    off = {"valid": 2, "test": 1}[which]
    idx, inputs, in_types, targets, t_types, in_scen, t_scen = [], [], [], [], [], [], []
    for u, (s, t) in enumerate(zip(ds.items, ds.types)):
        if len(s) < 3:
            continue
        cut = len(s) - off
        idx.append(u)
        inputs.append(s[:cut])
        in_types.append(t[:cut])
        targets.append(s[cut])
        t_types.append(t[cut])
        if ds.scenarios is not None:
            in_scen.append(ds.scenarios[u][1:cut + 1])
            t_scen.append(ds.scenarios[u][cut])
    with_scen = ds.scenarios is not None
    return EvalSplit(np.array(idx, dtype=np.int64), inputs, in_types,
                     np.array(targets, dtype=np.int64), np.array(t_types, dtype=np.int64),
                     in_scen if with_scen else None, np.array(t_scen, dtype=np.int64) if with_scen else None)


def pad_left(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """Left-pad (and left-truncate to the most recent ``max_len``) into an int64 (B, T) array."""
    T = min(max_len, max((len(s) for s in seqs), default=1)) or 1
    out = np.zeros((len(seqs), T), dtype=np.int64)
    for b, s in enumerate(seqs):
        s = s[-T:]
        if len(s):
            out[b, T - len(s):] = s
    return out
