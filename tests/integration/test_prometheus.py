"""A real Prometheus (Debian package ``prometheus``) scrapes a group of two workers on the embedded
broker while a synthetic stream flows (streams/harness/traffic.py: a growing catalogue, cold
users, 1 % malformed messages); the workers train and publish a model version every 2 s.

- Every PromQL expression of the Grafana dashboard, evaluated through Prometheus' HTTP API over
  the run (``query_range``, ``$__rate_interval`` as Grafana computes it), returns data: a finite
  value, the labels its legend names, and the label values the stream produced.
- The dashboard renders from the same Prometheus (ops/render_dashboard.py).
- Two alerts fire for real: StreamRecDeadLettersHigh once half the input is malformed (and not at
  1 %), StreamRecWorkerDown for the worker that is stopped (and not before). The rules are
  ops/prometheus/alerts.yml with only their ``for:`` durations shortened to 1 s
  (streams.harness.prometheus.fast_rules).

Without the ``prometheus`` binary the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time

import pytest
import requests
import yaml

from streams.harness.prometheus import (ALERTS, DASHBOARD, Prometheus, config_for, dashboard_queries,
                                        fast_rules, legend_labels, promql, rate_interval)
from streams.harness.traffic import EventStream
from streams.ingest.guard import SUSPECT_REASONS
from streams.serving.gate import SOURCES as GATE_SOURCES

from conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

INTERVAL = rate_interval(scrape_interval_s=1.0, step_s=1.0)
# Label values each breakdown may take (None: checked against what the run produced).
SOURCES = set(GATE_SOURCES)  # every source a record or the gate can name
SEGMENTS = {"cold", "short", "long"}


@pytest.fixture(scope="module")
def observed(ops_binary, worker_factory, kafka_producer, tmp_path_factory):
    binary = ops_binary("prometheus", "prometheus")
    settings = worker_factory.group_settings(train=True, publish_interval_s=2, serving_processes=False)
    workers = worker_factory.start(2, settings)
    tmp = tmp_path_factory.mktemp("prometheus")
    rules = fast_rules(ALERTS, tmp / "alerts-fast.yml", "1s")
    prom = Prometheus(tmp, config_for([f"127.0.0.1:{w.port}" for w in workers], [rules]), binary).start()
    stream = EventStream(kafka_producer, settings.topic_events, rate=40, bad_ratio=0.01).start()
    try:
        yield {"prom": prom, "workers": workers, "stream": stream, "start": time.time(),
               "targets": {f"127.0.0.1:{w.port}" for w in workers}}
    finally:
        stream.stop()
        prom.stop()
        for worker in workers:
            worker.stop()


def ask_recommendations(workers) -> None:
    for worker in workers:
        if worker.alive:
            try:
                requests.get(f"{worker.base}/recommend/u1/?k=5", timeout=30)
            except requests.RequestException:
                pass


def expected_values(observed) -> dict[str, tuple[set, bool]]:
    """label (or ``metric:label``, which comes first for that metric) -> (values, exact): exact
    sets must be equal, others must be included."""
    reasons = {r for r in observed["stream"].sent if r != "valid"}
    return {"outcome": ({"accepted", "rejected"}, False), "reason": (reasons, False),
            # the stream sends nobody over the limits: the series are there, pre-labelled, at 0
            "streamrec_suspect_events_total:reason": (set(SUSPECT_REASONS), True),
            "instance": (observed["targets"], True), "path": ({"/recommend"}, True),
            "table": ({"user_sequences", "item_popularity"}, True)}


def check_query(prom, target, start, expected) -> str | None:
    """None if the query returns what its panel shows, else what is wrong."""
    result = prom.query_range(promql(target["expr"], INTERVAL), start, time.time(), 1)
    if not result:
        return "no series"
    if not any(math.isfinite(float(v)) for series in result for _, v in series["values"]):
        return "no finite value"
    for label in legend_labels(target["legendFormat"]):
        values = {series["metric"].get(label) for series in result}
        if None in values:
            return f"a series without label {label}"
        metrics = set(re.findall(r"streamrec_\w+", target["expr"]))
        scoped = [expected[f"{m}:{label}"] for m in metrics if f"{m}:{label}" in expected]
        want, exact = scoped[0] if scoped else expected.get(label, (None, False))
        if label == "source" and not values <= SOURCES or label == "segment" and not values <= SEGMENTS:
            return f"unknown {label} values {values}"
        if want is not None and (values != want if exact else not want <= values):
            return f"{label} values {sorted(values)}, expected {sorted(want)}"
    return None


def test_every_dashboard_query_returns_data_with_its_labels(observed):
    prom, start = observed["prom"], observed["start"]
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 30
    problems: dict[str, str] = {}

    def all_have_data():
        ask_recommendations(observed["workers"])
        expected = expected_values(observed)
        problems.clear()
        for panel, target in queries:
            problem = check_query(prom, target, start, expected)
            if problem:
                problems[f"{panel['title']} [{target['refId']}] {target['expr']}"] = problem
        return not problems

    wait_for(all_have_data, 240, lambda: f"dashboard queries with no data: {json.dumps(problems, indent=1)}",
             interval=3)
    print(f"{len(queries)} of {len(queries)} dashboard queries returned data after "
          f"{time.time() - start:.0f} s")
    [up] = prom.query('sum(up{job="streamrec-worker"})')
    assert float(up["value"][1]) == 2
    [version] = prom.query("max(streamrec_model_version)")
    assert float(version["value"][1]) >= 1
    assert set(prom.targets_up().values()) == {True}


def test_dashboard_renders_from_prometheus(observed, tmp_path):
    spec = importlib.util.spec_from_file_location("render_dashboard", ROOT / "ops" / "render_dashboard.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    out = tmp_path / "dashboard.png"
    found = render.render(observed["prom"].url, out, observed["start"], time.time(), scrape_interval_s=1.0)
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert set(found) == {p["title"] for p in panels}
    assert all(found.values()), {t: n for t, n in found.items() if not n}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 50_000


def test_alerts_fire_for_bad_input_and_a_stopped_worker(observed):
    prom, stream, workers = observed["prom"], observed["stream"], observed["workers"]
    rules = sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
    loaded = prom._get("/api/v1/rules")["groups"]
    assert sum(len(g["rules"]) for g in loaded) == rules
    # At 1 % malformed input and with every worker up, neither alert fires.
    assert not prom.firing("StreamRecDeadLettersHigh") and not prom.firing("StreamRecWorkerDown")

    stream.bad_ratio = 0.5
    started = time.monotonic()
    [dlq] = wait_for(lambda: prom.firing("StreamRecDeadLettersHigh"), 90, "StreamRecDeadLettersHigh to fire")
    print(f"StreamRecDeadLettersHigh fired {time.monotonic() - started:.0f} s after the input turned bad "
          f"(value {float(dlq['value']):.2f})")
    assert float(dlq["value"]) > 0.05 and dlq["labels"]["severity"] == "warning"
    stream.bad_ratio = 0.01

    stopped = workers[1]
    target = f"127.0.0.1:{stopped.port}"
    stopped.stop()
    started = time.monotonic()
    down = wait_for(lambda: prom.firing("StreamRecWorkerDown"), 60, "StreamRecWorkerDown to fire")
    print(f"StreamRecWorkerDown fired {time.monotonic() - started:.0f} s after the worker stopped")
    assert [a["labels"]["instance"] for a in down] == [target]
    assert down[0]["labels"]["job"] == "streamrec-worker" and down[0]["labels"]["severity"] == "critical"
    assert not prom.firing("StreamRecNoWorkers"), "one worker still answers"
