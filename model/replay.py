"""Datasets as time-ordered streams of :class:`~model.interactions.Interaction`, for replay.

``taobao``: UserBehavior CSV, stably sorted by ``ts``; ``ml1m``: ``user item`` lines,
chronological per user, interleaved by position (see :func:`interleave_by_position`).
"""
from __future__ import annotations

from model.data import DataError, _sort_key, iter_taobao_rows, read_ml1m
from model.interactions import Interaction

STREAM_FORMATS = ("taobao", "ml1m")


def interleave_by_position(seqs: dict[str, list]) -> list[tuple[str, object]]:
    """``[(user, element)]``: every user's 1st element, then every user's 2nd element, ...

    Users are taken in the dict's order within each position; a user whose sequence is over is
    skipped. Example: ``{"a": [1, 2, 3], "b": [4]}`` -> ``[("a", 1), ("b", 4), ("a", 2), ("a", 3)]``.
    """
    out: list[tuple[str, object]] = []
    users = list(seqs)
    pos = 0
    while users:
        users = [u for u in users if len(seqs[u]) > pos]
        out.extend((u, seqs[u][pos]) for u in users)
        pos += 1
    return out


def read_taobao_events(path: str) -> list[Interaction]:
    """Taobao UserBehavior CSV as events, stably sorted by timestamp (file order breaks ties)."""
    events = [Interaction(user, item, typ, ts, cat) for user, item, cat, typ, ts in iter_taobao_rows(path)]
    events.sort(key=lambda e: e.ts)   # stable
    return events


def read_ml1m_events(path: str) -> list[Interaction]:
    """ML-1M ``user item`` lines interleaved by position; ``ts`` is the position in the stream."""
    seqs = read_ml1m(path)
    seqs = {u: seqs[u] for u in sorted(seqs, key=_sort_key)}
    return [Interaction(u, it, typ, float(n)) for n, (u, (it, typ)) in enumerate(interleave_by_position(seqs))]


def load_events(path: str, fmt: str) -> list[Interaction]:
    if fmt == "taobao":
        return read_taobao_events(path)
    if fmt == "ml1m":
        return read_ml1m_events(path)
    raise DataError(f"unknown stream format {fmt!r}; expected one of {', '.join(STREAM_FORMATS)}")


def split_events(events: list[Interaction], pretrain_fraction: float,
                 max_events: int | None = None) -> tuple[list[Interaction], list[Interaction]]:
    """(pretraining prefix, replayed rest): the first ``pretrain_fraction`` of the stream, then at
    most ``max_events`` of what follows."""
    if not 0.0 <= pretrain_fraction < 1.0:
        raise ValueError("pretrain_fraction must be in [0, 1)")
    cut = int(round(pretrain_fraction * len(events)))
    rest = events[cut:]
    if max_events:
        rest = rest[:max_events]
    return events[:cut], rest


def events_to_sequences(events: list[Interaction]) -> dict[str, list[tuple[str, str]]]:
    seqs: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        seqs.setdefault(e.user_id, []).append((e.item_id, e.type))
    return seqs
