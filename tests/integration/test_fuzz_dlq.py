"""Fuzzed messages through a running worker (issue 7 item 2, short version of bench/fuzz_dlq.py):
~2,000 hypothesis-drawn messages (random bytes, deep or huge JSON, NaN/Infinity, wrong types, odd
unicode with lone surrogates, over max_message_bytes) plus control events, sent in one batch.
Every invalid one is in the DLQ with the reason parse_event gives, every valid one is applied or
recognised as a duplicate, the control users' ``n`` is exact, the worker never stops, and its RSS
stays bounded."""

from __future__ import annotations


import pytest


from streams.harness.fuzz import rss_growth_mib, run_fuzz

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_fuzzed_messages_land_in_dlq_or_state(tmp_path):
    result = run_fuzz(tmp_path, 2000, seed_value=2024, log=lambda *_: None, process_timeout=120)
    assert not result.problems(), (result.problems(), result.kinds)
    assert len(result.expected_dlq) >= 6, result.expected_dlq  # most reasons are exercised
    assert result.kinds.get("oversize", 0) > 0 and result.kinds.get("valid", 0) > 100
    first, peak, last = rss_growth_mib(result)
    assert peak - first < 300, f"worker RSS grew from {first:.0f} to {peak:.0f} MiB"
