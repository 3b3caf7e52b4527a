"""Multi-task purchase prediction on the Taobao sample: pretrain next-item, fine-tune the purchase
task, against the next-item model alone (issue 21's multi-task target).

For each ``--seeds``: ``model.pretrain.pretrain`` (next-item, sampled softmax) on the leave-one-out
training part, then ``model.finetune.finetune`` with task ``purchase`` (the next-item loss beside
it at weight 1), encoder trained at ``--encoder-lr-scale``, and once with the encoder frozen.
Every checkpoint is chosen on validation; the test split is read once per configuration:

- purchase ranking: HR@10 / NDCG@10 of the next purchased item, for users whose last event is a
  purchase (the next-item model ranks with its user vector, the fine-tuned one with its purchase query);
- click ranking: HR@10 / NDCG@10 of the next item, all test users (seen items filtered);
- purchase propensity of each test event (was it a purchase?): AUC and log-loss, beside an item
  popularity propensity (each item's smoothed purchase share in the training events).

    python bench/purchase_task.py --seeds 1,2 --pretrain-minutes 5 --finetune-minutes 4
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
from model.data import load_dataset
from model.encoder import EncoderConfig, SeqEncoder
from model.evaluate import evaluate_model
from model.finetune import FinetuneConfig, finetune, purchase_figures
from model.heads import load_heads
from model.objectives import ObjectiveConfig
from model.pretrain import TrainConfig, pretrain

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TAOBAO = os.path.join(ROOT, "..", "shared", "data", "taobao-userbehavior-sample", "flink_ecommerce-time-slice",
                      "UserBehavior.csv.gz")
CONFIGS = ("next-item", "purchase, encoder trained", "purchase, encoder frozen")

log = logging.getLogger("purchase_task")


def figures(path: str, ds) -> dict:
    ck = load_checkpoint(path)
    enc = SeqEncoder.from_state(EncoderConfig.from_dict(ck["config"]), ck["model"])
    click = evaluate_model(enc, ds, "test", with_popularity=False)["model"]["filtered"]
    heads = load_heads(ck["heads"], ck["head_names"], enc.cfg)   # None for the next-item model
    return {"click_hr10": click["HR@10"], "click_ndcg10": click["NDCG@10"], "epoch": ck["meta"].get("epoch"),
            **purchase_figures(enc, heads, ds, "test")}


def popularity_baseline(f: dict) -> dict:
    """The popularity propensity's figures, from any model's test figures (they are the same)."""
    return {"auc": f["popularity_auc"], "log_loss": f["popularity_log_loss"], "events": f["events"],
            "purchases": f["purchases"]}


def run_seed(seed: int, args, ds) -> dict:
    work = os.path.join(args.workdir, f"s{seed}")

    def tcfg(minutes: float) -> TrainConfig:
        return TrainConfig(epochs=args.epochs, max_minutes=minutes, patience=args.patience, lr=args.lr,
                           seed=seed, progress=False)

    log.info("seed %d: pretraining next-item for %.0f min", seed, args.pretrain_minutes)
    ecfg = EncoderConfig(dim=args.dim, n_layers=args.layers, max_len=args.max_len, dropout=args.dropout)
    pre = pretrain(ds, ecfg, ObjectiveConfig(n_negatives=args.negatives), tcfg(args.pretrain_minutes),
                   os.path.join(work, "next"))
    best = os.path.join(work, "next", "best.ckpt")
    row = {"seed": seed, "next-item": {"train": {k: v for k, v in pre.items() if k != "history"},
                                       "test": figures(best, ds)}}
    for name, mode in zip(CONFIGS[1:], ("train", "frozen")):
        log.info("seed %d: fine-tuning the purchase task, encoder %s", seed, mode)
        out = os.path.join(work, mode)
        s = finetune(ds, best, FinetuneConfig(task="purchase", encoder=mode, encoder_lr_scale=args.encoder_lr_scale,
                                              n_negatives=args.negatives), tcfg(args.finetune_minutes), out)
        row[name] = {"train": {k: v for k, v in s.items() if k != "history"},
                     "test": figures(os.path.join(out, "best.ckpt"), ds)}
    log.info("seed %d: %s", seed, {c: {k: round(v, 4) for k, v in row[c]["test"].items()
                                       if k in ("purchase_hr10", "click_hr10", "auc")} for c in CONFIGS})
    return row


def summary(rows: list[dict]) -> dict:
    out: dict = {}
    for c in CONFIGS:
        for k in ("purchase_hr10", "purchase_ndcg10", "click_hr10", "click_ndcg10", "auc", "log_loss"):
            vals = [r[c]["test"][k] for r in rows if k in r[c]["test"]]
            if vals:
                out[f"{c}: {k}"] = float(np.mean(vals))
    nxt = out["next-item: purchase_hr10"]
    out["purchase HR@10, trained / next-item"] = out["purchase, encoder trained: purchase_hr10"] / nxt if nxt else None
    out["click HR@10, trained / next-item"] = (out["purchase, encoder trained: click_hr10"]
                                               / out["next-item: click_hr10"])
    return out


def plot(rows: list[dict], base: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(CONFIGS))
    for i, r in enumerate(rows):
        w = 0.8 / len(rows)
        ax[0].bar(x + i * w, [r[c]["test"]["purchase_hr10"] for c in CONFIGS], w, label=f"seed {r['seed']}")
        ax[1].bar(x[1:] + i * w, [r[c]["test"]["auc"] for c in CONFIGS[1:]], w, label=f"seed {r['seed']}")
    ax[1].axhline(base["auc"], color="grey", ls=":", label="popularity propensity")
    ax[0].set_title("purchase HR@10 (next purchased item)")
    ax[1].set_title("purchase propensity AUC (test events)")
    for a, n in ((ax[0], len(CONFIGS)), (ax[1], len(CONFIGS) - 1)):
        a.set_xticks(np.arange(len(CONFIGS))[-n:] + 0.2, [c.replace(", ", "\n") for c in CONFIGS[-n:]], fontsize=8)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=TAOBAO)
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--pretrain-minutes", type=float, default=5.0)
    p.add_argument("--finetune-minutes", type=float, default=4.0)
    p.add_argument("--encoder-lr-scale", type=float, default=FinetuneConfig().encoder_lr_scale)
    p.add_argument("--negatives", type=int, default=1000, help="sampled softmax negatives (~75k items)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "purchase_task"))
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "purchase_task.json"))
    p.add_argument("--png", default=os.path.join(ROOT, "bench", "results", "purchase_task.png"))
    args = p.parse_args(argv)
    if not os.path.isfile(args.data):
        p.error(f"data file not found: {args.data}")
    torch.set_num_threads(args.threads)
    # the code this run imported: HEAD now, not when a result is written (a run takes tens of minutes)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ds = load_dataset(args.data, "taobao")
    t0, rows = time.time(), []
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        rows.append(run_seed(seed, args, ds))
        base = popularity_baseline(rows[0]["next-item"]["test"])
        report = {"data": os.path.basename(args.data), "users": len(ds), "items": len(ds.vocab) - 1,
                  "popularity_propensity": base, "rows": rows, "summary": summary(rows),
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                             f"{args.threads} torch thread(s), {'cuda' if torch.cuda.is_available() else 'CPU'}",
                  "commit": commit,
                  "command": " ".join(["python", os.path.relpath(sys.argv[0], ROOT)] + (argv or sys.argv[1:])),
                  "wall_minutes": (time.time() - t0) / 60}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        plot(rows, base, args.png)
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
