"""Low-data transfer: pretrain on most users, fine-tune on the few others, against training from
scratch on those few (issue 21's transfer setting).

The users of a leave-one-out dataset (ML-1M by default) are split once (``--split-seed``) into a
pretraining part (``--pretrain-fraction``, 90 %) and a downstream part. For each ``--seeds``:

1. ``pretrain``: ``model.pretrain.pretrain`` on the pretraining users with ``--objectives``
   (checkpoint chosen on *their* validation items), ``--pretrain-minutes``;
2. ``zero-shot``: that checkpoint on the downstream users as it is;
3. ``finetune``: ``model.finetune.finetune`` (task next) on the downstream users, encoder trained at
   ``--encoder-lr-scale`` of the learning rate, and ``frozen`` (item table only);
4. ``scratch``: a fresh encoder of the same shape trained on the downstream users only.

Steps 3 and 4 have the same budget (``--finetune-minutes``, epochs, patience) and choose their
checkpoint on the downstream users' validation items; the downstream test items are read once per
configuration. Rows are merged into ``--json`` by (objectives, seed), so separate invocations add
rows; ``--png`` draws test NDCG@10 per configuration.

    python bench/transfer.py --seeds 1,2 --pretrain-minutes 20 --finetune-minutes 4
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.data import FORMATS, load_dataset, split_users
from model.encoder import EncoderConfig, SeqEncoder
from model.evaluate import evaluate_model
from model.finetune import FinetuneConfig, finetune
from model.objectives import ObjectiveConfig
from model.pretrain import TrainConfig, pretrain

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = ("zero-shot", "finetune", "frozen", "scratch")

log = logging.getLogger("transfer")


def test_figures(path: str, ds) -> dict:
    ck = load_checkpoint(path)
    enc = SeqEncoder.from_state(EncoderConfig.from_dict(ck["config"]), ck["model"])
    res = evaluate_model(enc, ds, "test")
    return {"model": res["model"]["filtered"], "popular": res["popular"]["filtered"], "users": res["users"],
            "epoch": ck["meta"].get("epoch"), "stage": ck["stage"]}


def summary_of(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "history"}


def run_seed(seed: int, objectives: dict, args, big, small) -> dict:
    tag = "+".join(f"{k}{v:g}" for k, v in objectives.items())
    work = os.path.join(args.workdir, f"{tag}-s{seed}")
    ecfg = dict(dim=args.dim, n_layers=args.layers, n_heads=1, max_len=args.max_len, dropout=args.dropout)

    def tcfg(minutes: float, patience: int) -> TrainConfig:
        return TrainConfig(epochs=args.epochs, max_minutes=minutes, patience=patience, eval_every=1,
                           lr=args.lr, seed=seed, progress=False)

    row: dict = {"objectives": objectives, "seed": seed}
    log.info("seed %d: pretraining on %d users with %s for %.0f min", seed, len(big), objectives,
             args.pretrain_minutes)
    pre = pretrain(big, EncoderConfig(**ecfg), ObjectiveConfig(weights=objectives), tcfg(args.pretrain_minutes, 15),
                   os.path.join(work, "pretrain"))
    best = os.path.join(work, "pretrain", "best.ckpt")
    row["pretrain"] = summary_of(pre)
    row["zero-shot"] = {"test": test_figures(best, small)}
    for name, mode in (("finetune", "train"), ("frozen", "frozen")):
        log.info("seed %d: fine-tuning (encoder %s) on %d users", seed, mode, len(small))
        s = finetune(small, best, FinetuneConfig(task="next", encoder=mode, encoder_lr_scale=args.encoder_lr_scale),
                     tcfg(args.finetune_minutes, args.patience), os.path.join(work, name))
        row[name] = {"train": summary_of(s), "test": test_figures(os.path.join(work, name, "best.ckpt"), small)}
    log.info("seed %d: training from scratch on %d users", seed, len(small))
    s = pretrain(small, EncoderConfig(**ecfg), ObjectiveConfig(weights={"next": 1.0}),
                 tcfg(args.finetune_minutes, args.patience), os.path.join(work, "scratch"))
    row["scratch"] = {"train": summary_of(s), "test": test_figures(os.path.join(work, "scratch", "best.ckpt"), small)}
    log.info("seed %d: test NDCG@10 %s", seed,
             {c: round(row[c]["test"]["model"]["NDCG@10"], 4) for c in CONFIGS})
    return row


def ratios(rows: list[dict]) -> dict:
    """Per objectives: mean test NDCG@10/HR@10 of each configuration over seeds, and fine-tune / scratch."""
    out: dict = {}
    for r in rows:
        key = "+".join(f"{k}:{v:g}" for k, v in r["objectives"].items())
        out.setdefault(key, {"seeds": []})["seeds"].append(r["seed"])
        for c in CONFIGS:
            for m in ("NDCG@10", "HR@10"):
                out[key].setdefault(f"{c} {m}", []).append(r[c]["test"]["model"][m])
    for key, v in out.items():
        for k in [k for k in v if k != "seeds"]:
            v[k] = float(np.mean(v[k]))
        v["finetune / scratch NDCG@10"] = v["finetune NDCG@10"] / v["scratch NDCG@10"]
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        ys = [r[c]["test"]["model"]["NDCG@10"] for c in CONFIGS]
        label = "+".join(r["objectives"]) + f", seed {r['seed']}"
        ax.bar(np.arange(len(CONFIGS)) + i * width, ys, width, label=label)
    if rows:
        ax.axhline(rows[0]["scratch"]["test"]["popular"]["NDCG@10"], color="grey", ls=":", label="popularity")
    ax.set_xticks(np.arange(len(CONFIGS)) + 0.4 - width / 2, CONFIGS)
    ax.set_ylabel("test NDCG@10 (seen filtered)")
    ax.set_title("downstream users: pretrained elsewhere vs trained on them alone")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def earlier_rows(path: str, report: dict) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        old = json.load(f)
    same = all(old.get(k) == report[k] for k in ("data", "users", "downstream_users"))
    return [r for r in old.get("rows", []) if same and r not in report["rows"]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "ml-1m", "ml-1m.txt.gz"))
    p.add_argument("--format", default="ml1m", choices=FORMATS)
    p.add_argument("--pretrain-fraction", type=float, default=0.9)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--objectives", default="next:1", help="pretraining objectives, name:weight[,name:weight]")
    p.add_argument("--pretrain-minutes", type=float, default=20.0)
    p.add_argument("--finetune-minutes", type=float, default=4.0, help="fine-tune and scratch budget each")
    p.add_argument("--encoder-lr-scale", type=float, default=FinetuneConfig().encoder_lr_scale)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=10, help="fine-tune and scratch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "transfer"))
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "transfer.json"))
    p.add_argument("--png", default=os.path.join(ROOT, "bench", "results", "transfer.png"))
    args = p.parse_args(argv)
    if not os.path.isfile(args.data):
        p.error(f"data file not found: {args.data}")
    torch.set_num_threads(args.threads)
    # the code this run imported: HEAD now, not when a result is written (a run takes tens of minutes)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        objectives = {n: float(w or 1) for n, _, w in (x.strip().partition(":") for x in args.objectives.split(","))}
        ObjectiveConfig(weights=objectives)
    except ValueError as e:
        p.error(f"--objectives: {e}")
    ds = load_dataset(args.data, args.format)
    big, small = split_users(ds, args.pretrain_fraction, args.split_seed)
    report = {"data": os.path.basename(args.data), "users": len(ds), "pretrain_users": len(big),
              "downstream_users": len(small), "rows": []}
    t0 = time.time()
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        row = run_seed(seed, objectives, args, big, small)
        # the rows other runs wrote meanwhile (same data and split) are kept: runs may go side by side
        rows = earlier_rows(args.json, report) + report["rows"]
        report["rows"] = [r for r in rows if (r["objectives"], r["seed"]) != (objectives, seed)] + [row]
        report.update(
            summary=ratios(report["rows"]), machine=f"{platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {args.threads} torch thread(s), {'cuda' if torch.cuda.is_available() else 'CPU'}",
            commit=commit,
            command=" ".join(["python", os.path.relpath(sys.argv[0], ROOT)] + (argv or sys.argv[1:])),
            wall_minutes=(time.time() - t0) / 60)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        plot(report["rows"], args.png)
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
