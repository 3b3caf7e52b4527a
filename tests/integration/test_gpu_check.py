"""bench/gpu_check.py, the one prepared run for the GPU machine, at its tiny size on this machine's
CPU (torch's CPU device for the index, the CPU trainer, a real broker and workers), so that the
script the GPU run depends on keeps working where no GPU is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--size", "tiny", "--out", str(out)],
                   check=True, timeout=600, cwd=ROOT)
    report = json.loads(out.read_text())
    assert [row["items"] for row in report["index"]] == [2_000, 10_000]
    for row in report["index"]:
        assert row["recall_at_10"] == 1.0  # exact
        assert row["batch256_qps"] > 0 and row["batch1_ms"]["p99"] > 0 and row["add_1000_ms"] > 0
    assert {(row["model"], row["device"]) for row in report["trainer"]} == {("taobao", "cpu"), ("ml1m", "cpu")}
    assert all(row["updates"] >= 1 for row in report["trainer"])
    live = report["live"]
    assert [(row["workers"], row["train"]) for row in live] == [(1, False), (1, True), (2, True)]
    for row in live:
        assert row["drain_events_per_s"] > 0 and row["event_to_rec_p99_s"] is not None
        assert row["model_records"] > 0  # the model (and its index) served
        assert len(row["versions_served"]) == row["workers"] and min(row["versions_served"]) >= 1
    assert live[0]["versions_published"] == 0  # no trainer, no new version
    assert live[1]["versions_published"] >= 1 and max(live[1]["versions_served"]) > 1  # trained, announced, served

    # bench/report.py renders it (the GPU run's BENCHMARKS section will be generated from its JSON)
    tables = subprocess.run([sys.executable, "-c", "import json, sys, report; "
                             "print(report.gpu_check(json.load(open(sys.argv[1]))))", str(out)],
                            cwd=ROOT / "bench", check=True, capture_output=True, text=True, timeout=60).stdout
    assert "| 10,000 × 64 | cpu |" in tables and "| ml1m (500 items, 30 events) | cpu |" in tables
    assert [line.split(" | ")[:2] for line in tables.splitlines() if line.startswith(("| 1 |", "| 2 |"))] == \
        [["| 1", "off"], ["| 1", "on"], ["| 2", "on"]]
