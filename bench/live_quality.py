"""Live quality of the stream-maintained sources and the gate, replayed offline in time order.

Every event of the stream is handled as the worker handles it, with the worker's own classes and
default settings: scored first, then learned from. After each event of a user, every source makes
that user's record for their next event (the record "in force"); when the next event comes, each
source's record scores a hit if it held the event's item. Seen items are excluded everywhere and
an event on an item the user has seen is not scored (``--allow-repeats`` scores those too, with
seen items left in every list).

Sources: ``popular`` (the worker's decayed popularity, ``streams.ingest.popularity``), ``covisit``
(``streams.ingest.covisit``), ``gated`` (the record the gate, ``streams.serving.gate``, serves: it
chooses per segment between popular and covisit, scoring both), and the baseline a consumer gets
for free, ``alltime`` (all-time popularity so far). The encoder is not in this bench (a model from
a cold start needs the trainer in the loop: bench/prequential.py measures it). Rankings of
popularity are refreshed every ``--rank-every`` events (the worker: every second). Settings are
the worker's defaults, not tuned on these streams.

    .venv/bin/python bench/live_quality.py --data taobao   # or ml1m, or a path with --format
"""
from __future__ import annotations

import argparse
import heapq
import json
import time
from pathlib import Path

from model.replay import load_events
from streams.ingest.covisit import CoVisitation
from streams.ingest.popularity import Popularity
from streams.serving.gate import SEGMENTS, Gate
from streams.settings import Settings

HERE = Path(__file__).resolve().parent
DATA = {"taobao": ("../shared/data/taobao-userbehavior-sample/flink_ecommerce-time-slice/UserBehavior.csv.gz", "taobao"),
        "ml1m": ("../shared/data/ml-1m/ml-1m.txt.gz", "ml1m")}
SOURCES = ("alltime", "popular", "covisit", "gated")


