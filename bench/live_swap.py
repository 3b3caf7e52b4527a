"""Live-model swap benchmark (the worker's serving side, no Kafka).

``--serving thread`` (the default) serves in this process, as a worker does by default;
``--serving processes`` from two child processes (``streams/serving/processes.py``): there a
load is timed until both children hold the version (it is served after the first).

Measures, for a catalogue of ``--items`` items:
- load time of a new version (checksum + ``weights_only`` load + index build + swap): the part of
  "published -> served" that a worker spends; the model-updates watcher adds up to its 0.5 s poll;
- time for an item first seen in the stream to become searchable (cold-start vector + index add),
  on top of the worker's 0.5 s new-item timer;
- serving latency (one user per query, model path) in steady state and while versions are being
  swapped back to back, side by side in one run; p50/p99 and their ratio; a histogram PNG.

    python bench/live_swap.py --items 100000 --seconds 20 [--serving processes]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from model.encoder import EncoderConfig
from model.recommender import Recommender
from streams.lifecycle.model_store import ModelStore
from streams.metrics import Metrics
from streams.serving.service import Serving
from streams.settings import load_settings

HERE = Path(__file__).resolve().parent


def quantiles(values: list[float]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"n": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (steady, swapping)")
    parser.add_argument("--new-per-version", type=int, default=500,
                        help="items each version adds to the previous one's vocabulary (0: all equal)")
    parser.add_argument("--gil-switch-interval-ms", type=float, default=None,
                        help="Python's switch interval (default: the worker's setting, as run_worker sets it)")
    parser.add_argument("--serving", choices=("thread", "processes"), default="thread",
                        help="processes: the worker's serving_processes setting (streams/serving/processes.py)")
    parser.add_argument("--json", default=str(HERE / "results" / "live_swap.json"))
    parser.add_argument("--png", default=str(HERE / "results" / "live_swap.png"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="live-swap-"))
    settings = load_settings({"data_dir": tmp, "store": "memory",
                              "serving_processes": args.serving == "processes"}, environ={})
    switch_ms = args.gil_switch_interval_ms or settings.gil_switch_interval_ms
    sys.setswitchinterval(switch_ms / 1000)  # what streams.cli.worker.run_worker does
    store = ModelStore(tmp / "models", keep=3)
    items = [f"item-{n}" for n in range(args.items)]
    print(f"building {args.items} x {args.dim} models ...", flush=True)
    recs = []
    for version in (1, 2, 3):
        # as from the trainer: each version's vocabulary extends the previous one's (new items)
        grown = items + [f"new-in-v{v}-{j}" for v in range(2, version + 1) for j in range(args.new_per_version)]
        rec = Recommender.fresh(EncoderConfig(dim=args.dim, n_layers=2, max_len=50), item_ids=grown, seed=version)
        rec.version = version
        recs.append(store.save(rec))
    live = Serving(settings, Metrics(), popular=lambda n: [])  # the worker's serving, its backend by settings
    load_times = []
    for update in recs:
        started = time.perf_counter()
        assert live.load(update)
        load_times.append(time.perf_counter() - started)
    print(f"load+build+swap: {[round(t, 2) for t in load_times]} s", flush=True)

    rng = np.random.default_rng(0)
    histories = [[(items[j], "click") for j in rng.integers(0, args.items, 20)] for _ in range(1000)]

    swapping = threading.Event()

    def serve_for(seconds: float) -> tuple[list[float], list[float]]:
        """Latencies of queries that started with no swap running, and with one running."""
        calm, busy, deadline, n = [], [], time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            in_swap = swapping.is_set()
            started = time.perf_counter()
            answer = live.backend.recommend([histories[n % len(histories)]], 10)[0]
            (busy if in_swap else calm).append(time.perf_counter() - started)
            assert answer and len(answer) == 10
            n += 1
        return calm, busy

    steady, _ = serve_for(args.seconds)
    stop, swaps = threading.Event(), []

    def swapper(pause: float):
        n = 0
        while not stop.is_set():
            swapping.set()
            started = time.perf_counter()
            live.load_async(store.update_for(recs[n % 3].version)).result()  # the swap thread
            swaps.append(time.perf_counter() - started)
            swapping.clear()
            n += 1
            stop.wait(pause)

    def with_swaps(pause: float) -> list[float]:
        stop.clear()
        thread = threading.Thread(target=swapper, args=(pause,))
        thread.start()
        _, busy = serve_for(args.seconds)
        stop.set()
        thread.join()
        return busy

    during = with_swaps(1.0)  # one swap a second; queries that overlapped a swap
    back_to_back = with_swaps(0.0)  # stress: the next swap starts as soon as one ends

    new_item_times = []
    for n in range(20):
        live.note_item(f"new-{n}", [items[n], items[n + 1]])
        started = time.perf_counter()
        live.add_new_items()
        assert live.backend.recommend([[(f"new-{n}", "click")]], 10)[0]  # known to the model and the index
        new_item_times.append(time.perf_counter() - started)

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()}",
        "items": args.items, "dim": args.dim, "new_per_version": args.new_per_version,
        "gil_switch_interval_ms": switch_ms, "serving": args.serving,
        "load_build_swap_s": load_times, "swaps_during_serving": len(swaps),
        "swap_s_mean": statistics.fmean(swaps) if swaps else None,
        "steady": quantiles(steady), "during_swaps": quantiles(during),
        "p99_ratio_during_vs_steady": quantiles(during)["p99_ms"] / quantiles(steady)["p99_ms"],
        "back_to_back_swaps": quantiles(back_to_back),
        "new_item_searchable_ms": quantiles(new_item_times),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.logspace(np.log10(max(1e-5, min(steady + during))), np.log10(max(steady + during)), 60)
    ax.hist(np.array(steady), bins=bins, alpha=0.6, label=f"steady (p99 {result['steady']['p99_ms']:.1f} ms)")
    ax.hist(np.array(during), bins=bins, alpha=0.6,
            label=f"during swaps (p99 {result['during_swaps']['p99_ms']:.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("serving latency per query, s (encode + FAISS top-10, seen excluded)")
    ax.set_ylabel("queries")
    ax.set_title(f"Live model serving, {args.items} items")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.json} and {args.png}")
    live.close()


if __name__ == "__main__":
    main()
