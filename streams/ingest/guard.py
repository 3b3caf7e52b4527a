"""Limits on what one user can do to what everyone else is recommended: pure functions, no Faust.

- **Rate and burst** (:func:`take`): each user has a token bucket in event time, ``burst`` tokens
  refilled at ``rate_per_s``; an event finding the bucket empty is *suspect* (reason
  ``rate_limited``) and goes to ``events.suspect`` with its original bytes instead of into the
  user's state, popularity, co-visitation, the trainer or cold-start vectors. The bucket lives in
  the user's state record (key ``"rl"``: ``[tokens, ts]``), written with the event, so a replay
  after a crash gets the same verdict, and the leader's trainer, which reads ``events`` itself,
  applies the same function to the same events of the user and so leaves out the same ones.
  Event time, not arrival time: a worker catching up on a backlog does not throttle anyone.
- **Release** (:func:`signature`, :func:`released`): ``streamrec release`` sends a user's suspect
  events back to ``events`` as they were, each with a header ``streamrec-release`` holding an
  HMAC-SHA256 of its key and bytes under ``STREAMREC_RELEASE_KEY``; ingest and the trainer take an
  event with a valid signature without the rate limit (and without spending the user's tokens).
  Whoever can write to ``events`` cannot release without the key; with no key set nothing is
  released. A release applies once: the events keep their ``event_id``.
- **One count per user and item** (:func:`counts`): an event on an item already among the user's
  recent events (their state's last ``seq_len``) is applied to their history but adds nothing to
  popularity or co-visitation, so a user repeating one item, by hand or by script, moves it once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

RATE_LIMITED = "rate_limited"
RELEASE_HEADER = "streamrec-release"
TAKEN, RELEASED = "taken", "released"  # the other verdicts of :func:`verdict`

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


def verdict(settings, bucket: Bucket | None, ts: float, key: bytes | None, raw: bytes | None,
            headers) -> tuple[str, Bucket | None]:
    """Ingest's and the trainer's one rule for an event of a user whose bucket is ``bucket``:
    (``TAKEN``, ``RELEASED`` or ``RATE_LIMITED``; the bucket after it). A released event spends no
    token; a suspect one leaves the bucket as it was."""
    if not settings.rate_limit_per_s:
        return TAKEN, bucket
    if released(settings.release_secret, key, raw, headers):
        return RELEASED, bucket
    after = take(bucket, ts, settings.rate_limit_per_s, settings.rate_burst)
    return (RATE_LIMITED, bucket) if after is None else (TAKEN, after)


def signature(release_key: bytes, key: bytes, raw: bytes) -> bytes:
    """The ``streamrec-release`` header value of a released event: HMAC-SHA256 (hex) of its key
    and bytes."""
    mac = hmac.new(release_key, len(key).to_bytes(4, "big") + key + raw, hashlib.sha256)
    return mac.hexdigest().encode()


def released(release_key: bytes | None, key: bytes | None, raw: bytes | None,
             headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> bool:
    """Whether a message carries a valid release signature (never without ``release_key``)."""
    if not release_key or not headers or raw is None:
        return False
    want = signature(release_key, key or b"", raw)
    pairs = headers.items() if isinstance(headers, Mapping) else headers  # Faust may hand a mapping
    return any(name == RELEASE_HEADER and hmac.compare_digest(bytes(value or b""), want) for name, value in pairs)


def counts(previous_items, item_id: str) -> bool:
    """Whether an event on ``item_id`` counts in popularity and co-visitation: not if the item is
    among the user's ``previous_items`` (their recent events before this one)."""
    return item_id not in previous_items
