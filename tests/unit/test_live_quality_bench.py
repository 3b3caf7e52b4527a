"""bench/live_quality.py runs on a small stream and scores what it should: on a stream where users
walk stretches of the catalogue in one order, co-visitation predicts the next item and popularity
cannot; the gate then serves co-visitation."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_bench_replays_a_stream_and_the_gate_serves_the_better_source(tmp_path):
    data = tmp_path / "walk.csv.gz"
    with gzip.open(data, "wt") as f:  # 300 users, one after the other, each walks 10 of 200 items in order
        for user in range(300):
            for step in range(10):
                f.write(f"{user},i{(7 * user) % 190 + step},c,pv,{1_000_000 + 10 * user + step}\n")
    out = tmp_path / "lq"
    subprocess.run([sys.executable, str(ROOT / "bench" / "live_quality.py"), "--data", str(data), "--format",
                    "taobao", "--window", "500", "--rank-every", "100", "--new-item-s", "200", "--out", str(out)], check=True, timeout=120,
                   capture_output=True)
    result = json.loads((tmp_path / "lq.json").read_text())
    assert result["events"] == 3000 and result["scored_events"] == 2700  # every event after a user's first
    hr = result["hr"]
    assert hr["covisit"] > 0.5 > 0.2 > hr["alltime"]
    assert hr["gated"] > hr["alltime"] and result["served_by_choice"].get("covisit", 0) > 0
    # items a user walks into just after the previous user first saw them: co-visitation knows them
    new = result["new_items"]
    assert new["covisit"]["events"] == new["alltime"]["events"] > 100
    assert new["covisit"]["hr"] > 0.15 > 0.05 > new["alltime"]["hr"]
    assert (tmp_path / "lq.png").stat().st_size > 0
