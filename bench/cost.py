"""CPU per event of the worker beside the floors under it, and where the worker's goes (issue 22).

For each stream shape, every phase on a fresh embedded broker (its CPU per record grows with what
it holds) and at the same paced producer rate:

1. a plain aiokafka consumer that decodes each message (``bench/_floor.py --kind aiokafka``);
2. a bare Faust agent that decodes each message (``--kind faust``);
3. the worker (trainer off, default settings otherwise: serving children, the gate, co-visitation)
   serving a model over each catalogue size (``--catalogues``), announced on ``model-updates``
   before the phase: an untrained encoder (encoding costs what a trained one's does) with item
   vectors clustered as a trained model's are (``index.synthetic``: an approximate index over an
   untrained model's noise vectors would scan most of the catalogue).

A phase starts its consumer, sends ``--warmup`` events and waits until they are handled, then
takes a CPU snapshot (user + system of the consumer's process tree, and of the broker, from
/proc), paces ``--events`` events at ``--rate``, waits until every one is handled (the worker: its
record acknowledged by the broker) and takes another: CPU µs per event = the difference over
``--events``. For the worker, the per-stage table comes from its ``streamrec_stage_seconds``
(µs per accepted event; streams/metrics.py says how each stage is timed), the rest of its CPU
is Faust's and aiokafka's own work and the threads' overheads; latencies are the deltas of its
histograms over the phase. ``--py-spy`` profiles the worker's main process during the phase (top
functions by own samples, in the JSON).

Shapes: ``short``, many users with short histories (like the Taobao sample: ~1.6 events per user);
``long``, few users with long histories (~100 events each). Items are drawn Zipf-like from the
catalogue, a user's events in time order.

    nice -n 5 .venv/bin/python bench/cost.py                      # bench/results/cost.json + .png
    nice -n 5 .venv/bin/python bench/cost.py --events 3000 --catalogues 2000 --shapes short --out /tmp/c
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from index.synthetic import clustered_items
from streams.metrics import histogram_quantile
from streams.harness.procs import (Worker, announce_model, clean_env, client_settings, cpu_seconds,
                                   process_tree, start_broker)
from streams.kafka.topics import ensure_topics
from throughput import produce  # bench/throughput.py (bench/ is on the path of a script in it)

RESULTS = ROOT / "bench" / "results"
ACKED = "streamrec_worker_latency_seconds"


def make_stream(shape: str, n: int, items: int, seed: int, tag: str) -> list[tuple[bytes, bytes]]:
    """``n`` valid events keyed by user; ``short``: ~1.6 events per user, ``long``: ~100."""
    rng = random.Random(seed)
    per_user = 1.6 if shape == "short" else 100.0
    users = max(1, int(n / per_user))
    step = max(1e-3, 1.0 / users)  # each user about one event per second of event time, under the rate limit
    t0 = time.time() - n * step - 60
    out = []
    for i in range(n):
        user = f"{tag}-u{rng.randrange(users)}"
        item = min(items - 1, int(rng.paretovariate(1.1)) - 1)  # Zipf-like: a few items get most events
        item = (item * 7919 + seed) % items  # popular items spread over the catalogue
        ev = {"user_id": user, "item_id": f"sku-{item}", "type": "click" if rng.random() > 0.05 else "purchase",
              "ts": t0 + i * step, "event_id": f"{tag}-{i}"}
        out.append((user.encode(), json.dumps(ev).encode()))
    return out


def scrape(worker: Worker) -> dict[str, float]:
    return worker.metrics()


def stage_sums(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith('streamrec_stage_seconds_sum{stage="'):
            out[key.split('"')[1]] = value
    return out


class Floor:
    """A floor consumer subprocess and the count it reports."""

    def __init__(self, kind: str, bootstrap: str, partitions: int, total: int) -> None:
        self.n, self.done = 0, threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_floor.py"), "--kind", kind, "--bootstrap", bootstrap,
             "--partitions", str(partitions), "--messages", str(total), "--progress"],
            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                body = json.loads(line)
            except ValueError:
                continue
            self.n = body.get("n", body.get("messages", self.n))
            if "messages" in body:
                self.done.set()

    def handled(self) -> int:
        return self.n

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def wait_for(count, target: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while count() < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {count()} of {target} handled after {timeout:.0f} s")
        time.sleep(0.2)


def profile(pid: int, seconds: float, path: Path) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("  (py-spy not installed: no profile)", flush=True)
        return None
    # --gil: only the thread holding the GIL, so a sample is Python at work, not a thread waiting
    return subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw",
                             "-o", str(path), "--nonblocking", "--gil"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(path: Path, n: int = 15) -> list[dict]:
    """Own samples per function (the leaf frame) from py-spy's collapsed stacks."""
    own, total = Counter(), 0
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        own[stack.split(";")[-1]] += int(count)
    return [{"function": f, "share": round(c / total, 3)} for f, c in own.most_common(n)]


