"""Encoder sweep on ML-1M: several ``bench/model_quality.py`` runs side by side, the winner chosen
on VALIDATION NDCG@10 and only then read on test.

Each configuration is one ``model_quality.py`` process (its own work folder, log and result), so on
a GPU machine many small encoders share the card and its CPU cores; on the 2-core box run one or two
at a time. The summary (``--json``) lists every configuration with its best validation score and the
test figures of its validation-selected checkpoint, and names the configuration with the best
validation score; ``--png`` draws every configuration's validation curve.

    python bench/model_sweep.py --configs d64,d128-drop03 --minutes 8 --parallel 2
    python bench/model_sweep.py --configs all --minutes 8 --parallel 10 --workdir runs/sweep
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name: (model_quality row, extra arguments). The "main" row trains next-item full-softmax CE alone;
# "masked" and "contrastive" add those objectives (weights in model_quality.ROWS).
CONFIGS = {
    "d64": ("main", []),
    "d64-all": ("main", ["--windows", "all"]),
    "d64-masked": ("masked", []),
    "d128-drop03": ("main", ["--dim", "128", "--n-heads", "2", "--dropout", "0.3"]),
    "d128-drop05": ("main", ["--dim", "128", "--n-heads", "2", "--dropout", "0.5"]),
    "d128-l3-drop03": ("main", ["--dim", "128", "--n-layers", "3", "--n-heads", "2", "--dropout", "0.3"]),
    "d128-l3-drop03-all": ("main", ["--dim", "128", "--n-layers", "3", "--n-heads", "2", "--dropout", "0.3",
                                    "--windows", "all"]),
    "d128-l4-drop03-all": ("main", ["--dim", "128", "--n-layers", "4", "--n-heads", "2", "--dropout", "0.3",
                                    "--windows", "all"]),
    "d128-l4-drop03-all-seed7": ("main", ["--dim", "128", "--n-layers", "4", "--n-heads", "2", "--dropout", "0.3",
                                          "--windows", "all", "--seed", "7"]),
    "d128-l4-drop04-all": ("main", ["--dim", "128", "--n-layers", "4", "--n-heads", "2", "--dropout", "0.4",
                                    "--windows", "all"]),
    "d128-l6-drop03-all": ("main", ["--dim", "128", "--n-layers", "6", "--n-heads", "2", "--dropout", "0.3",
                                    "--windows", "all"]),
    "d256-l4-drop04-all": ("main", ["--dim", "256", "--n-layers", "4", "--n-heads", "4", "--dropout", "0.4",
                                    "--windows", "all"]),
    "d128-drop03-all": ("main", ["--dim", "128", "--n-heads", "2", "--dropout", "0.3", "--windows", "all"]),
    "d128-masked-drop03": ("masked", ["--dim", "128", "--n-heads", "2", "--dropout", "0.3"]),
    "d256-drop03": ("main", ["--dim", "256", "--n-heads", "4", "--dropout", "0.3"]),
    "d256-drop05": ("main", ["--dim", "256", "--n-heads", "4", "--dropout", "0.5"]),
    "d128-drop04": ("main", ["--dim", "128", "--n-heads", "2", "--dropout", "0.4"]),
    "d256-l3-drop05": ("main", ["--dim", "256", "--n-layers", "3", "--n-heads", "4", "--dropout", "0.5"]),
}


def launch(name: str, args) -> tuple[subprocess.Popen, str]:
    row, extra = CONFIGS[name]
    work = os.path.join(args.workdir, name)
    os.makedirs(work, exist_ok=True)
    cmd = [sys.executable, os.path.join(HERE, "model_quality.py"), "--rows", row,
           "--main-minutes", str(args.minutes), "--ablation-minutes", str(args.minutes),
           "--epochs", str(args.epochs), "--patience", str(args.patience), "--threads", str(args.threads),
           "--seed", str(args.seed), "--data", args.data, "--workdir", work,
           "--json", os.path.join(work, "model_quality.json"), "--png", os.path.join(work, "model_quality.png"),
           *extra, *args.extra]
    log = open(os.path.join(work, "log.txt"), "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), row


def summarize(name: str, row: str, args) -> dict:
    path = os.path.join(args.workdir, name, row, "result.json")
    if not os.path.isfile(path):
        return {"config": name, "error": f"no result (see {os.path.join(args.workdir, name, 'log.txt')})"}
    with open(path) as f:
        r = json.load(f)
    test = r["test"]["model"]["filtered"]
    return {"config": name, "args": CONFIGS[name][1] + args.extra, "objectives": r["objectives"],
            "encoder": r["encoder"], "val_ndcg10": r["train"]["best_val_ndcg10"],
            "epochs": r["train"]["epochs"], "best_epoch": r["best_epoch"],
            "train_minutes": r["train"]["train_minutes"], "stop_reason": r["train"]["stop_reason"],
            "device": r["train"]["device"], "test_filtered": test,
            "test_unfiltered": r["test"]["model"]["all"], "machine": r["machine"],
            "curve": [(h["minutes"], h["val_ndcg10"]) for h in r["history"] if "val_ndcg10" in h]}


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        if r.get("curve"):
            ax.plot(*zip(*r["curve"]), label=f"{r['config']} ({r['val_ndcg10']:.4f})")
    ax.set_xlabel("training minutes (configurations ran side by side)")
    ax.set_ylabel("validation NDCG@10 (seen filtered)")
    ax.set_title("ML-1M encoder sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="all", help=f"comma list of {', '.join(CONFIGS)}, or 'all'")
    p.add_argument("--minutes", type=float, default=8.0, help="training budget per configuration")
    p.add_argument("--parallel", type=int, default=2, help="configurations trained at once")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--patience", type=int, default=25, help="validations without improvement before stopping")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per configuration")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "ml-1m", "ml-1m.txt.gz"))
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "model_sweep"))
    p.add_argument("--json", default=os.path.join(ROOT, "docs", "probes", "model_sweep.json"))
    p.add_argument("--png", default=os.path.join(ROOT, "docs", "probes", "model_sweep.png"))
    p.add_argument("extra", nargs="*", help="after --: more model_quality.py arguments for every configuration")
    args = p.parse_args(argv)
    names = list(CONFIGS) if args.configs == "all" else [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    if bad:
        p.error(f"unknown configurations {bad}; choose from {', '.join(CONFIGS)}")
    if not os.path.isfile(args.data):
        p.error(f"data file not found: {args.data}")

    t0, queue, running, rows = time.time(), list(names), {}, {}
    while queue or running:
        while queue and len(running) < args.parallel:
            name = queue.pop(0)
            running[name], rows[name] = launch(name, args)
            print(f"[{(time.time() - t0) / 60:5.1f} min] started {name}", flush=True)
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                s = summarize(name, rows[name], args)
                print(f"[{(time.time() - t0) / 60:5.1f} min] {name}: exit {proc.returncode}, "
                      + (s.get("error") or f"val NDCG@10 {s['val_ndcg10']:.4f}, epochs {s['epochs']}"),
                      flush=True)
    results = [summarize(n, rows[n], args) for n in names]
    done = [r for r in results if "error" not in r]
    best = max(done, key=lambda r: r["val_ndcg10"])["config"] if done else None
    out = {"selected_on_validation": best, "minutes_per_config": args.minutes, "parallel": args.parallel,
           "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + (argv if argv is not None else sys.argv[1:])),
           "wall_minutes": (time.time() - t0) / 60, "configs": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    plot(done, args.png)
    print(f"{'config':22s} {'val N@10':>8s} {'test HR@10':>10s} {'test N@10':>9s} {'HR@20':>6s} "
          f"{'N@20':>6s} {'epochs':>9s} {'min':>5s}")
    for r in sorted(done, key=lambda r: -r["val_ndcg10"]):
        t = r["test_filtered"]
        print(f"{r['config']:22s} {r['val_ndcg10']:8.4f} {t['HR@10']:10.4f} {t['NDCG@10']:9.4f} "
              f"{t['HR@20']:6.4f} {t['NDCG@20']:6.4f} {r['epochs']:4d}({r['best_epoch']:3d}) "
              f"{r['train_minutes']:5.1f}")
    print("selected on validation:", best)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
