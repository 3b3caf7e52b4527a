"""Prequential benchmark: online-updated vs frozen pretrained vs popularity, HR@10 over time.

For each dataset: pretrain on the early part of the stream (``model.pretrain`` APIs, short time
budget), then replay the rest test-then-train in chunks of 256 events (``model.prequential``).
Writes ``bench/results/prequential_<dataset>.json`` / ``.png`` and ``prequential.json`` (both rows)
and prints a markdown table. The pretraining checkpoints go to ``--workdir`` (not committed).

    nice -n 10 python bench/prequential.py                      # both datasets
    nice -n 10 python bench/prequential.py --datasets taobao

ML-1M replays everything after the 70 % prefix by default (~300,000 events, ~35 minutes of online
learning on 2 CPU cores); ``--ml1m-max-events N`` replays the first N only.

Tuning the online settings without scoring on the tuned stretch (ML-1M): reuse one pretrained
checkpoint, tune ``--lr``/``--steps`` on the first events after the prefix, then replay the
events after them with ``--skip-events`` (those only seed histories and counts):

    python bench/prequential.py --datasets ml1m --checkpoint CKPT --ml1m-max-events 10000 --lr 3e-3 --steps 4 \
        --results /tmp/tune --name-suffix _lr3e-3_s4
    python bench/prequential.py --datasets ml1m --checkpoint CKPT --skip-events 10000 --lr 3e-3 --steps 4 \
        --name-suffix _tuned
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from model.prequential import PrequentialConfig
from model.prequential_run import RunSpec, format_table, run

DATA = os.path.join(ROOT, "..", "shared", "data")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="ml1m,taobao")
    p.add_argument("--ml1m", default=os.path.join(DATA, "ml-1m", "ml-1m.txt.gz"))
    p.add_argument("--taobao", default=os.path.join(DATA, "taobao-userbehavior-sample",
                                                    "flink_ecommerce-time-slice", "UserBehavior.csv.gz"))
    p.add_argument("--ml1m-max-events", type=int, default=0, help="replay at most this many events (0: all)")
    p.add_argument("--skip-events", type=int, default=0,
                   help="events after the pretraining prefix that are context only, not replayed "
                        "(e.g. a stretch used to tune --lr/--steps)")
    p.add_argument("--checkpoint", default=None, help="pretrained checkpoint to reuse (no pretraining)")
    p.add_argument("--name-suffix", default="", help="appended to the result file names")
    p.add_argument("--ml1m-fraction", type=float, default=0.7)
    p.add_argument("--taobao-fraction", type=float, default=0.5)
    p.add_argument("--pretrain-minutes", type=float, default=4.0)
    p.add_argument("--taobao-negatives", type=int, default=1000, help="sampled softmax negatives (online, Taobao)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "prequential"))
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    os.makedirs(args.results, exist_ok=True)

    results = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        # Taobao: ~75k items, so the online updates use sampled softmax (1000 shared uniform
        # negatives), as full softmax over the grown table costs ~5 s per chunk on this CPU
        preq = PrequentialConfig(chunk=args.chunk, lr=args.lr, steps_per_update=args.steps,
                                 primary="exclude_seen" if name == "ml1m" else "allow_repeats",
                                 n_negatives=0 if name == "ml1m" else args.taobao_negatives,
                                 progress=not args.quiet)
        if name == "ml1m":
            spec = RunSpec(args.ml1m, "ml1m", args.workdir, pretrain_fraction=args.ml1m_fraction,
                           max_events=args.ml1m_max_events, skip_events=args.skip_events,
                           checkpoint=args.checkpoint, pretrain_minutes=args.pretrain_minutes,
                           encoder=dict(dim=64, n_layers=2, n_heads=1, max_len=50, dropout=0.2),
                           preq=preq, name="prequential_ml1m" + args.name_suffix)
        elif name == "taobao":
            spec = RunSpec(args.taobao, "taobao", args.workdir, pretrain_fraction=args.taobao_fraction,
                           pretrain_minutes=args.pretrain_minutes,
                           encoder=dict(dim=64, n_layers=2, n_heads=1, max_len=20, dropout=0.2),
                           preq=preq, name="prequential_taobao")
        else:
            p.error(f"unknown dataset {name!r}")
        res = run(spec)
        # small files only under bench/results: copy the JSON and PNG there
        for ext in ("json", "png"):
            src = os.path.join(args.workdir, f"{spec.name}.{ext}")
            dst = os.path.join(args.results, f"{spec.name}.{ext}")
            if not os.path.samefile(args.workdir, args.results):  # (opening dst would empty src)
                shutil.copyfile(src, dst)
        results[name] = res
        print(format_table({name: res}), flush=True)

    summary = {"machine": {"cpus": os.cpu_count(), "torch_threads": args.threads,
                           "gpu": torch.cuda.is_available(), "python": platform.python_version(),
                           "torch": torch.__version__},
               "command": "python bench/prequential.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "rows": {k: {kk: v[kk] for kk in ("hr", "hr_warm", "hr_cold", "hr_exclude_seen", "hr_allow_repeats",
                                                 "online_over_frozen", "online_over_frozen_warm", "events",
                                                 "cold_events", "fallback_events", "target_unknown_to_model",
                                                 "primary", "pretrain", "seconds", "wall_minutes")}
                        for k, v in results.items()}}
    out = os.path.join(args.results, "prequential.json")
    old = {}
    if os.path.isfile(out):
        with open(out) as f:
            old = json.load(f).get("rows", {})
    summary["rows"] = {**old, **summary["rows"]}
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
