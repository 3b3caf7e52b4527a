"""streams.kafka.faust_patches.recovery without a broker: the app recovers its tables with TailReadingRecovery, whose
highwaters are the ends read from the changelogs' records (read_true_ends, replaced here; it is
tested against the embedded broker in tests/integration/test_multi_worker.py)."""

from __future__ import annotations

from collections import Counter

from faust.types import TP
from kafka.errors import KafkaConnectionError

import streams.kafka.faust_patches.recovery
from streams.app import faust_app
from streams.kafka.faust_patches.recovery import TailReadingRecovery

LONG, EMPTY = TP("t-user_sequences-changelog", 0), TP("t-user_sequences-changelog", 1)


class Consumer:
    """Reports Tansu's ends: the last batch's base offset + 1."""

    async def highwaters(self, *tps):
        return {LONG: 2, EMPTY: 0}


def test_the_app_recovers_tables_with_the_tail_reading_recovery_and_keeps_the_check(make_settings):
    app = faust_app(make_settings())
    assert isinstance(app.tables.recovery, TailReadingRecovery)
    assert app.conf.recovery_consistency_check  # Faust's default, on every broker


async def test_highwaters_are_the_last_offsets_read_from_the_records(make_settings, monkeypatch):
    settings = make_settings()
    seen = {}

    def read(given_settings, reported):
        seen.update(settings=given_settings, reported=reported)
        return {LONG: 6, EMPTY: 0}  # records 0..5; nothing

    monkeypatch.setattr(streams.kafka.faust_patches.recovery, "read_true_ends", read)
    highwaters: Counter = Counter({TP("revoked", 0): 9})
    await faust_app(settings).tables.recovery._build_highwaters(Consumer(), {LONG, EMPTY}, highwaters, "active")
    assert seen == {"settings": settings, "reported": {LONG: 2, EMPTY: 0}}
    assert highwaters == {LONG: 5, EMPTY: -1}  # Faust's highwater: the last record's offset


async def test_without_the_tail_read_recovery_uses_the_reported_ends(make_settings, monkeypatch):
    def unreachable(settings, reported):
        raise KafkaConnectionError("Unable to bootstrap from 127.0.0.1:9")

    monkeypatch.setattr(streams.kafka.recovery, "read_true_ends", unreachable)
    highwaters: Counter = Counter()
    await faust_app(make_settings()).tables.recovery._build_highwaters(Consumer(), {LONG, EMPTY}, highwaters,
                                                                        "standby")
    assert highwaters == {LONG: 1, EMPTY: -1}
