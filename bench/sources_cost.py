"""What the quality gate and the co-visitation source cost: the same worker with them on and off,
alternating rounds in one run, on one embedded broker.

A model version (untrained, over ``--items`` items: serving it costs what a trained one costs) is
announced and a backlog of ``--events`` valid events is produced once. Each round starts a fresh
worker (``--train false``, a new consumer group, so it reads the backlog from the beginning) with
the sources on (the defaults: ``--serving-gate true --covisit true``) or off (``--serving-gate
false --covisit false``: the model where it has an answer, else popularity), in the order
on, off, off, on, ... so that drift of the shared machine falls on both. Per round: the drain
rate (accepted events / s from the first to the last), the worker's CPU µs per event over the
drain (user + system of its process tree), then ``--paced-s`` seconds of new events paced at
``--paced-rate``: the event → recommendation p50/p99 from the worker's histogram over that phase.

    nice -n 5 .venv/bin/python bench/sources_cost.py --events 30000 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from throughput import make_backlog, produce  # bench/throughput.py (bench/ is on the path of a script in it)

from streams.metrics import histogram_quantile
from streams.harness.procs import Worker, announce_model, client_settings, start_broker
from streams.kafka.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
HIST = "streamrec_event_to_recommendation_seconds"
CONFIGS = {"on": ["--serving-gate", "true", "--covisit", "true"],
           "off": ["--serving-gate", "false", "--covisit", "false"]}


def accepted(metrics: dict) -> float:
    return metrics.get('streamrec_events_total{outcome="accepted"}', 0.0)


def one_round(n: int, config: str, broker, settings, data: Path, args, backlog_total: int) -> dict:
    worker = Worker(broker.bootstrap, data / f"round{n}", app_id=f"cost{n}", partitions=args.partitions,
                    log_path=data / f"worker{n}.log", extra=CONFIGS[config]).start()
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 120  # measured from the moment the model serves
        while (worker.health() or {}).get("model_version", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        first_at, first_done, cpu_at = time.monotonic(), accepted(worker.metrics()), worker.cpu_seconds()
        if first_done > backlog_total / 2:
            raise RuntimeError(f"{first_done:.0f} of {backlog_total} events drained before the model served: "
                               "give a longer --events")
        deadline = time.monotonic() + 600
        while accepted(worker.metrics()) < backlog_total and time.monotonic() < deadline:
            time.sleep(0.1)
        took, cpu = time.monotonic() - first_at, worker.cpu_seconds() - cpu_at
        drained = accepted(worker.metrics()) - first_done
        before = worker.metrics()
        produce(settings, make_backlog(int(args.paced_rate * args.paced_s), args.users, args.items, 100 + n,
                                       f"paced{n}"), rate=args.paced_rate)
        time.sleep(2.0)
        after = worker.metrics()
        result = {"round": n, "config": config, "drained": int(drained), "drain_s": round(took, 2),
                  "events_per_s": round(drained / took, 1), "cpu_us_per_event": round(cpu / drained * 1e6, 1),
                  "paced_p50_ms": round(1000 * histogram_quantile(after, HIST, 0.5, before), 2),
                  "paced_p99_ms": round(1000 * histogram_quantile(after, HIST, 0.99, before), 2)}
        print(json.dumps(result), flush=True)
        return result
    finally:
        worker.stop()


def main() -> int:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4, help="rounds in all (on, off, off, on, ...)")
    ap.add_argument("--paced-rate", type=float, default=300.0)
    ap.add_argument("--paced-s", type=float, default=15.0)
    ap.add_argument("--out", default=str(RESULTS / "sources_cost"))
    args = ap.parse_args()
    order = [("on", "off")[(r + r // 2) % 2] for r in range(args.rounds)]  # on off off on on off ...
    rounds = []
    with tempfile.TemporaryDirectory(prefix="sources-cost-") as tmp:
        data = Path(tmp)
        broker = start_broker(data / "broker.log")
        try:
            settings = client_settings(broker.bootstrap, args.partitions)
            ensure_topics(settings)
            announce_model(settings, data / "models", [f"sku-{i}" for i in range(args.items)], version=1)
            produce(settings, make_backlog(args.events, args.users, args.items, 1, "backlog"))
            total = args.events
            for n, config in enumerate(order):
                rounds.append(one_round(n, config, broker, settings, data, args, total))
                total += int(args.paced_rate * args.paced_s)
        finally:
            broker.stop()
    summary = {}
    for config in CONFIGS:
        mine = [r for r in rounds if r["config"] == config]
        summary[config] = {key: statistics.median(r[key] for r in mine)
                           for key in ("events_per_s", "cpu_us_per_event", "paced_p50_ms", "paced_p99_ms")}
    on, off = summary["on"], summary["off"]
    result = {"rounds": rounds, "median": summary,
              "throughput_on_over_off": round(on["events_per_s"] / off["events_per_s"], 3),
              "cpu_on_over_off": round(on["cpu_us_per_event"] / off["cpu_us_per_event"], 3),
              "p99_on_over_off": round(on["paced_p99_ms"] / off["paced_p99_ms"], 3),
              "config": vars(args), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip()}
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("median", "throughput_on_over_off", "cpu_on_over_off",
                                             "p99_on_over_off")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