def replay(events, k: int, window: int, rank_every: int, allow_repeats: bool, seq_len: int,
           new_item_s: float = 1800.0) -> dict:
    s = Settings()
    popularity = Popularity(s.popularity_half_life_s, 10 * s.popularity_capacity)  # one worker, all partitions
    covisit = CoVisitation(s.covisit_half_life_s)
    gate = Gate(half_life_events=s.gate_half_life_events, min_evidence=s.gate_min_evidence, long_from=s.gate_long_from,
                sample=s.gate_sample)
    counts: dict[str, int] = {}
    history: dict[str, list[str]] = {}
    in_force: dict[str, dict[str, list[str]]] = {}  # user -> source -> record for the next event
    hits = {src: [] for src in SOURCES}  # per scored event: 1/0
    scored_at: list[int] = []  # the position in the stream of each scored event
    seg_hits = {(seg, src): [0, 0] for seg in SEGMENTS for src in SOURCES}
    served_by: dict[str, int] = {}
    first_seen: dict[str, float] = {}  # item -> event time of its first event
    new_hits = {src: [0, 0] for src in SOURCES}  # events on an item first seen within new_item_s
    ranked_all: list[str] = []
    ranked_pop: list[str] = []
    started = time.process_time()
    for n, e in enumerate(events):
        if n % rank_every == 0:
            ranked_all = [i for i, _ in heapq.nlargest(k + seq_len, counts.items(), key=lambda kv: kv[1])]
            ranked_pop = [i for i, _ in popularity.top(k + seq_len)]
        h = history.setdefault(e.user_id, [])
        seen_before = e.item_id in h
        records = in_force.pop(e.user_id, None)
        if records is not None and (allow_repeats or not seen_before):
            seg = gate.segment(len(h))
            scored_at.append(n)
            for src in SOURCES:
                hit = e.item_id in records[src]
                hits[src].append(hit)
                seg_hits[seg, src][0] += hit
                seg_hits[seg, src][1] += 1
                if e.ts - first_seen.get(e.item_id, e.ts) <= new_item_s:
                    new_hits[src][0] += hit
                    new_hits[src][1] += 1
        gate.score(e.user_id, e.item_id, seen_before and not allow_repeats)
        # learn
        counts[e.item_id] = counts.get(e.item_id, 0) + 1
        first_seen.setdefault(e.item_id, e.ts)
        popularity.add(e.item_id, e.ts)
        covisit.add(h, e.item_id, e.ts)
        h.append(e.item_id)
        del h[:-seq_len]
        # the records in force for this user's next event
        seen = () if allow_repeats else set(h)
        lists = {"alltime": [i for i in ranked_all if i not in seen][:k],
                 "popular": [i for i in ranked_pop if i not in seen][:k],
                 "covisit": [i for i, _ in covisit.recommend(h, k + (len(h) if allow_repeats else 0))
                             if allow_repeats or i not in seen][:k]}
        seg = gate.segment(len(h))
        choice = gate.choice(seg)
        chosen = lists["covisit"] if choice == "covisit" and lists["covisit"] else lists["popular"]
        if choice == "covisit" and lists["covisit"]:  # filled up with popularity, as serving does
            chosen = chosen + [i for i in lists["popular"] if i not in chosen][:k - len(chosen)]
        served_by[choice] = served_by.get(choice, 0) + 1
        lists["gated"] = chosen
        in_force[e.user_id] = lists
        remembered = {"model": [], "popular": lists["popular"]}
        if choice == "covisit" or gate.samples(e.user_id):  # as serving lists it (Gate.samples)
            remembered["covisit"] = lists["covisit"]
        gate.remember(e.user_id, seg, remembered)
    cpu = time.process_time() - started
    scored = len(hits["alltime"])
    hr = {src: sum(v) / scored if scored else 0.0 for src, v in hits.items()}
    windows = []
    for a in range(0, scored, window):
        b = min(scored, a + window)
        windows.append({"start": a, "end": b, **{src: sum(hits[src][a:b]) / (b - a) for src in SOURCES}})
    best_simple = max(hr["alltime"], hr["popular"], hr["covisit"])
    worst = min((w["gated"] / max(w["alltime"], w["popular"], w["covisit"]) for w in windows
                 if max(w["alltime"], w["popular"], w["covisit"]) > 0), default=None)
    tail = [w for w in windows if w["start"] >= scored // 10]  # after the first 10 % of the scored events
    tail_hr = {src: sum(w[src] * (w["end"] - w["start"]) for w in tail) / max(1, sum(w["end"] - w["start"] for w in tail))
               for src in SOURCES}
    # over the part of the stream that bench/prequential.py replays after pretraining (Taobao: the
    # second half; ML-1M: the last 30 %), to set the sources beside the encoder on the same events
    hr_from = {}
    for fraction in (0.5, 0.7):
        first = next((j for j, at in enumerate(scored_at) if at >= fraction * len(events)), scored)
        part = scored - first
        hr_from[str(fraction)] = {"events": part, **{src: sum(hits[src][first:]) / part if part else None
                                                     for src in SOURCES}}
    return {"events": len(events), "scored_events": scored, "hr_after_first_10pct": tail_hr,
            "hr_from_stream_fraction": hr_from, "k": k, "allow_repeats": allow_repeats,
            "hr": hr, "gated_over_best_simple": hr["gated"] / best_simple if best_simple else None,
            "worst_window_gated_over_best": worst, "window": window,
            "segments": {f"{seg}/{src}": {"hr": h / t if t else None, "events": t}
                         for (seg, src), (h, t) in seg_hits.items()},
            "new_items": {src: {"hr": h / t if t else None, "events": t} for src, (h, t) in new_hits.items()},
            "new_item_s": new_item_s, "served_by_choice": served_by, "gate": gate.report(), "windows": windows,
            "cpu_us_per_event": cpu / max(1, len(events)) * 1e6}


def plot(result: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    x = [w["end"] for w in result["windows"]]
    for src in SOURCES:
        ax.plot(x, [w[src] for w in result["windows"]], label=f"{src} ({result['hr'][src]:.4f})")
    ax.set_xlabel("scored events")
    ax.set_ylabel(f"HR@{result['k']} per window of {result['window']:,}")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="taobao", help="taobao, ml1m, or a path (with --format)")
    ap.add_argument("--format", default=None, choices=("taobao", "ml1m"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--window", type=int, default=5000, help="scored events per window of the curve")
    ap.add_argument("--rank-every", type=int, default=1000)
    ap.add_argument("--allow-repeats", action="store_true")
    ap.add_argument("--new-item-s", type=float, default=1800.0,
                    help="an event's item is new when first seen at most this long before (event time; "
                         "ML-1M's time is the event's position)")
    ap.add_argument("--limit", type=int, default=0, help="replay at most this many events (0: all)")
    ap.add_argument("--out", default=None, help="output path without suffix (default bench/results/live_quality_<data>)")
    args = ap.parse_args()
    path, fmt = DATA.get(args.data, (args.data, args.format))
    events = load_events(path, fmt)
    if args.limit:
        events = events[:args.limit]
    name = args.data if args.data in DATA else Path(path).stem
    out = args.out or str(HERE / "results" / f"live_quality_{name}{'_repeats' if args.allow_repeats else ''}")
    print(f"{len(events):,} events from {path}", flush=True)
    result = replay(events, args.k, args.window, args.rank_every, args.allow_repeats, Settings().seq_len,
                    args.new_item_s)
    result.update({"data": path, "format": fmt, "command": "python bench/live_quality.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False, 0) and k != "out")})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(json.dumps(result, indent=1))
    plot(result, out + ".png", f"live quality, {name}{' (repeats allowed)' if args.allow_repeats else ''}")
    print(json.dumps({k: result[k] for k in ("scored_events", "hr", "gated_over_best_simple",
                                             "worst_window_gated_over_best", "new_items", "cpu_us_per_event",
                                             "served_by_choice")},
                     indent=1))


if __name__ == "__main__":
    main()
