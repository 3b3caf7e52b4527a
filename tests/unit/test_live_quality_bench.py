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
    # the worst window is a full one of 500 scored events (2,700 = 5 full windows and a last of 200)
    full = [w for w in result["windows"] if w["end"] - w["start"] == 500]
    assert len(full) == 5 and result["windows"][-1]["end"] - result["windows"][-1]["start"] == 200
    assert result["worst_window_gated_over_best"] == min(
        w["gated"] / max(w["alltime"], w["popular"], w["covisit"]) for w in full)


def test_with_a_pretrained_model_the_gate_can_serve_it(tmp_path):
    """A model that learned the walks (users step through the catalogue one item at a time) is a
    source of the bench; the gate serves it where it scores best."""
    import random

    from model.encoder import EncoderConfig
    from model.incremental import OnlineTrainer
    from model.recommender import Recommender

    items = [f"i{n}" for n in range(60)]
    rng = random.Random(0)
    data = tmp_path / "walk.csv.gz"
    starts = [rng.randrange(len(items)) for _ in range(400)]
    with gzip.open(data, "wt") as f:  # 400 users side by side, each walks 8 items from a random start
        for step in range(8):
            for user in range(400):
                f.write(f"{user},{items[(starts[user] + step) % 60]},c,pv,{1_000_000 + 1000 * step + user}\n")
    rec = Recommender.fresh(EncoderConfig(dim=16, n_layers=1, max_len=50), item_ids=items, seed=0)
    trainer = OnlineTrainer(rec, lr=5e-3, replay_capacity=200, device="cpu")
    for _ in range(60):
        trainer.update([[(items[(s + k) % 60], "click") for k in range(8)] for s in rng.sample(range(60), 16)])
    checkpoint = tmp_path / "walk.ckpt"
    rec.save(str(checkpoint))
    out = tmp_path / "lqm"
    subprocess.run([sys.executable, str(ROOT / "bench" / "live_quality.py"), "--data", str(data), "--format",
                    "taobao", "--window", "200", "--rank-every", "100", "--checkpoint", str(checkpoint),
                    "--from-fraction", "0.5", "--batch", "16", "--out", str(out)], check=True, timeout=300,
                   capture_output=True)
    result = json.loads((tmp_path / "lqm.json").read_text())
    hr = result["hr"]
    assert result["scored_events"] == 400 * 4  # the second half of the stream: its last four steps
    assert hr["model"] > 0.8 > 0.3 > max(hr["alltime"], hr["popular"])
    assert result["served_by_choice"].get("model", 0) > 0 and hr["gated"] > hr["popular"]
    # the gate judged the model on the scored events only, not on the ones it had learned
    assert sum(result["gate"][seg]["events"] for seg in ("cold", "short", "long")) <= result["scored_events"]


def test_online_the_workers_trainer_learns_the_stream_and_its_versions_serve(tmp_path):
    """From scratch, with the worker's training and promotion (``--online``): versions are
    announced as the trainer learns the walks, and the model they serve predicts the next step
    where popularity cannot."""
    import random

    rng = random.Random(1)
    data = tmp_path / "walk.csv.gz"
    starts = [rng.randrange(60) for _ in range(300)]
    with gzip.open(data, "wt") as f:  # 300 users side by side, each walks 20 of 60 items in steps of 7
        for step in range(20):
            for user in range(300):
                f.write(f"{user},i{(starts[user] + 7 * step) % 60},c,pv,{1_000_000 + 1000 * step + user}\n")
    out = tmp_path / "lqo"
    subprocess.run([sys.executable, str(ROOT / "bench" / "live_quality.py"), "--data", str(data), "--format",
                    "taobao", "--window", "500", "--rank-every", "100", "--online", "--publish-every", "600",
                    "--batch", "16", "--out", str(out)], check=True, timeout=300, capture_output=True)
    result = json.loads((tmp_path / "lqo.json").read_text())
    versions = result["versions_announced_after_event"]
    assert len(versions) >= 2 and versions[0] == 600  # the first as soon as it has trained
    last = result["windows"][-1]
    assert last["model"] > 0.9 > 0.5 > last["alltime"]
