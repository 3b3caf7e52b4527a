"""Throughput of one worker against a plain Kafka consumer, latency at half rate, memory soak
(issue 7 item 3). Everything in one run, on one embedded broker:

1. a model version (untrained ``Recommender.fresh`` over ``--items`` items: serving costs what a
   trained one costs) is saved and announced on ``model-updates``, so recommendations come from
   the model (encode + FAISS top-k), not from the popularity fallback;
2. ``--events`` valid events (keyed by user, unique event_ids) are produced as a backlog;
3. ceiling: a plain kafka-python consumer loop (all partitions, manual assignment) reads the
   backlog and only ``json.loads`` each value; then a bare Faust agent does the same
   (``bench/_floor.py``): what Faust's own per-message machinery leaves of the ceiling;
4. the worker (``--train false``) drains the same backlog: its events/s (accepted events, from
   /metrics/) is the highest rate it sustains; ratio = worker / ceiling;
5. check: producer paced at ``--confirm-share`` × that rate for ``--confirm-s`` s, consumer lag
   sampled (bounded = no upward trend, last sample ≤ 2 s of events);
   with ``--search``, the rate a LIVE producer can keep up with: steps of ``--step-s`` s paced at
   each share of the drain rate in turn, until one is not *sustained* (every event processed,
   the last lag sample ≤ 1 s of events, the mean lag over the step's last third ≤ 0.5 s of
   events: the worker keeps up within half a second). The broker and the producer share the two cores with the
   worker then, as they do in production on this box, so this rate is below the drain rate;
6. soak: paced at half the rate (the searched one when there is one) for ``--soak-s`` s:
   event→recommendation p50/p99 from the
   worker's histogram streamrec_event_to_recommendation_seconds (deltas over the soak), lag and
   RSS (/proc/PID/status; the worker and its serving children summed) and the CPU cores used by
   the worker's processes and by the broker, every second (the embedded broker can be the limit);
   the RSS growth after ``--warmup-s`` is the soak target's figure.

Writes bench/results/throughput.json and .png.

    nice -n 5 .venv/bin/python bench/throughput.py --events 60000 --soak-s 180
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from streams.metrics import histogram_quantile
from streams.harness.procs import (Worker, announce_model, clean_env, client_settings, cpu_seconds,
                    start_broker)

RESULTS = ROOT / "bench" / "results"
HIST = "streamrec_event_to_recommendation_seconds"


def start_stack(data: Path, args) -> tuple:
    """A broker with the topics, a model version announced, and a worker serving it, warmed up
    (first encodes, index) with 500 events: (broker, client settings, worker)."""
    from streams.kafka.topics import ensure_topics

    data.mkdir(parents=True, exist_ok=True)
    broker = start_broker(data / "broker.log")
    settings = client_settings(broker.bootstrap, args.partitions)
    ensure_topics(settings)
    announce_model(settings, data / "data" / "models", [f"sku-{i}" for i in range(args.items)], version=1)
    worker = Worker(broker.bootstrap, data / "data", app_id="tput", partitions=args.partitions,
                    log_path=data / "worker.log", extra=shlex.split(args.worker_args)).start()
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 60
        while (worker.health() or {}).get("model_version", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        produce(settings, make_backlog(500, args.users, args.items, 1, "warm", ids=not args.derived_ids))
        deadline = time.monotonic() + 60
        while accepted(worker.metrics()) < 500 and time.monotonic() < deadline:
            time.sleep(0.3)
    except BaseException:
        worker.stop()
        broker.stop()
        raise
    return broker, settings, worker


def make_backlog(n: int, users: int, items: int, seed: int, tag: str,
                 ids: bool = True) -> list[tuple[bytes, bytes]]:
    """``n`` valid events keyed by user; without ``ids`` they carry no event_id (the worker derives
    one from user, item, type and ts, as for the demo's Taobao replay)."""
    rng = random.Random(seed)
    t0 = time.time() - 3600
    out = []
    for i in range(n):
        user = f"u{rng.randrange(users)}"
        ev = {"user_id": user, "item_id": f"sku-{rng.randrange(items)}", "type": "click", "ts": t0 + i * 1e-3}
        if ids:
            ev["event_id"] = f"{tag}-{i}"
        out.append((user.encode(), json.dumps(ev).encode()))
    return out


def produce(settings, messages, rate: float = 0.0, stop: threading.Event | None = None) -> float:
    from streams.kafka.clients import make_producer

    producer = make_producer(settings)
    started = time.monotonic()
    try:
        for i, (key, value) in enumerate(messages, 1):
            producer.send(settings.topic_events, key=key, value=value)
            if rate > 0:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    time.sleep(ahead)
            if stop is not None and stop.is_set():
                break
        producer.flush(120)
    finally:
        producer.close()
    return time.monotonic() - started


def ceiling(settings, n: int) -> dict:
    """A plain consumer loop over the backlog that only decodes (json.loads) each value."""
    from streams.kafka.clients import watch_consumer

    consumer = watch_consumer(settings, [settings.topic_events], from_beginning=True)
    count, first, deadline = 0, None, time.monotonic() + 300
    try:
        while count < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                if first is None:
                    first = time.monotonic()
                for record in records:
                    json.loads(record.value)
                    count += 1
        took = time.monotonic() - (first or time.monotonic())
    finally:
        consumer.close()
    return {"messages": count, "seconds": round(took, 2), "events_per_s": round(count / took, 1) if took else None}


def faust_floor(bootstrap: str, partitions: int, n: int) -> dict:
    """A bare Faust agent (own consumer group, from the beginning) that only decodes each value."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "_floor.py"), "--bootstrap", bootstrap,
                           "--partitions", str(partitions), "--messages", str(n)],
                          cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"faust floor run failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def check_state(worker, sent: list[tuple[bytes, bytes]]) -> dict:
    """Every user's event count in the worker's state (GET /users/{id}/) against what was sent
    (all valid, unique event ids): events lost or applied twice show here."""
    from collections import Counter

    from streams.harness.procs import get_json

    expected = Counter(key.decode() for key, _ in sent)
    wrong = {}
    for user, n in expected.items():
        status, body = get_json(f"{worker.base}/users/{user}/", timeout=5)
        got = body.get("n") if status == 200 and isinstance(body, dict) else None
        if got != n:
            wrong[user] = (n, got)
    metrics = worker.metrics()
    return {"users": len(expected), "users_with_wrong_count": len(wrong),
            # valid events the suspicion guard held back (in events.suspect, not in the state)
            "held_back_suspect": int(metrics.get('streamrec_events_total{outcome="suspect"}', 0)),
            "events_missing": sum(n - (got or 0) for n, got in wrong.values() if (got or 0) < n),
            "events_extra": sum((got or 0) - n for n, got in wrong.values() if (got or 0) > n),
            "examples": dict(list(wrong.items())[:5])}


def rss_growth(series: list, warmup_s: float, column: int = 3) -> float | None:
    """RSS MiB (KiB in ``column``) at the end of ``series`` minus at ``warmup_s`` into it (None if shorter)."""
    after = [row for row in series if row[0] >= warmup_s]
    return round((after[-1][column] - after[0][column]) / 1024, 1) if len(after) > 1 else None


def accepted(metrics: dict) -> float:
    return metrics.get('streamrec_events_total{outcome="accepted"}', 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--confirm-share", type=float, default=0.9)
    ap.add_argument("--confirm-s", type=float, default=40)
    ap.add_argument("--search", default="",
                    help="shares of the drain rate to step through with a live producer, e.g. 0.3,0.4,0.5")
    ap.add_argument("--step-s", type=float, default=40, help="seconds per search step")
    ap.add_argument("--soak-s", type=float, default=180)
    ap.add_argument("--soak-rate", type=float, default=0.0,
                    help="events/s of the soak (default: half the measured drain rate)")
    ap.add_argument("--warmup-s", type=float, default=120,
                    help="seconds of a paced phase before its RSS growth is counted (rss_mib_growth_after_warmup)")
    ap.add_argument("--worker-args", default="",
                    help="more `streamrec worker` flags, e.g. \"--malloc-mmap-threshold-kb 0\"")
    ap.add_argument("--fresh-broker", action="store_true",
                    help="run each paced phase (search steps, soak) on a new broker and worker: the embedded "
                         "broker's CPU per record grows with the records it holds (Tansu's memory storage)")
    ap.add_argument("--derived-ids", action="store_true",
                    help="send events without event_id (the worker derives a ~40-character one)")
    ap.add_argument("--out", default=str(RESULTS / "throughput"))
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    report: dict = {
        "command": "nice -n 5 .venv/bin/python bench/throughput.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU, Python "
                   f"{platform.python_version()}",
        "load_average_at_start": os.getloadavg(),
        "worker_flags": "--train false, torch 1 thread, model v1 = Recommender.fresh over --items items",
        "args": vars(args),
    }
    samples: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tput-bench-") as tmp:
        tmp = Path(tmp)
        broker = worker = None
        try:
            broker, settings, worker = start_stack(tmp / "drain", args)
            report["model_version_served"] = (worker.health() or {}).get("model_version")
            log(f"worker ready, model v{report['model_version_served']}")
            worker.stop()  # the backlog waits for it

            backlog = make_backlog(args.events, args.users, args.items, 2, "bl", ids=not args.derived_ids)
            took = produce(settings, backlog)
            report["backlog_produce"] = {"messages": len(backlog), "seconds": round(took, 2),
                                         "events_per_s": round(len(backlog) / took, 1)}
            log(f"backlog produced: {report['backlog_produce']}")
            report["ceiling_plain_consumer"] = ceiling(settings, args.events + 500)
            log(f"ceiling: {report['ceiling_plain_consumer']}")
            report["faust_bare_agent"] = faust_floor(broker.bootstrap, args.partitions, args.events + 500)
            log(f"bare Faust agent: {report['faust_bare_agent']}")

            # Worker drains the backlog (restarted on the same data dir: its offsets are committed).
            worker.start()
            worker.wait_ready()
            start = time.monotonic()
            base = None
            series = []
            while time.monotonic() - start < 600:
                m = worker.metrics()
                if not m:
                    time.sleep(0.2)
                    continue
                a = accepted(m)
                base = 0.0  # a new process: its counters start at 0
                series.append((time.monotonic() - start, a - base, m.get("streamrec_consumer_lag", 0.0),
                               m.get('streamrec_recommendations_total{source="model"}', 0.0),
                               m.get('streamrec_recommendations_total{source="popular"}', 0.0)))
                if a - base >= args.events:
                    break
                if len(series) > 20 and series[-1][1] == series[-21][1] and series[-1][2] == 0:
                    log(f"drain stopped at {a - base:.0f} of {args.events} events (lag 0 for 10 s)")
                    break
                time.sleep(0.5)
            done = [s for s in series if s[1] > 0]
            # Rate between 5 % and 95 % of the backlog (start-up and tail excluded).
            lo = next(s for s in done if s[1] >= 0.05 * args.events)
            hi = next((s for s in done if s[1] >= 0.95 * args.events), done[-1])
            rate = (hi[1] - lo[1]) / (hi[0] - lo[0])
            m = worker.metrics()
            report["worker_drain"] = {
                "events": int(series[-1][1]), "seconds_total": round(series[-1][0], 2),
                "events_per_s": round(rate, 1),
                "recommendations_model": m.get('streamrec_recommendations_total{source="model"}'),
                "recommendations_popular": m.get('streamrec_recommendations_total{source="popular"}'),
                "batch_size_mean": round(m.get("streamrec_batch_size_sum", 0) / max(1, m.get("streamrec_batch_size_count", 1)), 1),
            }
            ceil_rate = report["ceiling_plain_consumer"]["events_per_s"]
            report["ratio_worker_to_ceiling"] = round(rate / ceil_rate, 4) if ceil_rate else None
            floor_rate = report["faust_bare_agent"]["events_per_s"]
            report["ratio_bare_faust_to_ceiling"] = round(floor_rate / ceil_rate, 4) if ceil_rate else None
            report["ratio_worker_to_bare_faust"] = round(rate / floor_rate, 4) if floor_rate else None
            log(f"worker drain: {report['worker_drain']}, ratio {report['ratio_worker_to_ceiling']}")
            report["state_check_after_drain"] = check_state(
                worker, make_backlog(500, args.users, args.items, 1, "warm", ids=not args.derived_ids) + backlog)
            log(f"state check: {report['state_check_after_drain']}")
            samples.append({"phase": "drain", "series": series})

            def paced(phase: str, r: float, seconds: float, tag: str) -> dict:
                nonlocal broker, settings, worker
                if args.fresh_broker:  # this phase's broker holds only this phase's records
                    worker.stop()
                    broker.stop()
                    broker = worker = None
                    broker, settings, worker = start_stack(tmp / tag, args)
                    log(f"{phase}: fresh broker and worker ready")
                n = int(r * seconds)
                msgs = make_backlog(n, args.users, args.items, hash(tag) & 0xFFFF, tag, ids=not args.derived_ids)
                before = worker.metrics()
                stop = threading.Event()
                th = threading.Thread(target=produce, args=(settings, msgs, r, stop), daemon=True)
                t0 = time.monotonic()
                th.start()
                series = []
                # (s, processed, lag, RSS KiB, CPU cores of the worker tree / the broker since the last
                # sample, RSS KiB of the worker's main process alone, its RocksDB bytes)
                cpu_last = (time.monotonic(), worker.cpu_seconds() or 0.0, cpu_seconds(broker.process.pid))
                mid = None  # metrics at half time: latency of each half of the phase
                while th.is_alive() or time.monotonic() - t0 < seconds:
                    m = worker.metrics()
                    if mid is None and time.monotonic() - t0 >= seconds / 2:
                        mid = m
                    cpu_now = (time.monotonic(), worker.cpu_seconds() or 0.0, cpu_seconds(broker.process.pid))
                    dt = max(1e-6, cpu_now[0] - cpu_last[0])
                    series.append((time.monotonic() - t0, accepted(m) - accepted(before),
                                   m.get("streamrec_consumer_lag", 0.0), worker.rss_kib() or 0,
                                   round((cpu_now[1] - cpu_last[1]) / dt, 3), round((cpu_now[2] - cpu_last[2]) / dt, 3),
                                   worker.rss_kib(children=False) or 0, m.get("streamrec_rocksdb_memory_bytes", 0.0)))
                    cpu_last = cpu_now
                    time.sleep(1.0)
                    if time.monotonic() - t0 > seconds * 3:
                        stop.set()
                        break
                th.join(30)
                # Let the tail drain for at most 30 s.
                t1 = time.monotonic()
                while accepted(worker.metrics()) - accepted(before) < n and time.monotonic() - t1 < 30:
                    time.sleep(0.5)
                after = worker.metrics()
                lags = [s[2] for s in series]
                half = len(lags) // 2
                out = {
                    "target_rate": round(r, 1), "seconds": round(time.monotonic() - t0, 1), "sent": n,
                    "processed": int(accepted(after) - accepted(before)),
                    "lag_max": max(lags) if lags else None,
                    "lag_mean_first_half": round(sum(lags[:half]) / max(1, half), 1),
                    "lag_mean_second_half": round(sum(lags[half:]) / max(1, len(lags) - half), 1),
                    "lag_last": lags[-1] if lags else None,
                    "p50_s": histogram_quantile(after, HIST, 0.5, before),
                    "p99_s": histogram_quantile(after, HIST, 0.99, before),
                    "p99_first_half_s": histogram_quantile(mid, HIST, 0.99, before) if mid else None,
                    "p99_second_half_s": histogram_quantile(after, HIST, 0.99, mid) if mid else None,
                    "rss_mib_first": round(series[0][3] / 1024, 1) if series else None,
                    "rss_mib_max": round(max(s[3] for s in series) / 1024, 1) if series else None,
                    "rss_mib_last": round(series[-1][3] / 1024, 1) if series else None,
                    # after the warm-up (caches, the RocksDB bound, the serving buffers fill): the soak target
                    "rss_mib_growth_after_warmup": rss_growth(series, args.warmup_s),
                    "rss_mib_growth_after_warmup_main_process": rss_growth(series, args.warmup_s, column=6),
                    "rocksdb_memory_mib_last": round(after.get("streamrec_rocksdb_memory_bytes", 0) / 2**20, 1),
                }
                for name, col in (("worker", 4), ("broker", 5)):  # CPU cores in use, sampled each second
                    cores = [s[col] for s in series[1:]]
                    half_c = len(cores) // 2
                    out[f"{name}_cpu_cores_first_half"] = round(sum(cores[:half_c]) / max(1, half_c), 2)
                    out[f"{name}_cpu_cores_second_half"] = round(sum(cores[half_c:]) / max(1, len(cores) - half_c), 2)
                out["lag_bounded"] = bool(lags) and lags[-1] <= 2 * r and \
                    out["lag_mean_second_half"] <= max(2 * r, 2 * out["lag_mean_first_half"])
                last_third = lags[2 * (len(lags) // 3):]
                out["lag_mean_last_third"] = round(sum(last_third) / max(1, len(last_third)), 1)
                out["sustained"] = bool(lags) and out["processed"] >= n and lags[-1] <= r and \
                    out["lag_mean_last_third"] <= 0.5 * r
                samples.append({"phase": phase, "series": series})
                log(f"{phase}: {out}")
                return out

            if args.confirm_s > 0:
                report["confirm"] = paced("confirm", args.confirm_share * rate, args.confirm_s, "cf")
            sustainable = None
            if args.search:
                steps = []
                for share in sorted(float(x) for x in args.search.split(",")):
                    steps.append(paced(f"step {share:g}", share * rate, args.step_s, f"st{share:g}"))
                    if not steps[-1]["sustained"]:
                        break
                    sustainable = steps[-1]["target_rate"]
                report["search"] = {"steps": steps, "sustainable_events_per_s": sustainable,
                                    "ratio_to_ceiling": round(sustainable / ceil_rate, 4)
                                    if sustainable and ceil_rate else None}
                log(f"sustainable with a live producer: {sustainable} events/s")
            soak_rate = args.soak_rate or 0.5 * (sustainable or rate)
            report["soak_half_rate"] = paced("soak", soak_rate, args.soak_s, "soak")
            report["worker_log_errors"] = sum(1 for line in worker.log_tail(10**7).splitlines() if "ERROR" in line)
        finally:
            if worker is not None:
                worker.stop()
            if broker is not None:
                broker.stop()
    report["load_average_at_end"] = os.getloadavg()
    Path(args.out + ".json").write_text(json.dumps({**report, "samples": samples}, indent=1))
    plot(report, samples, Path(args.out + ".png"))
    print(json.dumps(report, indent=2))
    return 0


def plot(report: dict, samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    names = ["plain consumer\n(decode only)", "bare Faust agent\n(decode only)", "worker\n(state + model rec)"]
    values = [report["ceiling_plain_consumer"]["events_per_s"], report["faust_bare_agent"]["events_per_s"],
              report["worker_drain"]["events_per_s"]]
    ax.bar(names, values, color=["grey", "tab:orange", "tab:blue"])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}/s", ha="center", va="bottom")
    ax.set_title(f"backlog drain, same run (ratio {report['ratio_worker_to_ceiling']:.1%})")
    ax.set_ylabel("events/s")
    soak = next((s["series"] for s in samples if s["phase"] == "soak"), [])
    confirm = next((s["series"] for s in samples if s["phase"] == "confirm"), [])
    ax = axes[1]
    if confirm:
        ax.plot([s[0] for s in confirm], [s[2] for s in confirm],
                label=f"{report['confirm']['target_rate']:.0f}/s")
    for step, sample in zip(report.get("search", {}).get("steps", []),
                            [s for s in samples if s["phase"].startswith("step ")]):
        ax.plot([s[0] for s in sample["series"]], [s[2] for s in sample["series"]], lw=0.8,
                label=f"{step['target_rate']:.0f}/s ({'sustained' if step['sustained'] else 'not sustained'})")
    if soak:
        ax.plot([s[0] for s in soak], [s[2] for s in soak], label=f"{report['soak_half_rate']['target_rate']:.0f}/s (soak)")
    ax.set_title("consumer lag (messages) at a paced rate")
    ax.set_xlabel("seconds")
    ax.legend()
    ax = axes[2]
    if soak:
        ax.plot([s[0] for s in soak], [s[3] / 1024 for s in soak], label="worker and its serving children")
        if len(soak[0]) > 6:
            ax.plot([s[0] for s in soak], [s[6] / 1024 for s in soak], label="worker main process")
            ax.plot([s[0] for s in soak], [s[7] / 2**20 for s in soak], label="its RocksDB (shared cache)")
        ax.axvline(report["args"]["warmup_s"], color="grey", ls=":", lw=0.8)
        ax.legend()
    sk = report["soak_half_rate"]
    ax.set_title(f"worker RSS during the soak (p50 {1000 * (sk['p50_s'] or 0):.1f} ms, p99 "
                 f"{1000 * (sk['p99_s'] or 0):.1f} ms)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
