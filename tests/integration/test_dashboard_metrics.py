"""A running worker exports every metric that the Grafana dashboard and the alert rules query.

The test starts the embedded broker, creates the topics with ``ops/create_topics.py`` (what the
compose file's ``topics`` service runs), starts ``streamrec worker`` as a subprocess, produces a
few events (one of them malformed) and asks for one recommendation over HTTP, then scrapes
``/metrics/``.

What prometheus_client emits decides what can be asserted: a metric without labels always has
samples (a counter ``x_total``, a histogram ``x_bucket``/``x_sum``/``x_count``, a gauge ``x``), a
labelled one has only its ``# HELP``/``# TYPE`` lines until a label value is used. The events and
the HTTP request below use every label the dashboard breaks down by (outcome, reason, source,
path), so every queried sample name must be present as a sample, not only announced. Metrics of
the live model (versions, loss, staleness, trainer queue) are unlabelled gauges and counters:
they are present from the start, at 0 until a model version is served, which this test does not
wait for (training is off to keep it short).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from streams.kafka.broker import EmbeddedBroker
from streams.harness.procs import clean_env, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "streamrec.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
PARTITIONS = 2


def queried_sample_names() -> set[str]:
    """Sample names the dashboard and the alert rules query (tests/unit/test_deploy.py checks
    that no other metric is queried, `up` aside)."""
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    exprs += re.findall(r"expr:\s*(.+)", ALERTS.read_text())
    return {name for expr in exprs for name in re.findall(r"\bstreamrec_\w+", expr)}


@pytest.fixture(scope="module")
def dash_broker():
    broker = EmbeddedBroker(free_port()).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def dash_topics(dash_broker):
    """ops/create_topics.py against the broker, as the compose file's `topics` service runs it."""
    env = clean_env(STREAMREC_BOOTSTRAP_SERVERS=dash_broker.bootstrap, STREAMREC_PARTITIONS=str(PARTITIONS))
    script = [sys.executable, str(ROOT / "ops" / "create_topics.py")]
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    again = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    wrong = subprocess.run(script, env={**env, "STREAMREC_PARTITIONS": str(PARTITIONS + 1)},
                           capture_output=True, text=True, timeout=60)
    return first, again, wrong


@pytest.fixture(scope="module")
def dash_worker(dash_broker, dash_topics, tmp_path_factory):
    """A worker subprocess; stopped (SIGTERM, then SIGKILL of its process group) at teardown."""
    tmp = tmp_path_factory.mktemp("dash-worker")
    port = free_port()
    log_path = tmp / "worker.log"
    cmd = [sys.executable, "-m", "streams.cli", "worker", "--bootstrap-servers", dash_broker.bootstrap,
           "--data-dir", str(tmp / "data"), "--http-port", str(port), "--app-id", f"dash-{port}",
           "--partitions", str(PARTITIONS), "--train", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                health = requests.get(f"{base}/health/", timeout=2).json()
                if health["partitions"]:
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"worker not assigned partitions within 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _scrape(base: str) -> dict[str, set[str]]:
    """family name -> sample names of one /metrics/ scrape (families include HELP/TYPE-only ones)."""
    text = requests.get(f"{base}/metrics/", timeout=5).text
    return {f.name: {s.name for s in f.samples} for f in text_string_to_metric_families(text)}


def test_topic_setup_script(dash_topics):
    first, again, wrong = dash_topics
    assert first.returncode == 0, first.stderr
    assert f"topic events: {PARTITIONS} partition(s)" in first.stdout
    assert "topic model-updates: 1 partition(s) (settings: 1, cleanup.policy=compact)" in first.stdout
    assert again.returncode == 0, again.stderr  # idempotent
    assert wrong.returncode == 1 and "events has 2 partition(s), settings want 3" in wrong.stderr


def test_worker_exports_every_dashboard_metric(dash_worker, dash_broker):
    from kafka import KafkaProducer

    wanted = queried_sample_names()
    assert len(wanted) >= 15, wanted

    producer = KafkaProducer(bootstrap_servers=dash_broker.bootstrap, acks="all")
    try:
        for i in range(12):
            user = f"u{i % 4}"
            event = {"user_id": user, "item_id": f"sku-{i % 5}", "type": "click", "event_id": f"dash-{i}"}
            producer.send("events", key=user.encode(), value=json.dumps(event).encode())
        producer.send("events", key=b"u0", value=b"this is not json")
        producer.flush(30)
    finally:
        producer.close()

    def samples() -> set[str]:
        return {name for names in _scrape(dash_worker).values() for name in names}

    deadline = time.monotonic() + 60
    # streamrec_table_entries (labelled by table) is set by a timer (streams/wiring.py), after a while.
    needed = {"streamrec_events_total", "streamrec_dlq_total", "streamrec_recommendations_total",
              "streamrec_table_entries"}
    while not needed <= samples():
        assert time.monotonic() < deadline, f"no samples for {needed - samples()} after 60 s"
        time.sleep(0.5)
    answer = requests.get(f"{dash_worker}/recommend/u1/?k=3", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["user_id"] == "u1"

    families = _scrape(dash_worker)
    exported = {name for names in families.values() for name in names}
    missing = sorted(wanted - exported)
    assert not missing, f"the dashboard or the alerts query metrics this worker does not export: {missing}"
    # Every family the worker registers is announced (HELP/TYPE) even before it has samples.
    announced = set(families)
    for name in wanted:
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert base in announced, f"{name}: no # TYPE line for {base}"
