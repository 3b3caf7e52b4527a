"""Fuzzed messages through a running worker at full size (issue 7 item 2): ``--messages``
(default 10,000) hypothesis-drawn messages plus ~10 % control events, sent in one batch to one
worker on the embedded broker; checks as in tests/integration/test_fuzz_dlq.py (which sends
~2,000). Writes bench/results/fuzz_dlq.json and .png (worker RSS over the run).

    nice -n 5 .venv/bin/python bench/fuzz_dlq.py --messages 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from streams.harness.fuzz import rss_growth_mib, run_fuzz

RESULTS = ROOT / "bench" / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=str(RESULTS / "fuzz_dlq"))
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fuzz-bench-") as tmp:
        result = run_fuzz(Path(tmp), args.messages, seed_value=args.seed, process_timeout=600,
                          log=lambda msg: print(msg, flush=True))
    first, peak, last = rss_growth_mib(result)
    report = {
        "command": "nice -n 5 .venv/bin/python bench/fuzz_dlq.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU, Python "
                   f"{platform.python_version()}",
        "fuzzed_messages": args.messages, "sent_with_controls": result.sent, "kinds": result.kinds,
        "expected_dlq_by_reason": dict(sorted(result.expected_dlq.items())),
        "dlq_distinct_by_reason": dict(sorted(result.dlq_reasons.items())),
        "dlq_records": result.dlq_records, "dlq_duplicate_records": result.dlq_duplicates,
        "dlq_raw_matches": result.dlq_raw_ok,
        "valid_distinct": result.valid_distinct, "valid_duplicates_sent": result.duplicates_expected,
        "accepted_plus_duplicate": result.accepted_plus_duplicate,
        "control_users_exact": result.control_ok, "worker_same_pid_alive": result.pid_same and result.alive,
        "health_at_end": result.health,
        "rss_mib": {"first": round(first, 1), "max": round(peak, 1), "last": round(last, 1)},
        "send_s": round(result.send_s, 1), "processed_after_s": round(result.process_s, 1),
        "problems": result.problems(),
    }
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t for t, _ in result.rss_kib], [v / 1024 for _, v in result.rss_kib])
    ax.axvline(result.send_s, color="grey", ls="--", label="batch sent")
    ax.set_xlabel("seconds since the batch started")
    ax.set_ylabel("worker RSS (MiB)")
    ax.set_title(f"{result.sent} fuzzed + control messages through one worker")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=110)
    print(json.dumps(report, indent=2))
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
