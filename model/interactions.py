"""The one user-item interaction type, and the behaviour-type table.

:class:`Interaction` is what the model side knows of an event; the stream side's accepted event
(``streams.ingest.events.Event``) extends it with the event id. The behaviour types are
:data:`EVENT_TYPES`; :data:`TAOBAO_TYPES` maps the Taobao log's behaviours onto them. An
interaction happens in a scenario (the surface it came from: a home feed, search, a campaign);
data that names none is in :data:`DEFAULT_SCENARIO`.
"""
from __future__ import annotations

from dataclasses import dataclass


EVENT_TYPES = ("click", "purchase")
TAOBAO_TYPES = {"pv": "click", "cart": "click", "fav": "click", "buy": "purchase"}
DEFAULT_SCENARIO = "default"
MAX_ID_LEN = 128  # the longest user, item, event id or scenario name the event contract accepts


def step_scenario(step: tuple) -> str:
    """The scenario of one step of a history, ``(item_id, type)`` or ``(item_id, type, scenario)``
    (``streams.ingest.events.Event.step``): the third element where there is one."""
    return step[2] if len(step) > 2 else DEFAULT_SCENARIO


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item interaction: ``type`` is one of :data:`EVENT_TYPES`, ``ts`` epoch seconds (or
    the position in the stream where the data has no time)."""

    user_id: str
    item_id: str
    type: str = "click"
    ts: float = 0.0
    category: str | None = None
    scenario: str = DEFAULT_SCENARIO
