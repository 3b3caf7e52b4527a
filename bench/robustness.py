"""Robustness of the trained encoder to a promotion in its training data: the adversarial
objectives measured for what they are for (issue 23).

A leave-one-out dataset (ML-1M by default) is poisoned with fake users (``--fake-shares`` of the
real users), each a sequence of ``--fake-events`` items: ``--fake-targets`` of the ``--targets``
target items (drawn from items with 5 to 20 interactions) interleaved with filler drawn from the
50 most frequent items, the bandwagon profile of bench/attack.py. An encoder is trained on each
dataset (clean, and each poisoned one) with each of ``--objectives`` (``;``-separated lists of
``name:weight``), all with the same budget (``--minutes``) and seed, its checkpoint chosen on the
validation items of every user, fake ones included (a trainer does not know which are fake).
Runs are merged into ``--json`` by (data, objectives, ``--adv-eps``) when the data, targets and
seed are the same, so separate invocations add runs.

Reported for the real users only: test NDCG@10 and HR@10 (seen items filtered), and **target
exposure**: the share of real users whose top 10 for their test position holds a target item. The
trained encoder is what the stream serves where the gate chooses the model, and what the online
trainer starts from.

    python bench/robustness.py --minutes 5
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.data import FORMATS, SeqDataset, build_dataset, loo_split, read_sequences
from model.encoder import EncoderConfig, SeqEncoder
from model.evaluate import evaluate_model, seen_mask, user_vectors
from model.objectives import ObjectiveConfig
from model.pretrain import TrainConfig, pretrain

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAKE = "fake-"

log = logging.getLogger("robustness")


def poison(seqs: dict, share: float, targets: list[str], fillers: list[str], n_events: int, n_targets: int,
           rng: random.Random) -> dict:
    """``seqs`` with fake users added (never removed from the real ones)."""
    real = [u for u in seqs if not u.startswith(FAKE)]
    out = dict(seqs)
    for n in range(round(share * len(real))):
        items = rng.sample(targets, n_targets) + rng.sample(fillers, n_events - n_targets)
        rng.shuffle(items)
        out[f"{FAKE}{n}"] = [(item, "click") for item in items]
    return out


def real_users(ds: SeqDataset) -> SeqDataset:
    keep = [j for j, u in enumerate(ds.users) if not u.startswith(FAKE)]
    return SeqDataset(ds.vocab, [ds.users[j] for j in keep], [ds.items[j] for j in keep],
                      [ds.types[j] for j in keep], ds.categories)


def exposure(enc: SeqEncoder, ds: SeqDataset, targets: list[str], k: int = 10) -> float:
    """Share of ``ds``'s users whose top k at their test position (seen items filtered) holds a target."""
    split = loo_split(ds, "test")
    rows = torch.tensor([ds.vocab.row(t) for t in targets])
    W = enc.item_vectors().detach().float().cpu()
    exposed = 0
    for s in range(0, len(split.targets), 1024):
        inputs, types = split.inputs[s:s + 1024], split.input_types[s:s + 1024]
        scores = user_vectors(enc, inputs, types) @ W.T
        scores[seen_mask(inputs, W.shape[0])] = float("-inf")
        scores[:, 0] = float("-inf")  # padding
        top = scores.topk(k, dim=1).indices
        exposed += int(torch.isin(top, rows).any(dim=1).sum())
    return exposed / max(1, len(split.targets))


def one_run(ds: SeqDataset, real: SeqDataset, targets: list[str], objectives: dict, eps: float, args,
            work: str) -> dict:
    ecfg = EncoderConfig(dim=args.dim, n_layers=args.layers, n_heads=1, max_len=args.max_len, dropout=args.dropout)
    tcfg = TrainConfig(epochs=args.epochs, max_minutes=args.minutes, patience=args.patience, eval_every=1,
                       lr=args.lr, seed=args.seed, progress=False)
    summary = pretrain(ds, ecfg, ObjectiveConfig(weights=objectives, adv_eps=eps), tcfg, work)
    ck = load_checkpoint(os.path.join(work, "best.ckpt"))
    enc = SeqEncoder.from_state(EncoderConfig.from_dict(ck["config"]), ck["model"])
    res = evaluate_model(enc, real, "test")
    return {"objectives": objectives, "adv_eps": eps, "epochs": summary.get("epochs"),
            "best_epoch": ck["meta"].get("epoch"),
            "test": res["model"]["filtered"], "popular": res["popular"]["filtered"],
            "exposure": exposure(enc, real, targets)}


