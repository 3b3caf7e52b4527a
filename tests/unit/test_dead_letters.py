"""streams/ingest/dead_letters.py: the mark moves over contiguous acknowledged dead letters only."""
from __future__ import annotations

from streams.ingest.dead_letters import DeadLetterMarks


def test_mark_moves_only_over_a_contiguous_acknowledged_run():
    marks = DeadLetterMarks()
    marks.load(0, None)
    for offset in (5, 7, 9):
        marks.sent(0, offset)
    marks.delivered(0, 9)  # acknowledged out of order (another DLQ partition)
    assert not marks.written(0, 9) and marks.to_persist(0) is None
    marks.delivered(0, 5)
    assert marks.written(0, 5) and not marks.written(0, 7)
    assert marks.to_persist(0) == b"5" and marks.to_persist(0) is None  # written once
    marks.delivered(0, 7)
    assert marks.written(0, 9) and marks.to_persist(0) == b"9"


def test_an_unacknowledged_dead_letter_holds_the_mark_and_partitions_are_separate():
    marks = DeadLetterMarks()
    marks.load(0, b"3")
    marks.load(1, None)
    assert marks.written(0, 3) and not marks.written(0, 4) and not marks.written(1, 0)
    marks.sent(0, 4)
    marks.sent(0, 6)
    marks.delivered(0, 6)  # 4 failed: never acknowledged
    assert not marks.written(0, 6) and marks.to_persist(0) is None


def test_a_revoked_partition_is_read_again_and_late_acknowledgements_are_ignored():
    marks = DeadLetterMarks()
    marks.load(2, b"10")
    marks.sent(2, 11)
    marks.forget(2)
    marks.delivered(2, 11)
    assert not marks.known(2) and not marks.written(2, 11)
    marks.load(2, b"20")  # another worker moved it meanwhile
    assert marks.written(2, 20) and marks.to_persist(2) is None
