"""Backlog drain of a group of N workers on this one machine, against one worker (issue 7: where
more throughput per host comes from).

One embedded broker; a model version (untrained ``Recommender.fresh`` over ``--items`` items) is
announced, so recommendations come from the model. Each round starts a new consumer group of
``n`` workers (``--train false``), which reads everything produced so far (a fresh backlog of
``--events`` is added before each round), and measures the group's accepted events/s between 10 %
and 90 % of it. Rounds alternate, e.g. ``--rounds 1,2,1,2``, so a busy machine affects both sides.

    nice -n 5 .venv/bin/python bench/group_drain.py --events 30000 --rounds 1,2,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from streams.harness.procs import Worker, announce_model, client_settings, start_broker
from throughput import accepted, make_backlog, produce


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30_000, help="backlog added before each round")
    ap.add_argument("--rounds", default="1,2,1,2", help="workers per round, comma-separated")
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "group_drain.json"))
    args = ap.parse_args()
    report = {"command": "nice -n 5 .venv/bin/python bench/group_drain.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), Python "
                         f"{platform.python_version()}",
              "load_average_at_start": os.getloadavg(), "args": vars(args), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="group-drain-") as tmp:
        tmp = Path(tmp)
        broker = start_broker(tmp / "broker.log")
        try:
            from streams.kafka.topics import ensure_topics

            settings = client_settings(broker.bootstrap, args.partitions)
            ensure_topics(settings)
            announce_model(settings, tmp / "models", [f"sku-{i}" for i in range(args.items)], version=1)
            for r, n in enumerate(int(x) for x in args.rounds.split(",")):
                produce(settings, make_backlog(args.events, args.users, args.items, r, f"round{r}"))
                total = (r + 1) * args.events  # a new group reads everything produced so far
                workers = [Worker(broker.bootstrap, tmp / f"data-{r}-{k}", app_id=f"group{r}",
                                  partitions=args.partitions, log_path=tmp / f"worker-{r}-{k}.log")
                           for k in range(n)]
                for w in workers:
                    w.data_dir.mkdir()
                    w.start()
                for w in workers:
                    w.wait_ready()

                def done() -> float:
                    return sum(accepted(w.metrics() or {}) for w in workers)

                while done() < 0.1 * total:
                    time.sleep(0.2)
                t0, a0 = time.monotonic(), done()
                while done() < 0.9 * total and time.monotonic() - t0 < 600:
                    time.sleep(0.5)
                rate = (done() - a0) / (time.monotonic() - t0)
                report["rounds"].append({"workers": n, "events_in_topic": total, "events_per_s": round(rate, 1)})
                print(f"round {r}: {n} worker(s), {total} events in the topic: {rate:.0f} events/s", flush=True)
                for w in workers:
                    w.stop()
        finally:
            broker.stop()
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
