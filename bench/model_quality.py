"""Model quality benchmark: ML-1M leave-one-out full ranking, plus an objective ablation and the
Taobao purchase multi-task row.

Each row trains with ``model.pretrain.pretrain`` (checkpoint selected on validation NDCG@10), then
evaluates the selected checkpoint on the TEST split (full ranking over the whole catalogue, with and
without filtering seen items, popularity baseline in the same run). Rows write
``<workdir>/<row>/result.json``; every invocation then merges all rows found into ``--json`` and
draws their validation curves into ``--png``. Rows can therefore run in separate processes:

    python bench/model_quality.py --rows main --main-minutes 80
    python bench/model_quality.py --rows next,masked,contrastive,adversarial --ablation-minutes 10
    python bench/model_quality.py --rows taobao-next,taobao-purchase --ablation-minutes 6
    python bench/model_quality.py --rows none          # merge only
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time

import torch

from model.data import load_dataset
from model.encoder import TYPE_IDS, EncoderConfig, SeqEncoder
from model.checkpoint import load_checkpoint
from model.evaluate import evaluate_model
from model.heads import load_heads
from model.objectives import ObjectiveConfig
from model.pretrain import LR_SCHEDULES, WINDOWS, TrainConfig, pretrain

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PUBLISHED = {  # ML-1M, leave-one-out, full ranking: (HR@10, NDCG@10)
    "SASRec": (0.2500, 0.1341), "BERT4Rec": (0.2843, 0.1537),
    "SASRec+ (full CE)": (0.3152, 0.1821), "SASRec+ 3000 negatives": (0.3159, 0.1857),
}

ML1M_ENC = dict(dim=64, n_layers=2, n_heads=1, max_len=200, dropout=0.2, ffn_mult=4)
TAOBAO_ENC = dict(dim=64, n_layers=2, n_heads=1, max_len=50, dropout=0.2, ffn_mult=4)

ROWS = {
    # name: (dataset, objective weights, budget kind, extra objective settings)
    "main": ("ml1m", {"next": 1.0}, "main", {}),
    "next": ("ml1m", {"next": 1.0}, "ablation", {}),
    "masked": ("ml1m", {"next": 1.0, "masked": 0.3}, "ablation", {}),
    "contrastive": ("ml1m", {"next": 1.0, "masked": 0.3, "contrastive": 0.1}, "ablation", {}),
    "adversarial": ("ml1m", {"next": 1.0, "masked": 0.3, "contrastive": 0.1, "adversarial": 0.5},
                    "ablation", {}),
    "taobao-next": ("taobao", {"next": 1.0}, "ablation", {"n_negatives": 1000}),
    "taobao-purchase": ("taobao", {"next": 1.0, "purchase": 1.0}, "ablation", {"n_negatives": 1000}),
}


def run_row(name: str, args) -> dict:
    data_kind, weights, budget, extra = ROWS[name]
    path, fmt, enc_kw = ((args.data, "ml1m", ML1M_ENC) if data_kind == "ml1m"
                         else (args.taobao, "taobao", TAOBAO_ENC))
    minutes = args.main_minutes if budget == "main" else args.ablation_minutes
    ds = load_dataset(path, fmt)
    out_dir = os.path.join(args.workdir, name)
    overrides = {k: getattr(args, k) for k in ("dim", "n_layers", "n_heads", "dropout")
                 if getattr(args, k) is not None}
    ecfg = EncoderConfig(**{**enc_kw, **overrides})
    ocfg = ObjectiveConfig(weights=dict(weights), **extra)
    tcfg = TrainConfig(epochs=args.epochs, max_minutes=minutes, patience=args.patience,
                       eval_every=args.eval_every, lr=args.lr, batch_size=args.batch_size,
                       device=args.device, progress=False, lr_schedule=args.lr_schedule,
                       windows=args.windows, ema_decay=args.ema_decay, seed=args.seed)
    t0 = time.time()
    summary = pretrain(ds, ecfg, ocfg, tcfg, out_dir)
    ck = load_checkpoint(os.path.join(out_dir, "best.ckpt"))
    enc = SeqEncoder.from_state(EncoderConfig.from_dict(ck["config"]), ck["model"])
    result = {"row": name, "data": path, "format": fmt, "objectives": weights, "encoder": ck["config"],
              "budget_minutes": minutes, "train": {k: v for k, v in summary.items() if k != "history"},
              "history": summary["history"], "best_epoch": ck["meta"]["epoch"]}
    if data_kind == "ml1m":
        result["test"] = evaluate_model(enc, ds, "test")
    else:  # purchase HR@10: users whose held-out (last) event is a purchase
        buy = [TYPE_IDS["purchase"]]
        result["test_purchase_next_head"] = evaluate_model(enc, ds, "test", only_types=buy)
        if ck.get("heads"):
            heads = load_heads(ck["heads"], ck["head_names"], enc.cfg).eval()
            result["test_purchase_purchase_head"] = evaluate_model(
                enc, ds, "test", only_types=buy, query_fn=heads["purchase"].purchase_state, with_popularity=False)
    result["wall_minutes"] = (time.time() - t0) / 60
    result["command"] = " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    result["machine"] = machine()
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), "
            f"torch {torch.__version__}, {'cuda' if torch.cuda.is_available() else 'no GPU'}")


def merge(args) -> dict:
    rows = {}
    for name in ROWS:
        p = os.path.join(args.workdir, name, "result.json")
        if os.path.isfile(p):
            with open(p) as f:
                rows[name] = json.load(f)
    out = {"published_ml1m_hr10_ndcg10": PUBLISHED,
           "rows": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in rows.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    if rows:
        plot(rows, args.png)
    for name, r in rows.items():
        t = r.get("test") or r.get("test_purchase_next_head")
        print(name, json.dumps(t["model"]["filtered"]), "train min %.1f" % r["train"]["train_minutes"])
    return out


def plot(rows: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in rows.items():
        ev = [h for h in r["history"] if "val_ndcg10" in h]
        ax[0 if r["format"] == "ml1m" else 1].plot([h["minutes"] for h in ev], [h["val_ndcg10"] for h in ev],
                                                   label=f"{name} ({r['train'].get('device', '?')})")
    ax[0].set_title("ML-1M validation NDCG@10 (seen filtered)")
    ax[1].set_title("Taobao sample validation NDCG@10")
    for a in ax:
        a.set_xlabel("training minutes (device in the legend)")
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "ml-1m", "ml-1m.txt.gz"))
    p.add_argument("--taobao", default=os.path.join(ROOT, "..", "shared", "data", "taobao-userbehavior-sample",
                                                    "flink_ecommerce-time-slice", "UserBehavior.csv.gz"))
    p.add_argument("--rows", default="main", help=f"comma list of {', '.join(ROWS)}, or 'none'")
    p.add_argument("--main-minutes", type=float, default=80.0)
    p.add_argument("--ablation-minutes", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=15)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                   help="cosine: decay the learning rate to 1%% of --lr at the end of the time budget")
    p.add_argument("--windows", default="last", choices=WINDOWS,
                   help="all: also train on history older than max_len (last: the most recent window only)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="select a moving average of the weights (0 = the trained weights)")
    p.add_argument("--dim", type=int, help="encoder width (default: the dataset's preset)")
    p.add_argument("--n-layers", type=int, help="transformer blocks (default: the preset)")
    p.add_argument("--n-heads", type=int, help="attention heads (default: the preset)")
    p.add_argument("--dropout", type=float, help="dropout (default: the preset)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=42, help="seed of the weights' draw and the batch order")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "model_quality"))
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "model_quality.json"))
    p.add_argument("--png", default=os.path.join(ROOT, "bench", "results", "model_quality.png"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = [] if args.rows == "none" else [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        p.error(f"unknown rows {bad}; choose from {', '.join(ROWS)}")
    for r in rows:
        for path in (args.data if ROWS[r][0] == "ml1m" else args.taobao,):
            if not os.path.isfile(path):
                p.error(f"data file not found: {path}")
    for r in rows:
        run_row(r, args)
    merge(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
