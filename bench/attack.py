"""Fake traffic against the stream's sources: what promotion attacks and floods do to what real
users are recommended, with the worker's defences off and on, side by side with the clean replay.

The stream (Taobao sample or ML-1M, in time order) is replayed by bench/live_quality.py's
``replay`` (the worker's popularity, co-visitation and gate classes, default settings), with
injected events:

- *promotion*: fake users (``--fake-shares`` of the real users), each sending ``--fake-events``
  events: ``--fake-targets`` of the target items (``--targets`` items drawn from those with one or
  two events in the stream) and popular filler items (drawn from the 50 most frequent),
  interleaved; *human* pace (one event per median inter-event gap of the real users, from a random
  start) or *bursty* (all of a fake user's events within 2 seconds of event time);
- *flood*: ``--flood-users`` ids, each sending ``--flood-events`` events at one instant of event
  time, every one on a target item, at 30 % of the stream.

Defences "on" are the worker's, with its settings (defaults, or ``STREAMREC_*`` variables): the
rate limit per user (``streams.ingest.guard.verdict``), one count per user and item in popularity
and co-visitation, and suspicion (``streams.ingest.guard.suspicious``: a user quarantined, their
counts taken back, popularity counts settling ``STREAMREC_POPULARITY_SETTLE_S`` before they are
served; bench/live_quality.py's ``quarantine``, as streams/ingest/agent.py). "off": none of them.
The clean replay runs both ways too. Reported per run: **target exposure** (share of the records
served to real users after the attack starts that hold a target item; also per quarter of the
stream's time), real users' gated HR@10 (seen items excluded) against the clean replay's with the
same defences and with none (also over the stream's second half only: what a stream that has run
a while gets, past the gate's first choices), and the share of real events held back. Fake users'
events are never scored.

    .venv/bin/python bench/attack.py --data taobao,ml1m --limit 300000   # one JSON and one plot
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from live_quality import DATA, replay
from model.replay import load_events
from streams.ingest.guard import RATE_LIMITED, verdict
from streams.settings import load_settings

HERE = Path(__file__).resolve().parent
FAKE, FLOOD = "fake-", "flood-"


def targets_and_fillers(events, n_targets: int, rng: random.Random) -> tuple[list[str], list[str]]:
    counts = Counter(e.item_id for e in events)
    rare = sorted(item for item, c in counts.items() if c <= 2)
    return rng.sample(rare, n_targets), [item for item, _ in counts.most_common(50)]


def categories(events) -> dict:
    """Each item's category in the stream (fake events name it, as a real client's would)."""
    return {e.item_id: e.category for e in events if e.category is not None}


def promotion(events, share: float, pace: str, targets: list[str], fillers: list[str], n_events: int,
              n_targets: int, rng: random.Random) -> list:
    """Fake users' events (not yet merged into the stream)."""
    users = {e.user_id for e in events}
    last: dict[str, float] = {}
    gaps = []
    for e in events:
        if e.user_id in last and e.ts > last[e.user_id]:
            gaps.append(e.ts - last[e.user_id])
        last[e.user_id] = e.ts
    gap = statistics.median(gaps) if gaps else 1.0
    start, end = events[0].ts, events[-1].ts
    category = categories(events)
    fake = []
    for n in range(max(1, round(share * len(users)))):
        items = rng.sample(targets, n_targets) + rng.sample(fillers, n_events - n_targets)
        rng.shuffle(items)
        step = gap if pace == "human" else 2.0 / n_events
        t0 = rng.uniform(start, max(start, end - step * n_events))
        fake += [replace(events[0], user_id=f"{FAKE}{n}", item_id=item, type="click", ts=t0 + j * step,
                         category=category.get(item)) for j, item in enumerate(items)]
    return fake


def flood(events, n_users: int, n_events: int, targets: list[str]) -> list:
    at = events[0].ts + 0.3 * (events[-1].ts - events[0].ts)
    category = categories(events)
    return [replace(events[0], user_id=f"{FLOOD}{u}", item_id=targets[j % len(targets)], type="click", ts=at,
                    category=category.get(targets[j % len(targets)]))
            for u in range(n_users) for j in range(n_events)]


def run(events, injected: list, targets: set[str], defences: bool, seq_len: int) -> dict:
    """One replay of ``events`` with ``injected`` merged in by time."""
    stream = sorted(events + injected, key=lambda e: e.ts) if injected else events
    attack_start = min((e.ts for e in injected), default=float("inf"))
    s = load_settings()
    buckets: dict[str, list] = {}
    held = {"real": 0, "fake": 0}
    seen = {"records": 0, "exposed": 0}
    quarters = [[0, 0] for _ in range(4)]  # [records, exposed] per quarter of the stream's time
    start, span = events[0].ts, max(1e-9, events[-1].ts - events[0].ts)
    clock = [float("-inf")]

    def admit(e) -> bool:
        clock[0] = e.ts
        if not defences:
            return True
        judged, bucket = verdict(s, buckets.get(e.user_id), e.ts, None, None, None)  # the worker's rule
        if judged == RATE_LIMITED:
            held["fake" if e.user_id.startswith((FAKE, FLOOD)) else "real"] += 1
            return False
        if bucket is not None:
            buckets[e.user_id] = bucket
        return True

    def real(user: str) -> bool:
        return not user.startswith((FAKE, FLOOD))

    def watch(user: str, gated: list[str]) -> None:
        if clock[0] >= attack_start and real(user):
            exposed = any(item in targets for item in gated)
            seen["records"] += 1
            seen["exposed"] += exposed
            quarter = quarters[min(3, int(4 * (clock[0] - start) / span))]
            quarter[0] += 1
            quarter[1] += exposed

    def suspect(e) -> None:
        held["fake" if e.user_id.startswith((FAKE, FLOOD)) else "real"] += 1

    started = time.process_time()
    result = replay(stream, 10, 5000, 1000, False, seq_len, admit=admit, count_once=defences, scores=real,
                    watch=watch, suspicion=defences and s.suspect_surprise > 0, held=suspect)
    n_real = sum(1 for e in stream if real(e.user_id))
    return {"hr": result["hr"]["gated"], "hr_sources": result["hr"], "scored": result["scored_events"],
            "hr_second_half": result["hr_from_stream_fraction"]["0.5"]["gated"],
            "exposure": seen["exposed"] / seen["records"] if seen["records"] else 0.0,
            "exposure_by_quarter": [exposed / records if records else None for records, exposed in quarters],
            "records_after_attack": seen["records"], "real_events": n_real,
            "real_held": held["real"], "real_held_share": held["real"] / n_real, "fake_held": held["fake"],
            "injected": len(injected), "served_by_choice": result["served_by_choice"],
            "cpu_s": time.process_time() - started}