def key(run: dict) -> tuple:
    """What makes a run: its training data, objectives and perturbation size."""
    return run["data"], json.dumps(run["objectives"], sort_keys=True), run.get("adv_eps")


def parse_objectives(text: str, adv_eps: float) -> list[tuple[dict, float]]:
    """``name:weight[,name:weight][;...]``; ``adversarial:W@EPS`` sets that group's perturbation size."""
    out = []
    for group in text.split(";"):
        weights, eps = {}, adv_eps
        for name, _, weight in (x.partition(":") for x in group.split(",")):
            if name.strip():
                weight, _, at = (weight or "1").partition("@")
                weights[name.strip()] = float(weight)
                eps = float(at) if at else eps
        ObjectiveConfig(weights=weights, adv_eps=eps)  # a clear error for an unknown name or a bad eps
        out.append((weights, eps))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "ml-1m", "ml-1m.txt.gz"))
    p.add_argument("--format", default="ml1m", choices=FORMATS)
    p.add_argument("--fake-shares", default="0.1")
    p.add_argument("--fake-events", type=int, default=20)
    p.add_argument("--fake-targets", type=int, default=5)
    p.add_argument("--targets", type=int, default=5)
    p.add_argument("--objectives", default="next:1;next:1,adversarial:1@0.5;next:1,adversarial:1@0.05",
                   help="';'-separated objective lists, each name:weight[,name:weight]; adversarial:W@EPS "
                   "sets its perturbation size (default --adv-eps)")
    p.add_argument("--adv-eps", type=float, default=ObjectiveConfig().adv_eps)
    p.add_argument("--minutes", type=float, default=5.0, help="training budget of each run")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "robustness"))
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "robustness.json"))
    args = p.parse_args(argv)
    if not os.path.isfile(args.data):
        p.error(f"data file not found: {args.data}")
    try:
        objective_lists = parse_objectives(args.objectives, args.adv_eps)
    except ValueError as e:
        p.error(f"--objectives: {e}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    seqs = read_sequences(args.data, args.format)
    counts = Counter(item for s in seqs.values() for item, _ in s)
    rng = random.Random(args.seed)
    targets = rng.sample(sorted(i for i, c in counts.items() if 5 <= c <= 20), args.targets)
    fillers = [i for i, _ in counts.most_common(50)]
    datasets = {"clean": seqs}
    for share in (float(x) for x in args.fake_shares.split(",") if x.strip()):
        datasets[f"{share:.0%} fake users"] = poison(seqs, share, targets, fillers, args.fake_events,
                                                     args.fake_targets, rng)
    report = {"data": os.path.basename(args.data), "users": len(seqs), "targets": targets, "seed": args.seed,
              "runs": []}
    earlier = []  # runs of other invocations on the same data, targets and seed are kept
    if os.path.isfile(args.json):
        with open(args.json) as f:
            old = json.load(f)
        if all(old.get(k) == report[k] for k in ("data", "users", "targets", "seed")):
            earlier = old["runs"]
    t0 = time.time()
    for name, poisoned in datasets.items():
        ds = build_dataset(poisoned)
        real = real_users(ds)
        for objectives, eps in objective_lists:
            tag = "+".join(objectives) + (f"@{eps:g}" if "adversarial" in objectives else "")
            log.info("%s, %s: training %.0f min on %d users (%d fake)", name, tag, args.minutes, len(ds),
                     len(ds) - len(real))
            run = one_run(ds, real, targets, objectives, eps, args, os.path.join(args.workdir, f"{name[:3]}-{tag}"))
            run.update(data=name, fake_users=len(ds) - len(real), fake_events=args.fake_events,
                       fake_targets=args.fake_targets)
            log.info("%s, %s: exposure %.4f, NDCG@10 %.4f", name, tag, run["exposure"], run["test"]["NDCG@10"])
            report["runs"].append(run)
            mine = {key(r) for r in report["runs"]}
            runs = [r for r in earlier if key(r) not in mine] + report["runs"]
            report.update(machine=f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                          f"{args.threads} torch thread(s)", commit=commit,
                          command=" ".join(["python", os.path.relpath(sys.argv[0], ROOT)] + (argv or sys.argv[1:])),
                          wall_minutes=(time.time() - t0) / 60)
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({**report, "runs": runs}, f, indent=1)
    print(json.dumps([{k: r[k] for k in ("data", "objectives", "exposure")} | {"NDCG@10": r["test"]["NDCG@10"]}
                      for r in report["runs"]], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
