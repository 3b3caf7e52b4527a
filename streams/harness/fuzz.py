"""Fuzzed input through a running worker (issue 7 item 2), shared by
tests/integration/test_fuzz_dlq.py (~2,000 messages) and bench/fuzz_dlq.py (>= 10,000).

Messages are drawn by hypothesis strategies (random bytes, deeply nested or huge JSON, NaN /
Infinity literals, wrong types, odd unicode including lone surrogates, messages over
max_message_bytes), collected through ``@given`` with a fixed seed and ``max_examples``, and
sent in one batch with random keys (so valid ones are also re-keyed), interleaved with control
events of known users. The oracle is :func:`streams.ingest.events.parse_event` run here on the same
bytes: every message it rejects must be in the DLQ with that reason (one record per source
offset, raw bytes equal), every valid one must be counted as accepted or duplicate, the control
users' ``n`` must be exact, the worker must stay up (same pid, /health/ ok) with bounded RSS.
"""

from __future__ import annotations

import base64
import json
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from ..ingest.events import InvalidEvent, parse_event
from ..kafka.clients import make_producer
from ..kafka.topics import ensure_topics
from .procs import Worker, client_settings, dlq_summary, metric_sum, read_topic, start_broker

MAX_BYTES = 65_536
FIELDS = ("user_id", "item_id", "type", "ts", "event_id", "scenario", "category")

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
            | st.sampled_from(["click", "purchase", "", "view", "CLICK", "click\x00"]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
_odd_text = st.text(st.characters(codec=None, exclude_categories=()), min_size=0, max_size=40)


@st.composite
def _event_like(draw):
    obj = draw(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), _json, max_size=7))
    if draw(st.booleans()):  # often close to valid, so that field checks are reached
        obj.setdefault("user_id", draw(st.text(min_size=1, max_size=20) | st.integers()))
        obj.setdefault("item_id", draw(st.text(min_size=1, max_size=20) | st.integers()))
        obj.setdefault("type", draw(st.sampled_from(["click", "purchase", "view", "", 3])))
    return json.dumps(obj, allow_nan=True).encode()


@st.composite
def _odd_unicode(draw):
    user = draw(_odd_text)
    body = json.dumps({"user_id": user or "x", "item_id": draw(_odd_text) or "y", "type": "click"},
                      ensure_ascii=draw(st.booleans()))
    how = draw(st.sampled_from(["utf-8", "surrogate-escape", "surrogate-raw", "utf-16", "latin-1", "bom"]))
    if how == "surrogate-escape":  # valid JSON, the string holds a lone surrogate
        return body.replace('"type"', '"scenario": "\\udc80", "type"').encode()
    if how == "surrogate-raw":  # bytes that are not UTF-8 (a surrogate encoded)
        return (body[:-1] + ', "x": "\ud800"}').encode("utf-8", "surrogatepass")
    if how == "bom":
        return b"\xef\xbb\xbf" + body.encode()
    return body.encode(how, "replace")


@st.composite
def _nan_inf(draw):
    lit = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "nan", "inf"]))
    where = draw(st.sampled_from(["ts", "user_id", "item_id"]))
    base = {"user_id": "u-nan", "item_id": "i", "type": "click", "ts": 1.0}
    text = json.dumps(base).replace(json.dumps({where: base[where]})[1:-1], f'"{where}": {lit}')
    return text.encode()


@st.composite
def _deep(draw):
    depth = draw(st.integers(min_value=100, max_value=30_000))
    kind = draw(st.sampled_from(["list", "dict", "in-field"]))
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"user_id": "u", "item_id": "i", "type": "click", "x": ' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def _huge(draw):
    size = draw(st.integers(min_value=MAX_BYTES - 200, max_value=MAX_BYTES + 50_000))
    body = json.dumps({"user_id": "u-huge", "item_id": "i", "type": "click", "event_id": f"h{size}",
                       "pad": ""}).encode()
    pad = max(0, size - len(body))
    return body[:-2] + b"x" * pad + b'"}'