def plot(streams: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(streams), figsize=(6 * len(streams), 4.2), squeeze=False)
    for ax, (stream, result) in zip(axes[0], streams.items()):
        runs = result["runs"]
        names = [key.rsplit(" / ", 1)[0] for key in runs if key.endswith("defences off")]
        for j, side in enumerate(("off", "on")):
            ax.bar([n + 0.4 * j for n in range(len(names))],
                   [runs[f"{name} / defences {side}"]["exposure"] for name in names], width=0.4,
                   label=f"defences {side}")
        ax.set_xticks([n + 0.2 for n in range(len(names))], names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("records to real users holding a target")
        ax.set_title(stream)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def attack_stream(path: str, fmt: str, args) -> dict:
    """Every attack, defences off and on, and the clean replay, on one stream."""
    events = load_events(path, fmt)
    if args.limit:
        events = events[:args.limit]
    rng = random.Random(args.seed)
    targets, fillers = targets_and_fillers(events, args.targets, rng)
    seq_len = load_settings().seq_len
    attacks = {"clean": []}  # defences off and on: what they cost real users
    for share in (float(x) for x in args.fake_shares.split(",")):
        for pace in ("human", "bursty"):
            attacks[f"promotion {share:.1%} {pace}"] = promotion(events, share, pace, targets, fillers,
                                                                 args.fake_events, args.fake_targets, rng)
    attacks["flood"] = flood(events, args.flood_users, args.flood_events, targets)
    runs = {}
    for name, injected in attacks.items():
        for defences in (False, True):
            key = f"{name} / defences {'on' if defences else 'off'}"
            runs[key] = r = run(events, injected, set(targets), defences, seq_len)
            print(f"{Path(path).name}, {key}: exposure {r['exposure']:.4f} "
                  f"({' '.join('-' if q is None else f'{q:.2f}' for q in r['exposure_by_quarter'])} by quarter), "
                  f"HR@10 {r['hr']:.4f}, "
                  f"real held {r['real_held']}, fake held {r['fake_held']} of {r['injected']}", flush=True)
    clean_off = runs["clean / defences off"]["hr"]
    for key, r in runs.items():
        name, defences = key.rsplit(" / defences ", 1)
        clean = runs[f"clean / defences {defences}"]["hr"]
        r["hr_over_clean"] = r["hr"] / clean if clean else None  # the clean replay with the same defences
        second = runs[f"clean / defences {defences}"]["hr_second_half"]  # the stream's second half only
        r["hr_second_half_over_clean"] = r["hr_second_half"] / second if second else None
        r["hr_over_clean_off"] = r["hr"] / clean_off if clean_off else None
        if defences == "on":
            off = runs[f"{name} / defences off"]["exposure"]
            r["exposure_over_off"] = r["exposure"] / off if off else None
    return {"data": path, "format": fmt, "events": len(events), "targets": targets, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="taobao,ml1m", help="comma-separated: taobao, ml1m, or paths (with --format)")
    ap.add_argument("--format", default=None, choices=("taobao", "ml1m"))
    ap.add_argument("--limit", type=int, default=0, help="replay the first this many events of each (0: all)")
    ap.add_argument("--fake-shares", default="0.005,0.01,0.03")
    ap.add_argument("--fake-events", type=int, default=10)
    ap.add_argument("--fake-targets", type=int, default=3)
    ap.add_argument("--targets", type=int, default=5)
    ap.add_argument("--flood-users", type=int, default=3)
    ap.add_argument("--flood-events", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "attack"), help="output path without suffix")
    args = ap.parse_args()
    streams = {}
    for name in args.data.split(","):
        path, fmt = DATA.get(name, (name, args.format))
        streams[name if name in DATA else Path(path).stem] = attack_stream(path, fmt, args)
    settings = load_settings()
    result = {"settings": {name: getattr(settings, name) for name in (
                  "rate_limit_per_s", "rate_burst", "suspect_surprise", "suspect_lift", "suspect_top_items",
                  "suspect_memory", "popularity_settle_s")},
              "command": "python bench/attack.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False, 0)
                  and k != "out"), "streams": streams}
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    plot(streams, args.out + ".png")
    print(json.dumps({stream: {k: {m: r.get(m) for m in ("exposure", "exposure_over_off", "hr_over_clean",
                                                         "real_held_share")} for k, r in res["runs"].items()}
                      for stream, res in streams.items()}, indent=1))


if __name__ == "__main__":
    main()