def phase(name: str, shape: str, catalogue: int | None, args, workdir: Path) -> dict:
    """One consumer on a fresh broker: CPU µs per event over ``args.events`` paced events."""
    kind = "worker" if catalogue else name
    print(f"[cost] {shape} / {name}: starting", flush=True)
    tmp = workdir / f"{shape}-{name}"
    tmp.mkdir(parents=True)
    broker = start_broker(tmp / "broker.log")
    settings = client_settings(broker.bootstrap, args.partitions)
    ensure_topics(settings)
    items = catalogue or max(args.catalogues)
    warm = make_stream(shape, args.warmup, items, 1, "warm")
    events = make_stream(shape, args.events, items, 2, "ev")
    consumer, spy = None, None
    try:
        if kind == "worker":
            # item vectors clustered as a trained model's are (an untrained model's are noise, which
            # no approximate index can search cheaply); the encoder is untrained (it costs the same)
            vectors = clustered_items(catalogue, 64, seed=5) * 0.1
            announce_model(settings, tmp / "data" / "models", [f"sku-{i}" for i in range(catalogue)], version=1,
                           item_vectors=vectors)
            consumer = Worker(broker.bootstrap, tmp / "data", app_id="cost", partitions=args.partitions,
                              log_path=tmp / "worker.log", extra=shlex.split(args.worker_args)).start()
            consumer.wait_ready(timeout=300)
            wait_for(lambda: (consumer.health() or {}).get("model_version", 0), 1, 600, "model version 1")
            handled = lambda: int(consumer.metrics().get(f"{ACKED}_count", 0))  # noqa: E731
            pids = lambda: process_tree(consumer.pid)  # noqa: E731
        else:
            consumer = Floor(kind, broker.bootstrap, args.partitions, args.warmup + args.events)
            handled, pids = consumer.handled, consumer.pids
        produce(settings, warm)
        wait_for(handled, args.warmup, 300, f"{name} warm-up")
        time.sleep(1.0)
        before = scrape(consumer) if kind == "worker" else {}
        cpu0, broker0, t0 = cpu_seconds(*pids()), cpu_seconds(broker.process.pid), time.monotonic()
        if kind == "worker" and args.py_spy:
            spy = profile(consumer.pid, args.events / args.rate, tmp / "profile.txt")
        produce(settings, events, rate=args.rate)
        sent_s = time.monotonic() - t0
        wait_for(handled, args.warmup + args.events, 300, name)
        took = time.monotonic() - t0
        cpu1, broker1 = cpu_seconds(*pids()), cpu_seconds(broker.process.pid)
        out = {"phase": name, "shape": shape, "catalogue": catalogue, "events": args.events,
               "producer_s": round(sent_s, 2), "handled_s": round(took, 2),
               "events_per_s": round(args.events / took, 1),
               "cpu_us_per_event": round((cpu1 - cpu0) / args.events * 1e6, 1),
               "broker_cpu_us_per_event": round((broker1 - broker0) / args.events * 1e6, 1)}
        if kind == "worker":
            after = scrape(consumer)
            b, a = stage_sums(before), stage_sums(after)
            accepted = after.get('streamrec_events_total{outcome="accepted"}', 0) - \
                before.get('streamrec_events_total{outcome="accepted"}', 0)
            out["accepted"] = int(accepted)
            out["stages_us_per_event"] = {stage: round((a[stage] - b.get(stage, 0.0)) / accepted * 1e6, 1)
                                          for stage in sorted(a)}
            out["stages_sum_us"] = round(sum(out["stages_us_per_event"].values()), 1)
            for metric, q, key in ((ACKED, 0.5, "worker_latency_p50_ms"), (ACKED, 0.99, "worker_latency_p99_ms"),
                                   ("streamrec_event_age_seconds", 0.99, "event_age_p99_ms")):
                value = histogram_quantile(after, metric, q, baseline=before)
                out[key] = None if value is None else round(value * 1e3, 1)
            cpu_main = after.get("process_cpu_seconds_total", 0) - before.get("process_cpu_seconds_total", 0)
            out["main_process_cpu_us_per_event"] = round(cpu_main / args.events * 1e6, 1)
            sources = {k.split('"')[1]: v - before.get(k, 0.0) for k, v in after.items()
                       if k.startswith("streamrec_recommendations_total{")}
            out["records_by_source"] = {k: int(v) for k, v in sources.items() if v}
            if spy is not None:
                spy.wait(timeout=args.events / args.rate + 60)
                out["profile_top"] = top_functions(tmp / "profile.txt")
        print(f"[cost] {shape} / {name}: {out['cpu_us_per_event']} µs/event "
              f"(broker {out['broker_cpu_us_per_event']}), {out['events_per_s']}/s", flush=True)
        return out
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        if consumer is not None:
            consumer.stop()
        broker.stop()


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = report["shapes"]
    fig, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4.5), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        rows = [r for r in report["phases"] if r["shape"] == shape]
        labels = [r["phase"] if not r["catalogue"] else f"worker\n{r['catalogue'] // 1000:,}k items" for r in rows]
        stages = sorted({s for r in rows for s in r.get("stages_us_per_event", {})})
        bottom = [0.0] * len(rows)
        colours = plt.get_cmap("tab20")
        for n, stage in enumerate(stages):
            values = [r.get("stages_us_per_event", {}).get(stage, 0.0) for r in rows]
            ax.bar(labels, values, bottom=bottom, label=stage, color=colours(n % 20))
            bottom = [b + v for b, v in zip(bottom, values)]
        rest = [max(0.0, r["cpu_us_per_event"] - b) for r, b in zip(rows, bottom)]
        ax.bar(labels, rest, bottom=bottom, label="rest (Faust, aiokafka, threads)", color="lightgrey")
        ax.set_title(f"{shape} histories: CPU µs per event")
        ax.set_ylabel("µs per event (process tree, user + system)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000, help="paced events per phase")
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--rate", type=float, default=1_000.0, help="producer events/s in every phase")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--shapes", default="short,long")
    ap.add_argument("--catalogues", default="75000,1000000", help="items of the served model, one worker phase each")
    ap.add_argument("--floors", default="aiokafka,faust")
    ap.add_argument("--worker-args", default="", help="extra `streamrec worker` flags for the worker phases")
    ap.add_argument("--py-spy", action="store_true", help="profile the worker's main process in each worker phase")
    ap.add_argument("--keep", action="store_true", help="keep the phases' logs and profiles (printed path)")
    ap.add_argument("--out", default=str(RESULTS / "cost"))
    args = ap.parse_args()
    args.catalogues = [int(c) for c in args.catalogues.split(",")]
    shapes = args.shapes.split(",")
    report = {"bench": "cost", "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "python": platform.python_version(), "rate": args.rate, "events": args.events,
              "shapes": shapes, "catalogues": args.catalogues, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(), "phases": []}
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-cost-"))
    try:
        for shape in shapes:
            for floor in [f for f in args.floors.split(",") if f]:
                report["phases"].append(phase(floor, shape, None, args, workdir))
            for catalogue in args.catalogues:
                report["phases"].append(phase(f"worker-{catalogue}", shape, catalogue, args, workdir))
    finally:
        if args.keep:
            print(f"[cost] logs and profiles kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    print(json.dumps(report["phases"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