messages = st.one_of(
    st.binary(max_size=400),
    _event_like(),
    _odd_unicode(),
    _nan_inf(),
    _deep(),
    _huge(),
    _json.map(lambda v: json.dumps(v, allow_nan=True).encode()),
)


def generate(n: int, seed_value: int = 1234) -> list[bytes]:
    """``n`` messages drawn by hypothesis with a fixed seed (deterministic for one version)."""
    out: list[bytes] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(seed_value)
    @given(messages)
    def collect(message):
        out.append(message)

    while len(out) < n:  # hypothesis may stop a little early when it sees duplicates
        before = len(out)
        collect()
        seed_value += 1
        collect = seed(seed_value)(collect)  # type: ignore[assignment]
        if len(out) == before:
            break
    return out[:n]


def classify(raw: bytes, now: float) -> tuple[str | None, tuple[str, str] | None]:
    """(DLQ reason or None, (user_id, event_id) when valid) as parse_event decides."""
    try:
        ev = parse_event(raw, max_bytes=MAX_BYTES, max_future_s=86_400, now=now, default_ts=now)
    except InvalidEvent as err:
        return err.reason, None
    return None, (ev.user_id, ev.event_id)


@dataclass
class FuzzResult:
    sent: int
    expected_dlq: Counter
    dlq_reasons: Counter
    dlq_raw_ok: bool
    dlq_records: int
    dlq_duplicates: int
    valid_distinct: int
    accepted_plus_duplicate: float
    accepted: float
    control_ok: bool
    control_bad: dict
    pid_same: bool
    alive: bool
    health: dict | None
    rss_kib: list[tuple[float, int]] = field(default_factory=list)
    duration_s: float = 0.0
    send_s: float = 0.0
    process_s: float = 0.0
    kinds: dict = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if sum(self.dlq_reasons.values()) != sum(self.expected_dlq.values()) or self.wrong_reason:
            out.append(f"DLQ reasons {dict(self.dlq_reasons)} != expected {dict(self.expected_dlq)}; "
                       f"wrong reasons: {self.wrong_reason[:5]}")
        if not self.dlq_raw_ok:
            out.append("DLQ raw bytes differ from the rejected messages")
        if self.accepted_plus_duplicate != self.valid_distinct + self.duplicates_expected:
            out.append(f"accepted+duplicate {self.accepted_plus_duplicate} != valid messages "
                       f"{self.valid_distinct + self.duplicates_expected}")
        if not self.control_ok:
            out.append(f"control users' n wrong: {self.control_bad}")
        if not (self.pid_same and self.alive and self.health):
            out.append("worker stopped or unhealthy")
        return out

    duplicates_expected: int = 0
    wrong_reason: list = field(default_factory=list)


