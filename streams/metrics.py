"""Prometheus metrics of a worker (names prefixed ``streamrec_``, times in seconds).

Each app gets its own registry, so several apps can live in one process (tests). Faust's own
Prometheus sensor is not used: it records milliseconds into default buckets, which puts every
latency above 10 ms into ``+Inf``.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

# Event -> recommendation budget is ~100 ms; buckets resolve 1 ms .. 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# One stage's time for one batch: 10 µs .. 1 s.
STAGE_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)

# The stages of ``streamrec_stage_seconds`` (the per-event cost budget, bench/cost.py), where they run
# and how they are timed. Event loop (wall time: CPU, plus waits for the GIL): decode (parse +
# validate), state (RocksDB read, dedupe, apply, encode, write), popularity, covisit (co-visitation and
# category board adds), gate (scoring the record in force and remembering the new one), queue (new-item note,
# queueing the request), candidates (popularity, co-visitation and category lists for a micro-batch); and two
# that await the producer, so they also hold what else ran on the loop while it made room for
# their batches: changelog (a batch's changelog records) and produce (a micro-batch's records). Serving thread (its CPU time): ipc (pickling to and from a
# serving child). Where the model runs (a serving child, FAISS on one thread there, or the serving
# thread; the calling thread's CPU time): encode (user vectors), search (index top-k), records
# (record objects and their bytes). Trainer threads (their CPU time): train_read
# (reading and parsing events), train_update (incremental updates).
STAGES = ("decode", "state", "popularity", "covisit", "gate", "queue", "changelog", "candidates", "produce",
          "ipc", "encode", "search", "records", "train_read", "train_update")


class StageTimes:
    """Seconds per stage, gathered over a batch and observed once per batch (event loop only).

    :meth:`start` then :meth:`mark` attribute the time since the previous call to a stage, for the
    per-event code of ingest (about 60 ns a call); :meth:`add` takes a measured duration; and
    :meth:`observe` hands what was gathered to the histogram (one observation per stage)."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._gathered: defaultdict[str, float] = defaultdict(float)
        self._since = time.perf_counter()

    def start(self) -> None:
        self._since = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self._gathered[stage] += now - self._since
        self._since = now

    def add(self, stage: str, seconds: float) -> None:
        self._gathered[stage] += seconds

    def observe(self) -> None:
        gathered, self._gathered = self._gathered, defaultdict(float)
        for stage, seconds in gathered.items():
            self._histogram.labels(stage).observe(seconds)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, ... of the worker process (the
        # dashboard's Process row); prometheus_client registers them only in its default registry.
        ProcessCollector(registry=r)
        self.events = Counter("streamrec_events_total", "Input messages by outcome (duplicate: applied or dead-lettered before).", ["outcome"], registry=r)
        self.dlq = Counter("streamrec_dlq_total", "Messages sent to the dead-letter topic.", ["reason"],
                           registry=r)
        self.suspect = Counter("streamrec_suspect_events_total",
                               "Valid events held back in the suspect topic, by reason.", ["reason"], registry=r)
        self.released = Counter("streamrec_released_events_total",
                                "Events sent back from the suspect topic by `streamrec release` and taken (a "
                                "valid signature: no rate limit).", registry=r)
        self.quarantined = Counter("streamrec_quarantined_users_total",
                                   "Users quarantined as suspicious (a promotion's profile, streams/ingest/guard.py): "
                                   "their counts taken back, their events held in the suspect topic until released.",
                                   registry=r)
        self.uncounted = Counter("streamrec_uncounted_repeats_total",
                                 "Accepted events on an item already among the user's recent events: in the "
                                 "history, not counted again in popularity or co-visitation.", registry=r)
        self.capped = Counter("streamrec_capped_events_total", "Accepted events over the user's hourly count "
                              "cap (STREAMREC_COUNT_CAP_PER_HOUR): in the history, not counted.", registry=r)
        self.latency = Histogram("streamrec_event_to_recommendation_seconds",
                                 "Time from an event's arrival at the worker to its recommendation's send.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.worker_latency = Histogram("streamrec_worker_latency_seconds",
                                        "Time from the ingest agent receiving an event to the broker "
                                        "acknowledging its recommendation.", buckets=LATENCY_BUCKETS, registry=r)
        self.event_delivery = Histogram("streamrec_event_delivery_seconds",
                                        "Time from an event's Kafka record timestamp (its producer's clock) to "
                                        "the ingest agent receiving it.", buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("streamrec_stage_seconds", "Time spent in one stage of the worker's "
                                       "per-event work, per batch (stages: streams/metrics.py).", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=r)
        self.stages = StageTimes(self.stage_seconds)
        self.event_age = Histogram("streamrec_event_age_seconds",
                                   "Time from the Kafka record timestamp to its recommendation's send.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.recommendations = Counter("streamrec_recommendations_total", "Recommendation records sent.",
                                       ["source"], registry=r)
        self.batch_size = Histogram("streamrec_batch_size", "Users per recommendation micro-batch.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.ingest_batch_size = Histogram("streamrec_ingest_batch_size", "Events per ingest batch.",
                                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.table_entries = Gauge("streamrec_table_entries", "Entries in the worker's tables (RocksDB's estimate).",
                                   ["table"], registry=r)
        self.rocksdb_memory = Gauge("streamrec_rocksdb_memory_bytes", "RocksDB memory of the worker's tables: "
                                    "the shared block cache with the memtables charged to it.", registry=r)
        self.http_latency = Histogram("streamrec_http_request_seconds", "HTTP request latency.", ["path"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("streamrec_consumer_lag", "Messages not yet processed (highwater - "
                                  "committed) on the worker's partitions of the events topic.", registry=r)
        # Live model (issue: live model in the stream).
        self.model_version = Gauge("streamrec_model_version", "Model version being served.", registry=r)
        self.index_version = Gauge("streamrec_index_version", "Index version being served.", registry=r)
        self.training_loss = Gauge("streamrec_training_loss", "Loss of the last incremental update.",
                                   registry=r)
        self.update_seconds = Histogram("streamrec_train_update_seconds", "Duration of one incremental update.",
                                        buckets=TASK_BUCKETS, registry=r)
        self.staleness = Gauge("streamrec_model_staleness_seconds",
                               "Seconds since the serving model version was created.", registry=r)
        self.freshness = Histogram("streamrec_index_freshness_seconds",
                                   "Time from a new item's first event to it being searchable in the index.",
                                   buckets=TASK_BUCKETS, registry=r)
        self.swap_seconds = Histogram("streamrec_swap_seconds", "Load + index rebuild + swap of a model version.",
                                      buckets=TASK_BUCKETS, registry=r)
        self.train_dropped = Counter("streamrec_train_dropped_total",
                                     "Training sequences dropped because the trainer queue was full.", registry=r)
        self.train_duplicates = Counter("streamrec_train_duplicates_total",
                                        "Events the trainer's reader read again and did not train on.", registry=r)
        self.train_suspect = Counter("streamrec_train_suspect_total",
                                     "Events the trainer's reader did not train on because ingest holds them back "
                                     "as suspect (the same rate limit, or a user ingest quarantined).", registry=r)
        self.gate_hit_rate = Gauge("streamrec_gate_hit_rate", "HR@k of each source per user segment, scored "
                                   "test-then-train on the stream (decayed).", ["segment", "source"], registry=r)
        self.gate_serving = Gauge("streamrec_gate_serving", "1 for the source the gate serves a segment with.",
                                  ["segment", "source"], registry=r)
        self.promotion_hit_rate = Gauge("streamrec_promotion_hit_rate", "HR@10 on the trainer's held-back tail at "
                                        "the last judgement: the candidate version, the version in force, popularity.",
                                        ["model"], registry=r)
        self.versions_held_back = Counter("streamrec_versions_held_back_total", "Candidate versions not announced: "
                                          "no better than the version in force on the held-back tail.", registry=r)
        self.train_queue = Gauge("streamrec_train_queue_depth", "Sequences waiting for the trainer.", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def parse_exposition(text: str) -> dict[str, float]:
    """'name{labels}' -> value of a Prometheus text exposition (a /metrics scrape)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def histogram_quantile(metrics: dict[str, float], name: str, q: float,
                       baseline: dict[str, float] | None = None) -> float | None:
    """Quantile from cumulative buckets (linear interpolation inside a bucket), like PromQL's."""
    buckets = []
    for key, value in metrics.items():
        m = re.fullmatch(re.escape(name) + r'_bucket\{le="([^"]+)"\}', key)
        if m:
            le = float(m.group(1))
            buckets.append((le, value - (baseline or {}).get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0)
        prev_le, prev_count = le, count
    return buckets[-1][0]
