"""Item vocabulary: external string item ids <-> integer rows of the item table.

Row 0 is padding and has no id. Rows are never reused or reordered, so growing the vocabulary
(a new item seen on the stream) never disturbs the rows of trained items. An optional category
per item is kept for cold start. :class:`ScenarioVocab` does the same for scenario names.
"""
from __future__ import annotations

import numpy as np
import torch

from model.interactions import DEFAULT_SCENARIO

PAD_ROW = 0


class ItemVocab:
    def __init__(self, item_ids=None):
        self._ids: list[str | None] = [None]  # row -> id; row 0 = padding
        self._rows: dict[str, int] = {}
        self._category: dict[int, str] = {}
        self._packed: tuple[np.ndarray, np.ndarray] | None = None  # (utf8, lengths) it was loaded from
        self._by_category: dict[str, list[int]] | None = None  # category -> rows, once asked for
        self.reused_rows = 0  # rows taken from ``base`` by ``from_state`` (1..reused_rows)
        for item_id in item_ids or ():
            self.add(item_id)

    def add(self, item_id, category=None) -> int:
        """Row of ``item_id``, appending a new row if unseen. Ids are turned into strings."""
        key = str(item_id)
        row = self._rows.get(key)
        if row is None:
            row = len(self._ids)
            self._ids.append(key)
            self._rows[key] = row
        if category is not None:
            self._set_category(row, str(category))
        return row

    def _set_category(self, row: int, category: str) -> None:
        old = self._category.get(row)
        if old == category:
            return
        self._category[row] = category
        if self._by_category is not None:
            if old is not None:
                self._by_category[old].remove(row)
            self._by_category.setdefault(category, []).append(row)

    def row(self, item_id) -> int | None:
        return self._rows.get(str(item_id))

    def item_id(self, row: int) -> str:
        if row <= PAD_ROW or row >= len(self._ids):
            raise KeyError(f"no item at row {row}")
        return self._ids[row]

    def category(self, row: int) -> str | None:
        return self._category.get(row)

    def rows_in_category(self, category) -> list[int]:
        if self._by_category is None:  # built on first use, then kept up to date by add()
            self._by_category = {}
            for r, cat in self._category.items():
                self._by_category.setdefault(cat, []).append(r)
        return list(self._by_category.get(str(category), ()))

    def ids(self, after_row: int = 0) -> list[str]:
        """Item ids of the rows after ``after_row`` in row order, padding excluded (so ``ids()[i]``
        is row ``i + 1``)."""
        return self._ids[after_row + 1:]

    def __len__(self) -> int:
        return len(self._ids)  # padding included

    def __contains__(self, item_id) -> bool:
        return str(item_id) in self._rows

    def to_state(self) -> dict:
        """Tensors and plain python, so checkpoints load with ``weights_only=True``. The ids are one
        UTF-8 byte tensor plus their lengths: as a list of strings, torch's weights-only unpickler
        (pure Python) spent ~0.4 s on 100k ids holding the GIL, which stalled serving threads."""
        encoded = [item_id.encode("utf-8") for item_id in self.ids()]
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return {"ids_utf8": torch.from_numpy(blob.copy()),
                "ids_len": torch.tensor([len(e) for e in encoded], dtype=torch.int32),
                "category": {int(r): c for r, c in self._category.items()}}

    @classmethod
    def from_state(cls, state: dict, base: "ItemVocab | None" = None) -> "ItemVocab":
        """The vocabulary saved by ``to_state``. With ``base`` (the vocabulary of the version being
        served), the rows both share are taken from ``base`` instead of being decoded again: a
        new version's vocabulary extends the previous one, and decoding 100,000 ids in Python
        holds the GIL long enough to stall serving threads (``reused_rows`` says how many)."""
        if "ids" in state:  # checkpoints written before the ids were packed
            v = cls(state["ids"])
        else:
            blob, lens = state["ids_utf8"].numpy(), state["ids_len"].numpy()
            v = cls()
            shared = base._shared_prefix(blob, lens) if base is not None else 0
            if shared:
                v._ids = base._ids[:shared + 1]
                v._rows = base._rows.copy()
                for item_id in base._ids[shared + 1:]:
                    del v._rows[item_id]
                v.reused_rows = shared
            ends = np.cumsum(lens, dtype=np.int64).tolist()
            starts = [0] + ends[:-1]
            data = blob.tobytes()
            for a, b in zip(starts[shared:], ends[shared:]):
                v.add(data[a:b].decode("utf-8"))
            v._packed = (blob, lens)
        v._category = {int(r): str(c) for r, c in state.get("category", {}).items()}
        return v

    def _shared_prefix(self, blob: np.ndarray, lens: np.ndarray) -> int:
        """Rows 1..n that hold the same ids here and in the packed vocabulary (blob, lens): all of
        this vocabulary's packed rows or of theirs when one is a prefix of the other, else 0.
        0 as well when more than half of this vocabulary would have to be dropped."""
        if self._packed is None:
            return 0
        mine, my_lens = self._packed
        n = min(len(my_lens), len(lens))
        n_bytes = int(my_lens[:n].sum(dtype=np.int64))
        if not (np.array_equal(my_lens[:n], lens[:n]) and np.array_equal(mine[:n_bytes], blob[:n_bytes])):
            return 0
        return n if len(self) - 1 - n <= n else 0


class ScenarioVocab:
    """Scenario names <-> rows of the encoder's scenario table (``EncoderConfig.n_scenarios``).

    Row 0 is the default scenario: events that name none, and any name the table has no room
    for, so a model with no scenario table (``capacity`` 0 or 1) treats every event alike. Other
    names take rows 1.. in order of first sight and never move; a checkpoint keeps them as a list.
    """

    def __init__(self, capacity: int, names=()):
        self.capacity = int(capacity)
        self._rows: dict[str, int] = {}
        for name in names:
            self.add(name)

    def add(self, name: str) -> int:
        """Row of ``name``, giving it the next free row if it is new and there is one (else 0)."""
        row = self._rows.get(name)
        if row is None and name != DEFAULT_SCENARIO and len(self._rows) + 1 < self.capacity:
            row = self._rows[name] = len(self._rows) + 1
        return row or 0

    def row(self, name: str | None) -> int:
        return self._rows.get(name, 0) if name is not None else 0

    def names(self) -> list[str]:
        """The named scenarios in row order (row 1 first)."""
        return list(self._rows)

    def __len__(self) -> int:
        return len(self._rows) + 1   # the default row included
