#!/usr/bin/env python
"""Index latency benchmark (issue 4): ItemIndex kinds side by side with a numpy brute-force baseline.

For each catalogue size: build each index kind (flat = exact, ivf, hnsw), then measure
  * search latency p50/p99/mean and QPS at each batch size (through ItemIndex.search, i.e. what the
    service calls, including id mapping), plus batch-1 with 50 excluded "seen" items;
  * recall@10 against exact search (numpy) on the same queries;
  * build time, refresh time (a rebuild given the index it replaces, as serving does; the swap itself is one
    reference assignment), and the
    time to add 1,000 new items.
Data: index.synthetic — gaussian clusters with log-normal norm scaling (items) and two-interest
user vectors (queries). Writes a JSON result and a batch-1 latency histogram PNG.

  nice -n 5 .venv/bin/python bench/index_latency.py --sizes 100000,1000000 --dim 64 --batches 1,256
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from index import IndexParams, ItemIndex, exact_topk, recall_at_k
from index.synthetic import clustered_items, user_queries

log = logging.getLogger("bench.index_latency")


def summarize(times_s: list[float], batch: int) -> dict:
    t = np.asarray(times_s) * 1e3
    return {"calls": len(t), "p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
            "mean_ms": float(t.mean()), "qps": float(batch * len(t) / (t.sum() / 1e3))}


def time_calls(fn, queries: np.ndarray, batch: int, calls: int, warmup: int = 5) -> list[float]:
    nq = len(queries)
    out = []
    for c in range(warmup + calls):
        s = (c * batch) % max(1, nq - batch + 1)
        q = queries[s:s + batch]
        t0 = time.perf_counter()
        fn(q)
        dt = time.perf_counter() - t0
        if c >= warmup:
            out.append(dt)
    return out


def calls_for(batch: int, args) -> int:
    return args.calls_b1 if batch == 1 else args.calls_batch


def bench_size(n: int, args) -> dict:
    d = args.dim
    t0 = time.perf_counter()
    xb = clustered_items(n, d, seed=args.seed)
    xq = user_queries(args.queries, d, seed=args.seed)
    ids = [f"sku-{i}" for i in range(n)]
    new_x = clustered_items(1000, d, seed=args.seed + 99)
    new_ids = [f"new-{i}" for i in range(1000)]
    print(f"[{n}] data ready in {time.perf_counter() - t0:.1f}s", flush=True)

    t0 = time.perf_counter()
    _, truth = exact_topk(xq, xb, 10)
    print(f"[{n}] exact ground truth for {len(xq)} queries in {time.perf_counter() - t0:.1f}s", flush=True)

    res = {"size": n, "dim": d, "baseline_numpy": {}, "indexes": []}
    for b in args.batches:
        calls = max(3, calls_for(b, args) // (5 if n >= 500_000 else 1))
        times = time_calls(lambda q: exact_topk(q, xb, 10), xq, b, calls, warmup=2)
        res["baseline_numpy"][str(b)] = summarize(times, b)
        print(f"[{n}] numpy brute force batch {b}: {res['baseline_numpy'][str(b)]}", flush=True)

    for kind in args.kinds:
        params = IndexParams(kind=kind)
        t0 = time.perf_counter()
        index = ItemIndex.build(ids, xb, version=1, params=params, exact_threshold=0)
        build_s = time.perf_counter() - t0
        st = index.stats()
        print(f"[{n}] {kind}: built in {build_s:.2f}s {st}", flush=True)
        entry = {"kind": kind, "build_s": build_s, "effort": st["effort"], "nlist": st["nlist"],
                 "tuned_recall": st["tuned_recall"], "latency": {}, "hist_b1_ms": []}

        found = []
        for s in range(0, len(xq), 256):
            found += index.search(xq[s:s + 256], 10)
        labels = np.array([[int(x.split("-")[1]) for x, _ in row] + [-1] * (10 - len(row)) for row in found])
        entry["recall_at_10"] = recall_at_k(labels, truth, 10)
        print(f"[{n}] {kind}: recall@10 = {entry['recall_at_10']:.4f}", flush=True)

        for b in args.batches:
            times = time_calls(lambda q: index.search(q, 10), xq, b, calls_for(b, args))
            entry["latency"][str(b)] = summarize(times, b)
            if b == 1:
                entry["hist_b1_ms"] = [t * 1e3 for t in times]
            print(f"[{n}] {kind} batch {b}: {entry['latency'][str(b)]}", flush=True)

        rng = np.random.default_rng(args.seed)
        seen = [{ids[j] for j in rng.integers(0, n, 45)} | {ids[j] for j in truth[i, :5]} for i in range(len(xq))]
        i_call = iter(range(10**9))
        times = time_calls(lambda q: index.search(q, 10, exclude=[seen[next(i_call) % len(seen)]]),
                           xq, 1, args.calls_b1)
        entry["latency"]["1_filtered50"] = summarize(times, 1)
        print(f"[{n}] {kind} batch 1, 50 excluded: {entry['latency']['1_filtered50']}", flush=True)

        t0 = time.perf_counter()
        index.add(new_ids, new_x)
        entry["add_1000_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        index.search(new_x[:1], 10)
        entry["first_query_after_add_ms"] = (time.perf_counter() - t0) * 1e3
        index.retire(new_ids)
        print(f"[{n}] {kind}: add 1000 items {entry['add_1000_ms']:.1f} ms", flush=True)

        if n <= args.refresh_max:
            t0 = time.perf_counter()  # a rebuild for a new version, given the index it replaces
            ItemIndex.build(ids, xb, version=2, params=params, exact_threshold=0, base=index)
            entry["refresh_s"] = time.perf_counter() - t0
            print(f"[{n}] {kind}: refresh (rebuild + swap) {entry['refresh_s']:.2f}s", flush=True)
        else:
            entry["refresh_s"] = None
            print(f"[{n}] {kind}: refresh not measured (> --refresh-max); it is build time + swap", flush=True)
        res["indexes"].append(entry)
        del index
    return res


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        allt = np.concatenate([e["hist_b1_ms"] for e in r["indexes"] if e["hist_b1_ms"]] or [[1.0]])
        bins = np.logspace(np.log10(max(allt.min(), 1e-3)), np.log10(allt.max()), 60)
        for e in r["indexes"]:
            lat = e["latency"]["1"]
            ax.hist(e["hist_b1_ms"], bins=bins, histtype="step", lw=1.5,
                    label=f"{e['kind']}: p50 {lat['p50_ms']:.2f} p99 {lat['p99_ms']:.2f} ms, R@10 {e['recall_at_10']:.3f}")
        ax.axvline(2.0, color="k", ls="--", lw=1, label="2 ms target (p99)")
        ax.set_xscale("log")
        ax.set_xlabel("batch-1 search latency (ms)")
        ax.set_ylabel("calls")
        ax.set_title(f"{r['size']:,} items x {r['dim']} dims")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batches", default="1,256")
    p.add_argument("--kinds", default="flat,ivf,hnsw")
    p.add_argument("--queries", type=int, default=1024, help="distinct query vectors")
    p.add_argument("--calls-b1", type=int, default=1000, help="timed calls at batch 1")
    p.add_argument("--calls-batch", type=int, default=20, help="timed calls at larger batches")
    p.add_argument("--refresh-max", type=int, default=10**9, help="measure refresh up to this size")
    p.add_argument("--omp-threads", type=int, default=0, help="faiss OpenMP threads (0: faiss default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/index_latency.json")
    p.add_argument("--png", default=None, help="default: --out with .png")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.batches = [int(s) for s in args.batches.split(",")]
    args.kinds = args.kinds.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if args.omp_threads:
        faiss.omp_set_num_threads(args.omp_threads)

    machine = {"python": platform.python_version(), "faiss": faiss.__version__, "numpy": np.__version__,
               "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "omp_threads": faiss.omp_get_max_threads(), "gpus": faiss.get_num_gpus()}
    try:
        machine["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {machine}", flush=True)
    if machine["gpus"] == 0:
        print("no GPU visible to faiss: CPU figures only", flush=True)
    t_start = time.perf_counter()
    results = [bench_size(n, args) for n in args.sizes]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    plot(results, png)
    doc = {"command": " ".join(["bench/index_latency.py"] + (argv if argv is not None else sys.argv[1:])),
           "machine": machine, "wall_s": time.perf_counter() - t_start, "results": results}
    for r in doc["results"]:
        for e in r["indexes"]:
            e["hist_b1_ms"] = [round(t, 4) for t in e["hist_b1_ms"]]
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out} and {png} in {doc['wall_s']:.0f}s", flush=True)
    for r in results:
        for e in r["indexes"]:
            l1, lb = e["latency"]["1"], e["latency"].get(str(args.batches[-1]), {})
            print(f"{r['size']:>8} {e['kind']:5} R@10 {e['recall_at_10']:.3f} b1 p50 {l1['p50_ms']:.3f} p99 "
                  f"{l1['p99_ms']:.3f} ms | b{args.batches[-1]} p99 {lb.get('p99_ms', float('nan')):.2f} ms "
                  f"{lb.get('qps', float('nan')):.0f} qps | build {e['build_s']:.2f}s refresh "
                  f"{e['refresh_s'] if e['refresh_s'] is None else round(e['refresh_s'], 2)}s add1000 "
                  f"{e['add_1000_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
