"""bench/cost.py at a tiny size (CI keeps it working): each consumer handles every paced event on a
fresh broker, the worker's records come from the model, and its per-stage budget covers the
stages of that path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def test_the_cost_bench_measures_the_floor_and_the_worker_per_stage(tmp_path):
    out = tmp_path / "cost"
    subprocess.run([sys.executable, str(ROOT / "bench" / "cost.py"), "--events", "1500", "--warmup", "300",
                    "--rate", "500", "--shapes", "long", "--catalogues", "30000", "--floors", "aiokafka",
                    "--worker-args", "--serving-gate false", "--out", str(out)],
                   cwd=ROOT, check=True, timeout=280, capture_output=True)
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    floor, worker = report["phases"]
    assert floor["phase"] == "aiokafka" and worker["catalogue"] == 30_000
    for phase in (floor, worker):
        assert phase["events"] == 1500 and phase["cpu_us_per_event"] > 0 and phase["broker_cpu_us_per_event"] > 0
    assert worker["accepted"] == 1500
    # one record per user and micro-batch (a user's events in one batch get the latest one), all
    # from the model: the ~15 users of this long-history stream get hundreds of records
    assert set(worker["records_by_source"]) == {"model"} and worker["records_by_source"]["model"] >= 100
    stages = worker["stages_us_per_event"]
    assert {"decode", "state", "changelog", "popularity", "encode", "search", "records", "produce"} <= set(stages)
    assert worker["cpu_us_per_event"] > floor["cpu_us_per_event"]  # the worker does more than decode
    assert worker["worker_latency_p99_ms"] is not None
