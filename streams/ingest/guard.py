"""Limits on what one user can do to what everyone else is recommended: pure functions, no Faust.

- **Rate and burst** (:func:`take`): each user has a token bucket in event time, ``burst`` tokens
  refilled at ``rate_per_s``; an event finding the bucket empty is *suspect* (reason
  ``rate_limited``) and goes to ``events.suspect`` with its original bytes instead of into the
  user's state, popularity, co-visitation, the trainer or cold-start vectors. The bucket lives in
  the user's state record (key ``"rl"``: ``[tokens, ts]``), written with the event, so a replay
  after a crash gets the same verdict, and the leader's trainer, which reads ``events`` itself,
  applies the same function to the same events of the user and so leaves out the same ones.
  Event time, not arrival time: a worker catching up on a backlog does not throttle anyone.
- **One count per user and item** (:func:`counts`): an event on an item already among the user's
  recent events (their state's last ``seq_len``) is applied to their history but adds nothing to
  popularity or co-visitation, so a user repeating one item, by hand or by script, moves it once.
"""

from __future__ import annotations

RATE_LIMITED = "rate_limited"

Bucket = list  # [tokens, ts of the last event taken]


def take(bucket: Bucket | None, ts: float, rate_per_s: float, burst: float) -> Bucket | None:
    """The bucket after one more event at ``ts``; None when it is empty (the event is suspect).
    An event older than the last one taken refills nothing. ``rate_per_s`` 0: no limit."""
    if not rate_per_s:
        return bucket
    if bucket is None:
        return [burst - 1.0, ts]
    tokens, last = bucket
    if ts > last:
        tokens, last = min(burst, tokens + (ts - last) * rate_per_s), ts
    if tokens < 1.0:
        return None
    return [tokens - 1.0, last]


def counts(previous_items, item_id: str) -> bool:
    """Whether an event on ``item_id`` counts in popularity and co-visitation: not if the item is
    among the user's ``previous_items`` (their recent events before this one)."""
    return item_id not in previous_items
