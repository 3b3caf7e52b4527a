"""Replay readers (streams/cli/produce.py): format detection, mapping to the event contract, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from streams.ingest.events import parse_event
from streams.cli.produce import ReplayError, detect_format, iter_messages, produce_messages

TAOBAO = "1,101,7,pv,1511544070\n1,102,7,cart,1511544071\n2,101,7,fav,1511544072\n2,103,8,buy,1511544073\n"


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def decoded(path: Path, fmt: str = "auto") -> list[tuple[bytes | None, dict]]:
    return [(key, json.loads(value)) for key, value in iter_messages(path, fmt)]


def test_detect_formats(tmp_path):
    assert detect_format(write(tmp_path / "UserBehavior.csv", TAOBAO)) == "taobao"
    assert detect_format(write(tmp_path / "UserBehavior.csv.gz", TAOBAO)) == "taobao"
    assert detect_format(write(tmp_path / "ratings.txt", "\n1 1193\n1 661\n")) == "ml1m"
    assert detect_format(write(tmp_path / "events.jsonl", "not even json\n")) == "jsonl"  # by name
    assert detect_format(write(tmp_path / "events.ndjson.gz", "x\n")) == "jsonl"
    assert detect_format(write(tmp_path / "events.log", '{"user_id": "u1"}\n')) == "jsonl"  # by content


def test_undetectable_format_is_a_clear_error(tmp_path):
    path = write(tmp_path / "mystery.dat", "a;b;c\n")
    with pytest.raises(ReplayError, match=r"mystery\.dat.*--format"):
        detect_format(path)


def test_taobao_behaviours_map_to_click_and_purchase(tmp_path):
    rows = decoded(write(tmp_path / "UserBehavior.csv", TAOBAO))
    assert [(key, event["type"]) for key, event in rows] == [
        (b"1", "click"), (b"1", "click"), (b"2", "click"), (b"2", "purchase")]
    key, first = rows[0]
    assert first == {"user_id": "1", "item_id": "101", "type": "click", "ts": 1511544070.0,
                     "event_id": "UserBehavior.csv:1", "category": "7"}
    # Each row becomes a valid event with a per-line id: a second replay dedupes.
    events = [parse_event(json.dumps(e).encode(), max_bytes=1024, max_future_s=0, now=2e9) for _, e in rows]
    assert [e.event_id for e in events] == [f"UserBehavior.csv:{n}" for n in range(1, 5)]


def test_gzipped_file_has_the_same_ids_as_the_plain_one(tmp_path):
    plain = decoded(write(tmp_path / "UserBehavior.csv", TAOBAO))
    gz = decoded(write(tmp_path / "UserBehavior.csv.gz", TAOBAO))
    assert plain == gz


@pytest.mark.parametrize("row", [
    "1,101,7,like,1511544070",  # unknown behaviour
    "1,101,7,pv",  # too few columns
    "1,101,7,pv,1511544070,extra",  # too many
    "1,101,7,pv,yesterday",  # ts not a number
])
def test_bad_taobao_row_is_an_error_naming_file_and_line(tmp_path, row):
    path = write(tmp_path / "UserBehavior.csv", TAOBAO + row + "\n")
    messages = iter_messages(path, "taobao")
    for _ in range(4):
        next(messages)
    with pytest.raises(ReplayError, match=r"^UserBehavior\.csv:5: "):
        next(messages)


def test_ml1m_lines_are_clicks_without_ts(tmp_path):
    rows = decoded(write(tmp_path / "ml1m.txt", "1 1193\n1 661\n2 914\n"))
    assert rows[0] == (b"1", {"user_id": "1", "item_id": "1193", "type": "click", "event_id": "ml1m.txt:1"})
    assert [key for key, _ in rows] == [b"1", b"1", b"2"]
    assert all("ts" not in event for _, event in rows)


def test_bad_ml1m_line_is_an_error_naming_file_and_line(tmp_path):
    path = write(tmp_path / "ml1m.txt", "1 1193\n1 661 5\n")
    with pytest.raises(ReplayError, match=r"^ml1m\.txt:2: "):
        list(iter_messages(path))


def test_jsonl_lines_are_sent_as_they_are_keyed_by_user(tmp_path):
    lines = ['{"user_id": "u1", "item_id": "i1", "type": "click"}', "", "not json",
             '["array"]', '{"user_id": 7, "item_id": "i2", "type": "purchase"}', '{"user_id": true}',
             '"just a string"', "[" * 5000 + "]" * 5000]
    messages = list(iter_messages(write(tmp_path / "events.jsonl", "\n".join(lines) + "\n")))
    assert [value.decode() for _, value in messages] == [line for line in lines if line]  # blank skipped
    assert [key for key, _ in messages] == [b"u1", None, None, b"7", None, None, None]


def test_unknown_format_name(tmp_path):
    with pytest.raises(ReplayError, match="unknown format"):
        list(iter_messages(write(tmp_path / "x.csv", TAOBAO), "parquet"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(iter_messages(tmp_path / "missing.csv"))


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = False

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))

    def flush(self):
        self.flushed = True


def test_produce_messages_sends_to_the_events_topic_with_limit(make_settings):
    settings = make_settings(topic_events="in")
    producer = FakeProducer()
    messages = iter([(b"u1", b"a"), (None, b"b"), (b"u2", b"c")])
    assert produce_messages(settings, messages, limit=2, progress=False, producer=producer) == 2
    assert producer.sent == [("in", b"u1", b"a"), ("in", None, b"b")] and producer.flushed
