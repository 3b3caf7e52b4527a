"""The GPU paths in one prepared run (issue 25): the item index on the GPU, the online trainer on
CUDA against the same machine's CPU, and a live stream (embedded broker + a group of workers + a
producer) with the trainer on CUDA. Writes one JSON; prints progress as it goes.

    python bench/gpu_check.py --size full --out $OUT/gpu_check.json    # the GPU machine, <= 8 min
    python bench/gpu_check.py --size tiny                              # anywhere (a test runs it)

1. Index: ``ItemIndex`` with the torch backend (exact inner product on CUDA; on the CPU device
   where there is no GPU) at each catalogue size x ``--dim``: build, recall@10 against numpy's exact
   top-k, batch-1 latency (p50/p99, 20 seen items excluded), batch-256 queries/s, add 1,000 items,
   rebuild with the previous index as ``base`` + swap (the new index answering). FAISS's CPU flat
   index at the same size, batch 256, for the machine's CPU side.
2. Trainer: ``OnlineTrainer.update`` (2 steps of 128 fresh + 128 replayed sequences) per second on
   CUDA and on the CPU (all its cores), over a Taobao-sized (75k items, 50 events) and an
   ML-1M-sized (3,706 items, 200 events) model, for ``trainer_s`` each.
3. Live: per round a fresh broker, a model version announced, and a new consumer group of n
   workers (the model served wherever it has an answer: no gate; every trained version announced)
   drains a backlog (events/s between 10 % and 90 %); a paced phase at ``pace`` events/s then gives
   event -> recommendation p50/p99 (the workers' histogram).
   The first two rounds are one worker with the trainer off and on (same events/s?), then the
   group sizes; model versions published (``model-updates``) and served are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

SIZES = {
    "full": {"index_sizes": [100_000, 1_000_000], "queries": 1_000, "batches": 40, "trainer_s": 15.0,
             "trainer_models": [("taobao", 75_000, 50), ("ml1m", 3_706, 200)],
             "live_rounds": [(1, False), (1, True), (2, True), (4, True), (8, True)],
             "backlog": 30_000, "pace": 1_000, "pace_s": 8.0, "publish_s": 5, "users": 20_000, "items": 75_000, "partitions": 16},
    "tiny": {"index_sizes": [2_000, 10_000], "queries": 50, "batches": 3, "trainer_s": 1.0,
             "trainer_models": [("taobao", 2_000, 20), ("ml1m", 500, 30)],
             "live_rounds": [(1, False), (1, True), (2, True)],
             "backlog": 3_000, "pace": 200, "pace_s": 6.0, "publish_s": 1, "users": 300, "items": 500, "partitions": 2},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def synced() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- 1. the index ----------------------------------------------------------------------------

def index_check(n: int, dim: int, size: dict) -> dict:
    import faiss

    from index import ItemIndex, exact_topk, recall_at_k

    rng = np.random.default_rng(n)
    xb = rng.standard_normal((n, dim), dtype=np.float32)
    xq = rng.standard_normal((max(size["queries"], 256), dim), dtype=np.float32)
    ids = [f"i{k}" for k in range(n)]
    t = time.perf_counter()
    index = ItemIndex.build(ids, xb, version=1, backend="torch")
    synced()
    out = {"items": n, "dim": dim, "device": str(index._index.device), "build_s": round(time.perf_counter() - t, 4)}
    _, truth = exact_topk(xq[:100], xb, 10)
    found = [[int(item[1:]) for item, _ in row] for row in index.search(xq[:100], 10)]
    out["recall_at_10"] = round(recall_at_k(np.asarray(found), truth, 10), 4)
    seen = [set(ids[j] for j in rng.integers(0, n, 20)) for _ in range(len(xq))]
    for i in range(20):  # warm-up: kernels, allocator
        index.search(xq[i:i + 1], 10, exclude=[seen[i]])
    lat = []
    for i in range(size["queries"]):
        t = time.perf_counter()
        index.search(xq[i:i + 1], 10, exclude=[seen[i]])
        lat.append(time.perf_counter() - t)
    out["batch1_ms"] = {"p50": round(pct(lat, 50) * 1e3, 4), "p99": round(pct(lat, 99) * 1e3, 4)}
    t = time.perf_counter()
    for _ in range(size["batches"]):
        index.search(xq[:256], 10, exclude=seen[:256])
    out["batch256_qps"] = round(256 * size["batches"] / (time.perf_counter() - t), 1)
    adds, added = [], []
    for r in range(5):
        new = rng.standard_normal((1_000, dim), dtype=np.float32)
        new_ids = [f"new{r}-{k}" for k in range(1_000)]
        t = time.perf_counter()
        index.add(new_ids, new)
        synced()
        adds.append(time.perf_counter() - t)
        added.append((new_ids, new))
    out["add_1000_ms"] = round(statistics.median(adds) * 1e3, 3)
    out["add_1000_ms_max"] = round(max(adds) * 1e3, 3)  # the first add past the built size grows the tensors
    # the next model version's items: the same ids first (a vocabulary only grows), new vectors
    next_ids = ids + [i for batch, _ in added for i in batch]
    next_vectors = np.vstack([xb + 0.01 * rng.standard_normal(xb.shape, dtype=np.float32), *[v for _, v in added]])
    served = {"index": index}
    t = time.perf_counter()
    rebuilt = ItemIndex.build(next_ids, next_vectors, version=2, backend="torch", base=index)
    served["index"] = rebuilt  # the swap: one reference, as serving's Served pair
    served["index"].search(xq[:1], 10)
    synced()
    out["rebuild_swap_s"] = round(time.perf_counter() - t, 4)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(xb)
    t = time.perf_counter()
    for _ in range(max(1, size["batches"] // 4)):
        cpu.search(xq[:256], 10)
    out["faiss_cpu_flat_batch256_qps"] = round(256 * max(1, size["batches"] // 4) / (time.perf_counter() - t), 1)
    log(f"index {n} x {dim} on {out['device']}: batch-1 p99 {out['batch1_ms']['p99']} ms, batch-256 "
        f"{out['batch256_qps']:.0f} q/s (FAISS CPU {out['faiss_cpu_flat_batch256_qps']:.0f}), add 1,000 "
        f"{out['add_1000_ms']} ms, rebuild+swap {out['rebuild_swap_s']} s, recall@10 {out['recall_at_10']}")
    return out


# --- 2. the trainer --------------------------------------------------------------------------

def trainer_check(name: str, n_items: int, max_len: int, device: str, seconds: float) -> dict:
    from model.encoder import EncoderConfig
    from model.incremental import OnlineTrainer
    from model.recommender import Recommender

    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(n_items)]
    rec = Recommender.fresh(EncoderConfig(max_len=max_len), item_ids=items)
    trainer = OnlineTrainer(rec, device=device, batch_size=128)

    def batch():
        return [[(items[j], "click") for j in rng.integers(0, n_items, max_len + 1)] for _ in range(128)]

    for _ in range(2 if device == "cuda" else 1):  # warm-up (CUDA: kernels, the allocator's pool)
        trainer.update(batch())
    synced()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        trainer.update(batch())
        n += 1
    synced()
    rate = n / (time.perf_counter() - t)
    out = {"model": name, "items": n_items, "max_len": max_len, "device": device, "updates": n,
           "updates_per_s": round(rate, 3), "threads": torch.get_num_threads()}
    log(f"trainer {name} ({n_items} items, {max_len} events) on {device}: {rate:.2f} updates/s")
    return out


# --- 3. the live stream ----------------------------------------------------------------------

def live_check(size: dict, tmp: Path, save) -> list[dict]:
    rounds: list[dict] = []
    for r, (n, train) in enumerate(size["live_rounds"]):
        rounds.append(live_round(size, tmp / f"round{r}", n, train, seed=r))
        save(live=rounds)
        row = rounds[-1]
        log(f"live round {r}: {n} worker(s), trainer {'on' if train else 'off'}: drain "
            f"{row['drain_events_per_s']:.0f} events/s, paced p50 {row['event_to_rec_p50_s']} s / p99 "
            f"{row['event_to_rec_p99_s']} s, {row['versions_published']} versions published, served "
            f"{row['versions_served']}, {row['model_records']:.0f} records from the model")
    return rounds


def live_round(size: dict, tmp: Path, n: int, train: bool, seed: int) -> dict:
    """One fresh broker (its memory storage slows with what it holds), a model announced, a backlog
    drained by a new group of ``n`` workers, then a paced phase."""
    from streams.harness.procs import Worker, announce_model, client_settings, read_topic, start_broker
    from streams.kafka.topics import ensure_topics
    from streams.metrics import histogram_quantile
    from throughput import accepted, make_backlog, produce

    tmp.mkdir(parents=True)
    broker = start_broker(tmp / "broker.log")
    workers: list = []
    try:
        settings = client_settings(broker.bootstrap, size["partitions"])
        ensure_topics(settings)
        announce_model(settings, tmp / "models", [f"sku-{i}" for i in range(size["items"])], version=1)
        produce(settings, make_backlog(size["backlog"], size["users"], size["items"], seed, "backlog"))
        # the model served wherever it has an answer (no gate), every trained version announced
        extra = ["--serving-gate", "false", "--promotion-tail", "0", "--publish-interval-s", str(size["publish_s"])]
        workers = [Worker(broker.bootstrap, tmp / f"data-{k}", app_id="group", partitions=size["partitions"],
                          log_path=tmp / f"worker-{k}.log", train=train, extra=extra) for k in range(n)]
        for w in workers:
            w.data_dir.mkdir()
            w.start()
        for w in workers:
            w.wait_ready(timeout=300)

        def done() -> float:
            return sum(accepted(w.metrics() or {}) for w in workers)

        total = size["backlog"]
        rate = drain_rate(done, total)
        before = _merged([w.metrics() for w in workers])
        produce(settings, make_backlog(int(size["pace"] * size["pace_s"]), size["users"], size["items"], 100 + seed,
                                       "paced"), rate=size["pace"])
        time.sleep(2.0)
        after = _merged([w.metrics() for w in workers])
        name = "streamrec_event_to_recommendation_seconds"
        return {"workers": n, "train": train, "backlog": total, "drain_events_per_s": round(rate, 1),
                "paced_events_per_s": size["pace"],
                "event_to_rec_p50_s": histogram_quantile(after, name, 0.5, baseline=before),
                "event_to_rec_p99_s": histogram_quantile(after, name, 0.99, baseline=before),
                "versions_published": len(read_topic(settings, settings.topic_model_updates, idle=1.0, timeout=10)) - 1,
                "versions_served": [int(w.metrics().get("streamrec_model_version", 0)) for w in workers],
                "model_records": after.get('streamrec_recommendations_total{source="model"}', 0.0),
                "records": sum(v for k, v in after.items() if k.startswith("streamrec_recommendations_total"))}
    finally:
        with ThreadPoolExecutor(max(1, len(workers))) as pool:  # 8 graceful stops at once, not one by one
            list(pool.map(lambda w: w.stop(), workers))
        broker.stop()


def drain_rate(done, total: int, timeout: float = 300.0) -> float:
    """Accepted events/s between the first samples (every 0.1 s) at 10 % and at 90 % of ``total``
    (from the first sample on, where the group was past 10 % before it was first asked)."""
    samples = [(time.monotonic(), done())]
    while samples[-1][1] < total and samples[-1][0] - samples[0][0] < timeout:
        time.sleep(0.1)
        samples.append((time.monotonic(), done()))
    start = next(s for s in samples if s[1] >= 0.1 * total or s is samples[-1])
    end = next((s for s in samples if s[1] >= 0.9 * total and s[0] > start[0]), samples[-1])
    return (end[1] - start[1]) / (end[0] - start[0]) if end[0] > start[0] else 0.0


def _merged(scrapes: list[dict]) -> dict:
    out: dict[str, float] = {}
    for scrape in scrapes:
        for key, value in (scrape or {}).items():
            out[key] = out.get(key, 0.0) + value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--parts", default="index,trainer,live", help="comma-separated: index, trainer, live")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    args = ap.parse_args()
    size, parts = SIZES[args.size], set(args.parts.split(","))
    cuda = torch.cuda.is_available()
    report = {"command": "python bench/gpu_check.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                         f"torch {torch.__version__}, " + (torch.cuda.get_device_name(0) if cuda else "no CUDA device"),
              "size": args.size, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    started = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(**parts) -> None:  # after each part: a run stopped at its time limit keeps what it measured
        report.update(parts)
        report["wall_s"] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(report, indent=2))

    def index_part() -> None:
        report["index"] = []
        for n in size["index_sizes"]:
            report["index"].append(index_check(n, args.dim, size))
            save()

    def trainer_part() -> None:
        report["trainer"] = []
        for name, n, length in size["trainer_models"]:
            for device in ["cuda", "cpu"] if cuda else ["cpu"]:
                report["trainer"].append(trainer_check(name, n, length, device, size["trainer_s"]))
                save()

    def live_part() -> None:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            report["live"] = live_check(size, Path(tmp), save)

    failed = []
    for name, part in (("index", index_part), ("trainer", trainer_part), ("live", live_part)):
        if name not in parts:
            continue
        try:  # one run on a borrowed machine: a part that breaks is reported, the others still run
            part()
        except Exception as exc:
            failed.append(name)
            report.setdefault("errors", {})[name] = traceback.format_exc()[-4000:]
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            save()
    save()
    log(f"wrote {args.out} after {report['wall_s']} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
