"""bench/transfer.py, bench/purchase_task.py and bench/robustness.py at a tiny size (CI keeps them working): every
configuration is trained, chosen on validation and read once on test, and the fine-tuned
checkpoints say they are."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from model.checkpoint import load_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--dim", "16", "--layers", "1", "--max-len", "12", "--epochs", "3", "--seeds", "1"]


def run(script: str, tmp_path: Path, data: Path, *extra: str) -> dict:
    out = tmp_path / script
    subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--data", str(data), *TINY,
                    "--workdir", str(tmp_path / "work"), "--json", str(out.with_suffix(".json")),
                    "--png", str(out.with_suffix(".png")), *extra],
                   cwd=ROOT, check=True, timeout=280, capture_output=True)
    assert out.with_suffix(".png").stat().st_size > 0
    return json.loads(out.with_suffix(".json").read_text())


def test_transfer_bench_pretrains_on_some_users_and_fine_tunes_on_the_others(tmp_path):
    data = tmp_path / "walks.txt"   # users walk items k -> k + 1 from random starts
    rng = random.Random(0)
    data.write_text("".join(f"{u} {(s + k) % 40 + 1}\n" for u in range(200) for s in [rng.randrange(40)]
                            for k in range(12)))
    report = run("transfer", tmp_path, data, "--pretrain-minutes", "0.2", "--finetune-minutes", "0.1")
    assert report["pretrain_users"] == 180 and report["downstream_users"] == 20
    (row,) = report["rows"]
    for config in ("zero-shot", "finetune", "frozen", "scratch"):
        assert row[config]["test"]["users"] == 20
    assert row["finetune"]["test"]["stage"] == "finetune" and row["scratch"]["test"]["stage"] == "pretrain"
    # the walk rule is the same for every user: what 180 users taught beats what 20 can
    assert row["zero-shot"]["test"]["model"]["NDCG@10"] > row["zero-shot"]["test"]["popular"]["NDCG@10"]
    assert report["summary"]["next:1"]["finetune / scratch NDCG@10"] > 0


def test_purchase_task_bench_fine_tunes_the_purchase_heads(tmp_path):
    data = tmp_path / "tb.csv"   # Taobao columns: user, item, category, behaviour, ts
    rng = random.Random(0)
    rows = []
    for u in range(150):
        buyer, s = rng.random() < 0.5, rng.randrange(30)
        rows += [f"{u},{(s + t) % 30 + 1},{(s + t) % 5},{'buy' if buyer and t % 3 == 0 and t else 'pv'},"
                 f"{1_500_000_000 + 100 * u + t}" for t in range(10)]
    data.write_text("\n".join(rows) + "\n")
    report = run("purchase_task", tmp_path, data, "--pretrain-minutes", "0.1", "--finetune-minutes", "0.1",
                 "--negatives", "0")
    (row,) = report["rows"]
    assert report["popularity_propensity"]["purchases"] > 0
    for config in ("purchase, encoder trained", "purchase, encoder frozen"):
        assert 0.0 <= row[config]["test"]["auc"] <= 1.0 and row[config]["test"]["purchase_users"] > 0
    ck = load_checkpoint(str(tmp_path / "work" / "s1" / "frozen" / "best.ckpt"))
    assert ck["stage"] == "finetune" and ck["task"] == "purchase" and ck["head_names"] == ["purchase"]
    assert "purchase HR@10, trained / next-item" in report["summary"]


def test_robustness_bench_measures_what_a_poisoned_training_set_does(tmp_path):
    data = tmp_path / "walks.txt"   # walks over items 1..150, and five rare items (the targets' pool)
    rng = random.Random(0)
    lines = [f"{u} {151 + u % 5}\n" for u in range(30)]  # first in these users' sequences
    lines += [f"{u} {(s + k) % 150 + 1}\n" for u in range(300) for s in [rng.randrange(150)] for k in range(12)]
    data.write_text("".join(sorted(lines, key=lambda line: int(line.split()[0]))))
    out = tmp_path / "robustness.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "robustness.py"), "--data", str(data), "--dim", "16",
                    "--layers", "1", "--max-len", "12", "--epochs", "15", "--minutes", "0.3", "--fake-shares", "0.3",
                    "--fake-events", "8", "--objectives", "next:1;next:1,adversarial:1", "--threads", "1",
                    "--workdir", str(tmp_path / "work"), "--json", str(out)],
                   cwd=ROOT, check=True, timeout=280, capture_output=True)
    report = json.loads(out.read_text())
    runs = {(r["data"], "+".join(r["objectives"])): r for r in report["runs"]}
    assert set(runs) == {(d, o) for d in ("clean", "30% fake users") for o in ("next", "next+adversarial")}
    assert all(r["test"]["NDCG@10"] > 0 for r in runs.values())
    assert runs["30% fake users", "next"]["fake_users"] == 90 and runs["clean", "next"]["fake_users"] == 0
    # 90 fake users who put the targets among popular walk items teach the model to recommend them
    assert runs["30% fake users", "next"]["exposure"] > runs["clean", "next"]["exposure"] + 0.05
