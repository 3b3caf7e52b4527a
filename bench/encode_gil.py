"""Encoding latency, eager PyTorch vs the traced serving encoder, alone and beside a thread that
runs Python (as the worker's event loop or a model swap does).

Each eager torch op releases the GIL and must take it back; while another thread runs Python,
every such return can wait up to the interpreter's switch interval (5 ms). The traced encoder
(``SeqEncoder.serving_encoder``) is one call. Writes JSON (``--json``).

    python bench/encode_gil.py --items 5000 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch


from model.encoder import EncoderConfig, SeqEncoder


def time_calls(fn, seconds: float) -> list[float]:
    times, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"n": len(times), "p50_ms": round(statistics.median(ordered) * 1e3, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 3),
            "mean_ms": round(statistics.fmean(ordered) * 1e3, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--history", type=int, default=20, help="items per user")
    ap.add_argument("--batch", type=int, default=1, help="users per encode")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parents[1] / "docs" / "probes" / "encode_gil.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # the worker default
    torch.manual_seed(0)
    enc = SeqEncoder(EncoderConfig(n_items=args.items + 1, max_len=50)).eval()
    traced = enc.serving_encoder()
    items = torch.randint(1, args.items + 1, (args.batch, args.history))
    types = torch.ones_like(items)
    calls = {"eager": lambda: enc.encode_sequences(items, types), "traced": lambda: traced(items, types)}

    def busy(stop: threading.Event) -> None:
        while not stop.is_set():
            sum(range(1000))  # pure Python, holds the GIL between switch intervals

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread",
              "args": vars(args), "switch_interval_s": sys.getswitchinterval()}
    with torch.no_grad():
        for fn in calls.values():
            fn()
        for beside in ("alone", "beside_python_thread"):
            stop = threading.Event()
            other = threading.Thread(target=busy, args=(stop,)) if beside != "alone" else None
            if other:
                other.start()
            try:
                for name, fn in calls.items():
                    result[f"{name}_{beside}"] = summary(time_calls(fn, args.seconds))
                    print(name, beside, result[f"{name}_{beside}"], flush=True)
            finally:
                stop.set()
                if other:
                    other.join()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
