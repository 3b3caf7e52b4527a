"""Crash recovery under SIGKILL (issue 7 item 1).

One embedded broker (started here, kept for the whole run); one worker (``--train false`` by
default: the trainer competes for the 2 shared cores and is not what is tested here) SIGKILLed
``--kills`` times while a producer sends ``--events`` messages (unique event_ids, ~2 % malformed
of every DLQ reason, ~1 % unkeyed so the worker re-keys them) at ``--rate``/s; after every kill the
worker is restarted at once with the same --data-dir and --http-port. After the drain:

- every user's ``n`` (GET /users/{id}/) equals the distinct valid events sent for the user;
- the DLQ holds exactly the malformed messages (reasons and raw bytes, one per source offset;
  records written twice for one source offset — at-least-once — are counted and reported);
- recommendations resume after every restart (first record emitted after the kill).

Recovery time per restart: kill → /health/ lists partitions, and kill → first recommendation.
Writes bench/results/crash_recovery.json and .png.

    nice -n 5 .venv/bin/python bench/crash_recovery.py --events 50000 --kills 5
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from streams.harness.crash import run_crash_scenario, summary

RESULTS = ROOT / "bench" / "results"


def plot(result, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    t = [p[0] for p in result.progress]
    ax1.plot(t, [p[1] for p in result.progress], label="messages sent")
    ax1.plot(t, [p[2] for p in result.progress], label="recommendation records seen")
    for i, r in enumerate(result.restarts):
        k = r.kill_wall - result.start_wall
        ax1.axvline(k, color="red", lw=0.8, label="SIGKILL" if i == 0 else None)
        if r.ready_s is not None:
            ax1.axvspan(k, k + r.ready_s, color="red", alpha=0.12)
    ax1.set_xlabel("seconds since the producer started")
    ax1.set_ylabel("count")
    ax1.set_title("progress (shaded: kill → /health/ ready)")
    ax1.legend(loc="upper left")
    idx = list(range(1, len(report["restarts"]) + 1))
    ready = [r["ready_s"] or 0 for r in report["restarts"]]
    first = [r["first_recommendation_s"] or 0 for r in report["restarts"]]
    w = 0.38
    ax2.bar([i - w / 2 for i in idx], ready, w, label="kill → /health/ ready (partitions)")
    ax2.bar([i + w / 2 for i in idx], first, w, label="kill → first new recommendation")
    ax2.set_xlabel("restart")
    ax2.set_ylabel("seconds")
    ax2.set_xticks(idx)
    ax2.set_title("recovery time per SIGKILL")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--rate", type=float, default=600.0, help="producer messages/s")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--up-min", type=float, default=4.0, help="seconds a worker runs before a kill (min)")
    ap.add_argument("--up-max", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(RESULTS / "crash_recovery"))
    ap.add_argument("--keep-log", help="also copy the worker's log (every start of it) to this file")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="crash-bench-") as tmp:
        result = run_crash_scenario(Path(tmp), total=args.events, users=args.users, kills=args.kills,
                                    rate=args.rate, partitions=args.partitions,
                                    up_s=(args.up_min, args.up_max), seed=args.seed, drain_timeout=600,
                                    log=lambda msg: print(msg, flush=True))
        worker_log = (Path(tmp) / "worker.log").read_text(errors="replace")
    if args.keep_log:
        Path(args.keep_log).write_text(worker_log)
    report = summary(result)
    report.update({
        "command": "nice -n 5 .venv/bin/python bench/crash_recovery.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores (shared), no GPU, "
                   f"Python {platform.python_version()}",
        "worker_flags": "--train false",
        "producer_rate": args.rate,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "worker_log_warnings": sum(1 for line in worker_log.splitlines() if "WARNING" in line),
        "worker_log_errors": sum(1 for line in worker_log.splitlines() if "ERROR" in line),
        "worker_log_error_lines": [line[:500] for line in worker_log.splitlines() if "ERROR" in line][:20],
    })
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    plot(result, report, Path(args.out + ".png"))
    print(json.dumps({k: v for k, v in report.items() if k != "last_worker_events_total"}, indent=2))
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
