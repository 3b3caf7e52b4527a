"""bench/attack.py on a small stream: a flood of one target item reaches real users' records
with the defences off and is held back by the rate limit with them on, holding no real event."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_flood_is_held_back_and_promotion_is_measured(tmp_path):
    rng = random.Random(0)
    data = tmp_path / "stream.csv.gz"
    with gzip.open(data, "wt") as f:  # 400 users, a few events each a minute apart, 80 items, some rare
        ts = 1_000_000
        for n in range(2000):
            ts += rng.randrange(1, 3)
            item = rng.randrange(40) if rng.random() < 0.97 else 40 + rng.randrange(40)
            f.write(f"{rng.randrange(400)},i{item},c,pv,{ts}\n")
    out = tmp_path / "attack"
    subprocess.run([sys.executable, str(ROOT / "bench" / "attack.py"), "--data", str(data), "--format", "taobao",
                    "--fake-shares", "0.05", "--flood-users", "2", "--flood-events", "500", "--out", str(out)],
                   check=True, timeout=300, capture_output=True)
    result = json.loads((tmp_path / "attack.json").read_text())
    runs = result["streams"]["stream.csv"]["runs"]
    off, on = runs["flood / defences off"], runs["flood / defences on"]
    assert off["exposure"] > 0.1 > 0.05 > on["exposure"]  # the flooded target tops popularity only when let in
    assert on["fake_held"] == 1000 - 2 * 60 and on["real_held"] == 0  # all but each id's burst
    assert on["hr_over_clean"] > 0.9
    assert 0 < on["hr_second_half"] and runs["clean / defences on"]["hr_second_half_over_clean"] == 1.0
    assert runs["promotion 5.0% human / defences off"]["injected"] == 20 * 10
    assert (tmp_path / "attack.png").stat().st_size > 0


def test_suspicion_judges_the_early_users_and_holds_fake_ones(tmp_path):
    """A stream long enough for suspicion's base rate to be known: the users counted before it are
    judged then (the bench once failed there), and promotion's fake users are held."""
    rng = random.Random(0)
    data = tmp_path / "stream.csv.gz"
    with gzip.open(data, "wt") as f:  # 1,200 users; 5 % of events on 20 popular items, the rest on 1,000
        ts = 1_000_000
        for n in range(4000):
            ts += rng.randrange(1, 3)
            item = rng.randrange(20) if rng.random() < 0.05 else 20 + rng.randrange(1000)
            f.write(f"{rng.randrange(1200)},i{item},c,pv,{ts}\n")
    env = {**os.environ, "STREAMREC_SUSPECT_TOP_ITEMS": "50", "STREAMREC_SUSPECT_LIFT": "5"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "attack.py"), "--data", str(data), "--format", "taobao",
                    "--fake-shares", "0.03", "--flood-users", "1", "--flood-events", "100",
                    "--out", str(tmp_path / "attack")], check=True, timeout=300, capture_output=True, env=env)
    runs = json.loads((tmp_path / "attack.json").read_text())["streams"]["stream.csv"]["runs"]
    off, on = runs["promotion 3.0% human / defences off"], runs["promotion 3.0% human / defences on"]
    assert off["fake_held"] == 0 and on["fake_held"] > 0.2 * on["injected"]  # suspicion holds fake users' events
    assert on["real_held"] == 0
