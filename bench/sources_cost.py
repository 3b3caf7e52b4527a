"""What the quality gate and the co-visitation source cost, or the limits per user: the same
worker with them on and off, alternating rounds in one run, on one embedded broker.

A model version (untrained, over ``--items`` items: serving it costs what a trained one costs) is
announced. Each round produces a backlog of ``--events`` valid events (the same each round) to an
``events`` topic of its own and starts a fresh worker on it (``--train false``) with
the sources on (the defaults: ``--serving-gate true --covisit true``) or off (``--serving-gate
false --covisit false``: the model where it has an answer, else popularity), in the order
on, off, off, on, ... so that drift of the shared machine falls on both (what a round adds, a
flood included, does not reach the next). Per round: the drain rate (accepted events / s from
the first to the last), the worker's CPU µs per event over the drain (user + system of its
process tree), then ``--paced-s`` seconds of new events paced at
``--paced-rate``: the event → recommendation p50/p99 from the worker's histogram over that phase.

With ``--compare defences`` the rounds compare the limits per user instead
(``streams/ingest/guard.py``): ``on`` (the defaults), ``off`` (``--rate-limit-per-s 0
--suspect-surprise 0``: no rate limit, no suspicion, no settling of popularity) and
``flood`` (the defaults, with one more user id sending ``--flood-factor`` times the paced rate,
in event time now, during the paced phase: its events past the burst are held back in
``events.suspect``); the p99 of ``flood`` against ``on`` is what a flood does to everyone else's
latency (the flood's held events make no recommendation, so the histogram has the others').

    nice -n 5 .venv/bin/python bench/sources_cost.py --events 30000 --rounds 4
    nice -n 5 .venv/bin/python bench/sources_cost.py --compare defences --rounds 6   # defences_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from throughput import make_backlog, produce  # bench/throughput.py (bench/ is on the path of a script in it)

from streams.metrics import histogram_quantile
from streams.harness.procs import Worker, announce_model, client_settings, start_broker
from streams.kafka.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
HIST = "streamrec_event_to_recommendation_seconds"
COMPARE = {  # name -> config -> (worker flags, flood during the paced phase)
    "sources": {"on": (["--serving-gate", "true", "--covisit", "true"], False),
                "off": (["--serving-gate", "false", "--covisit", "false"], False)},
    "defences": {"on": ([], False), "off": (["--rate-limit-per-s", "0", "--suspect-surprise", "0"], False),
                 "flood": ([], True)},
}
SUSPECT = 'streamrec_suspect_events_total{reason="rate_limited"}'


def flood(settings, rate: float, seconds: float, tag: str) -> None:
    """One user id sending ``rate`` events per second for ``seconds``, each at the time it is sent."""
    produce(settings, ((b"flooder", json.dumps({"user_id": "flooder", "item_id": f"sku-{n % 7}", "type": "click",
                                                 "ts": time.time(), "event_id": f"{tag}-{n}"}).encode())
                       for n in range(int(rate * seconds))), rate=rate)


def accepted(metrics: dict) -> float:
    """Events taken into state, or held back as suspect (a flood's, in the ``defences`` rounds)."""
    return sum(metrics.get(f'streamrec_events_total{{outcome="{outcome}"}}', 0.0) for outcome in ("accepted", "suspect"))


def one_round(n: int, config: str, broker, settings, data: Path, args) -> dict:
    """A fresh worker on a topic of its own, holding the same backlog as every round's."""
    flags, flooded = COMPARE[args.compare][config]
    settings = settings.model_copy(update={"topic_events": f"{settings.topic_events}.round{n}"})
    ensure_topics(settings)
    produce(settings, make_backlog(args.events, args.users, args.items, 1, "backlog"))
    backlog_total = args.events
    worker = Worker(broker.bootstrap, data / f"round{n}", app_id=f"cost{n}", partitions=args.partitions,
                    log_path=data / f"worker{n}.log", extra=flags + ["--topic-events", settings.topic_events]).start()
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
        flooder = threading.Thread(target=flood, args=(settings, args.flood_factor * args.paced_rate, args.paced_s,
                                                       f"flood{n}")) if flooded else None
        if flooder is not None:
            flooder.start()
        produce(settings, make_backlog(int(args.paced_rate * args.paced_s), args.users, args.items, 100 + n,
                                       f"paced{n}"), rate=args.paced_rate)
        if flooder is not None:
            flooder.join()
        time.sleep(2.0)
        after = worker.metrics()
        result = {"round": n, "config": config, "drained": int(drained), "drain_s": round(took, 2),
                  "held_back_paced": int(after.get(SUSPECT, 0) - before.get(SUSPECT, 0)),
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
    ap.add_argument("--compare", choices=sorted(COMPARE), default="sources")
    ap.add_argument("--flood-factor", type=float, default=10.0,
                    help="with --compare defences: the flood's rate, in multiples of --paced-rate")
    ap.add_argument("--out", default=None, help="default bench/results/sources_cost or defences_cost")
    args = ap.parse_args()
    args.out = args.out or str(RESULTS / ("sources_cost" if args.compare == "sources" else "defences_cost"))
    configs = list(COMPARE[args.compare])
    cycle = configs + configs[::-1]  # on off off on ... / on off flood flood off on ...
    order = [cycle[r % len(cycle)] for r in range(args.rounds)]
    rounds = []
    with tempfile.TemporaryDirectory(prefix="sources-cost-") as tmp:
        data = Path(tmp)
        broker = start_broker(data / "broker.log")
        try:
            settings = client_settings(broker.bootstrap, args.partitions)
            ensure_topics(settings)
            announce_model(settings, data / "models", [f"sku-{i}" for i in range(args.items)], version=1)
            for n, config in enumerate(order):
                rounds.append(one_round(n, config, broker, settings, data, args))
        finally:
            broker.stop()
    summary = {}
    for config in configs:
        mine = [r for r in rounds if r["config"] == config]
        summary[config] = {key: statistics.median(r[key] for r in mine)
                           for key in ("events_per_s", "cpu_us_per_event", "paced_p50_ms", "paced_p99_ms")}
    on, off = summary["on"], summary["off"]
    result = {"compare": args.compare, "rounds": rounds, "median": summary,
              "throughput_on_over_off": round(on["events_per_s"] / off["events_per_s"], 3),
              "cpu_on_over_off": round(on["cpu_us_per_event"] / off["cpu_us_per_event"], 3),
              "p99_on_over_off": round(on["paced_p99_ms"] / off["paced_p99_ms"], 3),
              **({"p99_flood_over_on": round(summary["flood"]["paced_p99_ms"] / on["paced_p99_ms"], 3)}
                 if "flood" in summary else {}),
              "config": vars(args), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip()}
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("median", "throughput_on_over_off", "cpu_on_over_off",
                                             "p99_on_over_off", "p99_flood_over_on") if k in result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