def run_fuzz(workdir: Path, n: int, *, seed_value: int = 1234, partitions: int = 2, log=print,
             process_timeout: float = 300.0) -> FuzzResult:

    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    fuzzed = generate(n, seed_value)
    log(f"generated {len(fuzzed)} messages in {time.monotonic() - t0:.1f} s")
    rng = random.Random(seed_value)
    # Control events of known users, one every ~10 fuzzed messages.
    controls = Counter()
    batch: list[tuple[bytes | None, bytes]] = []
    for i, raw in enumerate(fuzzed):
        key = rng.choice([None, b"", b"u", rng.randbytes(6)])
        batch.append((key, raw))
        if i % 10 == 0:
            user = f"ctl-{rng.randrange(20)}"
            controls[user] += 1
            ev = {"user_id": user, "item_id": f"sku-{i}", "type": "click", "event_id": f"ctl-{i}"}
            batch.append((user.encode(), json.dumps(ev).encode()))
    now = time.time()
    expected_dlq, valid, bad_raw = Counter(), Counter(), Counter()
    kinds = Counter()
    allowed: dict[bytes, set[str]] = {}
    for _, raw in batch:
        reason, ident = classify(raw, now)
        if reason:
            expected_dlq[reason] += 1
            bad_raw[raw[:MAX_BYTES]] += 1
            allowed.setdefault(raw[:MAX_BYTES], set()).add(reason)
        else:
            valid[ident] += 1
        kinds["oversize" if len(raw) > MAX_BYTES else "valid" if reason is None else "invalid"] += 1
    broker = start_broker(workdir / "broker.log")
    worker = None
    rss: list[tuple[float, int]] = []
    try:
        settings_ = client_settings(broker.bootstrap, partitions)
        ensure_topics(settings_)
        worker = Worker(broker.bootstrap, workdir / "data", app_id=f"fuzz-{seed_value}", partitions=partitions,
                        log_path=workdir / "worker.log").start()
        worker.wait_ready()
        pid = worker.pid
        start_mono = time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                value = worker.rss_kib()
                if value:
                    rss.append((time.monotonic() - start_mono, value))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        producer = make_producer(settings_)
        try:
            for key, value in batch:
                producer.send(settings_.topic_events, key=key, value=value)
            producer.flush(120)
        finally:
            producer.close()
        send_s = time.monotonic() - start_mono
        log(f"sent {len(batch)} messages in {send_s:.1f} s")
        total_dlq = sum(expected_dlq.values())
        valid_msgs = sum(valid.values())
        deadline = time.monotonic() + process_timeout
        while time.monotonic() < deadline:
            m = worker.metrics()
            done = metric_sum(m, "streamrec_events_total")
            outcome = lambda o: m.get(f'streamrec_events_total{{outcome="{o}"}}', 0.0)  # noqa: E731
            if outcome("rejected") >= total_dlq and outcome("accepted") + outcome("duplicate") >= valid_msgs:
                break
            if not worker.alive():
                break
            time.sleep(1.0)
        process_s = time.monotonic() - start_mono
        log(f"processed in {process_s:.1f} s (events_total {done:.0f})")
        time.sleep(1.0)
        stop.set()
        sampler.join()
        alive = worker.alive() and worker.pid == pid
        health = worker.health()
        m = worker.metrics()
        accepted = m.get('streamrec_events_total{outcome="accepted"}', 0.0)
        dup = m.get('streamrec_events_total{outcome="duplicate"}', 0.0)
        control_bad = {}
        for user, count in controls.items():
            body = worker.user(user)
            got = None if body is None else body.get("n")
            if got != count:
                control_bad[user] = (count, got)
        records = read_topic(settings_, settings_.topic_dlq, expect=total_dlq, timeout=90, idle=3)
        reasons, raws, dups = dlq_summary(records, MAX_BYTES)
        wrong_reason = []
        seen = set()
        for r in records:
            d = json.loads(r.value)
            if (d["partition"], d["offset"]) in seen:
                continue
            seen.add((d["partition"], d["offset"]))
            raw = base64.b64decode(d["raw"])
            if d["reason"] not in allowed.get(raw, set()):
                wrong_reason.append((d["reason"], sorted(allowed.get(raw, set())), raw[:80]))
        return FuzzResult(sent=len(batch), expected_dlq=expected_dlq, dlq_reasons=reasons, dlq_raw_ok=raws == bad_raw,
                          dlq_records=len(records), dlq_duplicates=dups, valid_distinct=len(valid),
                          duplicates_expected=valid_msgs - len(valid), accepted_plus_duplicate=accepted + dup,
                          accepted=accepted, control_ok=not control_bad, control_bad=control_bad,
                          pid_same=worker.pid == pid, alive=alive, health=health, rss_kib=rss,
                          duration_s=time.monotonic() - t0, send_s=send_s, process_s=process_s,
                          kinds=dict(kinds), wrong_reason=wrong_reason)
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def rss_growth_mib(result: FuzzResult) -> tuple[float, float, float]:
    """(first, max, last) RSS in MiB during the run."""
    values = [v / 1024 for _, v in result.rss_kib] or [math.nan]
    return values[0], max(values), values[-1]
