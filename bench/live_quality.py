"""Live quality of the stream-maintained sources and the gate, replayed offline in time order.

Every event of the stream is handled as the worker handles it, with the worker's own classes and
default settings: scored first, then learned from. After each event of a user, every source makes
that user's record for their next event (the record "in force"); when the next event comes, each
source's record scores a hit if it held the event's item. Seen items are excluded everywhere and
an event on an item the user has seen is not scored (``--allow-repeats`` scores those too, with
seen items left in every list).

Sources: ``popular`` (the worker's decayed popularity, ``streams.ingest.popularity``), ``covisit``
(``streams.ingest.covisit``), ``category`` (recent popularity in the category of the user's last
event, ``streams.ingest.categories``: events without a category have none), ``gated`` (the record
the gate, ``streams.serving.gate``, serves: it chooses per segment among them, scoring each), and
the baseline a consumer gets
for free, ``alltime`` (all-time popularity so far). With ``--checkpoint`` or ``--pretrain-minutes``
a pretrained encoder is a source too (``model``, frozen), and so is its list fused with
co-visitation's (``blend``, ``streams.serving.recommend.fuse``); the gate chooses among them all,
records are made per micro-batch, and only the events after ``--from-fraction`` of the stream are scored.
With ``--online`` the model is trained as the leader trains it (``streams.lifecycle.training``:
the worker's OnlineTrainer settings, held-back tail and promotion judgement), on every event's
sequence, from the pretrained model or from scratch; each version it announces serves from the
next record on (the worker loads it within a second). Rankings of
popularity are refreshed every ``--rank-every`` events (the worker: every second). Settings are
the worker's (its defaults, or ``STREAMREC_*`` variables as the worker reads them), not tuned on
these streams.

    .venv/bin/python bench/live_quality.py --data taobao   # or ml1m, or a path with --format
"""
from __future__ import annotations

import argparse
import heapq
import json
import time
from pathlib import Path

import torch

from model.encoder import EncoderConfig
from model.recommender import Recommender
from model.replay import load_events
from streams.ingest.categories import CategoryPopularity
from streams.ingest.covisit import CoVisitation
from streams.ingest import guard
from streams.ingest.guard import counts as counted
from streams.ingest.popularity import Popularity, Settling, popular_set
from streams.lifecycle.trainer import online_trainer
from streams.lifecycle.training import UPDATE_BATCH, Training
from streams.metrics import Metrics
from streams.serving.gate import FORGET_EVENTS, SEGMENTS, Gate
from streams.serving.recommend import fuse, made_by
from streams.settings import load_settings

HERE = Path(__file__).resolve().parent
DATA = {"taobao": ("../shared/data/taobao-userbehavior-sample/flink_ecommerce-time-slice/UserBehavior.csv.gz", "taobao"),
        "ml1m": ("../shared/data/ml-1m/ml-1m.txt.gz", "ml1m")}
SOURCES = ("alltime", "popular", "covisit", "category", "gated")
GATE_WARMUP = 20_000  # events before the scored ones with records made: the gate's evidence


def model_lists(rec, histories: list, k: int, allow_repeats: bool) -> list[list[str]]:
    """The model's top-k per history (seen items removed unless ``allow_repeats``); [] for a
    history without a known item (serving gives that user another source)."""
    return [[item for item, _ in a["items"]] if a["source"] == "model" else []
            for a in rec.recommend(histories, k, exclude_seen=not allow_repeats)]


class Suspicion:
    """Ingest's suspicion (streams/ingest/agent.py) in the replay: the users quarantined, their
    counts taken back from the served popularity (``served``, landed counts), the one suspicion
    ranks (``raw``: every count at once), the settling and co-visitation."""

    def __init__(self, s, served: Popularity, raw: Popularity, settling: Settling, covisit: CoVisitation,
                 categories: CategoryPopularity) -> None:
        self.s, self.served, self.raw, self.settling, self.covisit = s, served, raw, settling, covisit
        self.categories = categories
        self.gate: Gate | None = None  # whose scores a quarantined user's events are taken back from
        self.base_rate = guard.BaseRate()
        self.evidence: dict[str, list] = {}
        self.quarantined: set[str] = set()
        self.stamps: dict[str, list[tuple[str, float]]] = {}  # per user, the (item, ts) of the history
        self.unjudged: set[str] | None = set()  # counted before the base rate was known
        self.second_look: tuple[float, set[str]] | None = None  # as Ingest.second_look

    def held(self, e, h: list[str], popular: frozenset) -> bool:
        """True holds the event back: its user is, or is now, quarantined."""
        s, user = self.s, e.user_id
        if user in self.quarantined:
            return True
        mine = self.stamps.setdefault(user, [])
        if counted(h, e.item_id):
            on_popular = e.item_id in popular
            if user not in self.evidence and len(popular) >= s.suspect_top_items:  # as ingest
                self.base_rate.observe(on_popular)
            if self.unjudged is not None:  # as Ingest.judge_unjudged
                if self.base_rate.rate is None:
                    self.unjudged.add(user)
                else:
                    self.second_look = (e.ts + guard.SECOND_LOOK_S, self.judge(self.unjudged, user, popular))
                    self.unjudged = None
            elif self.second_look is not None and e.ts >= self.second_look[0]:
                users, self.second_look = self.second_look[1], None
                self.judge(users, user, popular)
            sx = guard.evidence(self.evidence.get(user), on_popular, s.suspect_memory)
            if guard.suspicious(sx, self.base_rate.rate, s.suspect_lift, s.suspect_surprise):
                self.take_back(user)
                return True
            self.evidence[user] = sx
        mine.append((e.item_id, e.ts))
        del mine[:-s.seq_len]
        return False

    def judge(self, users: set[str], but: str, popular: frozenset) -> set[str]:
        """As Ingest.judge: the users (``but`` one) judged on their histories; those left."""
        s, left = self.s, {but} & users
        for other in users - {but} - self.quarantined:
            sx = guard.history_evidence(self.stamps[other], popular, s.suspect_memory)
            if sx and guard.suspicious(sx, self.base_rate.rate, s.suspect_lift, s.suspect_surprise):
                self.take_back(other)
            else:
                left.add(other)
        return left

    def take_back(self, user: str) -> None:
        self.quarantined.add(user)
        self.settling.cancel(user.encode())
        stamped = self.stamps.get(user, [])
        for item, ts in guard.first_counts(stamped):  # what was counted of them
            self.raw.retract(item, ts)
            if self.served is not self.raw and self.settling.landed(ts):
                self.served.retract(item, ts)
        self.covisit.retract_history(stamped)
        self.categories.retract_history(stamped)
        if self.gate is not None:
            self.gate.forget(user)


def replay(events, k: int, window: int, rank_every: int, allow_repeats: bool, seq_len: int,
           new_item_s: float = 1800.0, model=None, batch: int = 1, score_from: int = 0,
           training: Training | None = None, publish_every: int = 15_000, admit=None, count_once: bool = True,
           scores=None, watch=None, suspicion: bool = False, held=None) -> dict:
    """``model``: a Recommender served as the ``model`` source (frozen); records are then made per
    micro-batch of ``batch`` events, as the worker makes them. Events before ``score_from`` are
    learned from, not scored (records are made for the last ``GATE_WARMUP`` of them, so that the
    gate has its evidence on popularity and co-visitation when scoring starts; not on the model,
    which learned those events). ``training``: the worker's training and promotion
    (``streams.lifecycle.training``) learns from every event's sequence, as the leader's trainer
    does, and is asked for a version every ``publish_every`` events; a version it announces
    serves as ``model`` from then on (``model`` until the first: None when training from scratch).

    For bench/attack.py: ``admit(event)`` False holds an event back (never applied or scored);
    ``count_once`` False counts a user's repeats in popularity and co-visitation (the worker does
    not); ``scores(user)`` False leaves a user's events unscored; ``watch(user, gated)`` sees every
    record the gate serves; ``suspicion`` quarantines suspicious users as ingest does
    (:class:`Suspicion`, ``streams.ingest.guard``: their counts taken back, their events from then
    on held, each one given to ``held(event)``)."""
    sources = SOURCES + (("model", "blend") if model is not None or training is not None else ())
    versions: list[int] = []  # the event after which each announced version served
    pending: list = []  # training sequences not yet handed to the training
    s = load_settings()
    popularity = Popularity(s.popularity_half_life_s, 10 * s.popularity_capacity)  # one worker, all partitions
    covisit = CoVisitation(s.covisit_half_life_s)
    categories = CategoryPopularity(s.popularity_half_life_s)
    last_category: dict[str, str] = {}  # user -> the category of their last event that named one
    gate = Gate(half_life_events=s.gate_half_life_events, half_life_hits=s.gate_half_life_hits, min_evidence=s.gate_min_evidence, switch_z=s.gate_switch_z,
                long_from=s.gate_long_from, sample=s.gate_sample,  # with suspicion, as the worker's gate
                keep_scored=FORGET_EVENTS if suspicion else 0, settle_s=s.popularity_settle_s if suspicion else 0.0)
    counts: dict[str, int] = {}
    history: dict[str, list[str]] = {}
    in_force: dict[str, dict[str, list[str]]] = {}  # user -> source -> record for the next event
    typed: dict[str, list[tuple[str, str]]] = {}  # the model's view of the history
    due: dict[str, None] = {}  # users whose record is made at the end of the micro-batch
    batched = 0  # events in the micro-batch (a user with several has one record, as in the worker)
    hits = {src: [] for src in sources}  # per scored event: 1/0
    scored_at: list[int] = []  # the position in the stream of each scored event
    seg_hits = {(seg, src): [0, 0] for seg in SEGMENTS for src in sources}
    served_by: dict[str, int] = {}
    first_seen: dict[str, float] = {}  # item -> event time of its first event
    new_hits = {src: [0, 0] for src in sources}  # events on an item first seen within new_item_s
    ranked_all: list[str] = []
    ranked_pop: list[str] = []
    popular: frozenset = frozenset()
    # with suspicion, as the worker's PopularityBoard: counts settle before they are served, and
    # suspicion ranks every count at once
    settling = Settling(s.popularity_settle_s)
    settles = suspicion and settling.settle_s > 0
    raw = Popularity(s.popularity_half_life_s, 10 * s.popularity_capacity) if settles else popularity
    suspect = Suspicion(s, popularity, raw, settling, covisit, categories)
    if suspicion:
        suspect.gate = gate

    def make_records(users: list[str], warmup: bool) -> None:
        """The records in force for these users' next events; in the ``warmup`` before
        ``score_from`` the gate is not shown the model's lists (it learned those events)."""
        models = model_lists(model, [typed[u] for u in users], k, allow_repeats) if model is not None else None
        for j, user in enumerate(users):
            h = history[user]
            seen = () if allow_repeats else set(h)
            lists = {"alltime": [i for i in ranked_all if i not in seen][:k],
                     "popular": [i for i in ranked_pop if i not in seen][:k],
                     "covisit": [i for i, _ in covisit.recommend(h, k + (len(h) if allow_repeats else 0))
                                 if allow_repeats or i not in seen][:k],
                     "category": [i for i, _ in categories.recommend(last_category.get(user), () if allow_repeats else h, k)]}
            if models is not None:
                lists["model"] = models[j]
            elif training is not None:  # no version yet: as serving, no model list
                lists["model"] = []
            both = bool(lists.get("model")) and bool(lists["covisit"])
            if "model" in lists:  # the blend as a record makes it (the one list there is, if only one)
                lists["blend"] = ([i for i, _ in fuse(lists["model"], lists["covisit"], k)] if both
                                  else lists["model"] or lists["covisit"])
            seg = gate.segment(len(h))
            choice = gate.choice(seg)
            source = made_by(choice, bool(lists.get("model")), bool(lists["covisit"]), bool(lists["category"]))
            if source in ("model", "blend"):
                chosen = lists[source]
            elif source in ("covisit", "category"):  # filled up with popularity, as serving does
                chosen = lists[source] + [i for i in lists["popular"] if i not in lists[source]]
                chosen = chosen[:k]
            else:
                chosen = lists["popular"]
            served_by[choice] = served_by.get(choice, 0) + 1
            lists["gated"] = chosen
            if watch is not None:
                watch(user, chosen)
            in_force[user] = lists
            remembered = {"popular": lists["popular"]}
            if not warmup:
                remembered["model"] = lists.get("model", [])
            if choice in ("covisit", "blend") or gate.samples():  # as serving lists it (Gate.samples)
                remembered["covisit"] = lists["covisit"]
                if both and not warmup:  # as serving: where both lists are
                    remembered["blend"] = lists["blend"]
            if user in last_category and (choice == "category" or gate.samples()):  # as serving lists it
                remembered["category"] = lists["category"]
            gate.remember(user, seg, remembered)

    started = time.process_time()
    for n, e in enumerate(events):
        if n % rank_every == 0:
            ranked_all = [i for i, _ in heapq.nlargest(k + seq_len, counts.items(), key=lambda kv: kv[1])]
            ranked_pop = [i for i, _ in popularity.top(k + seq_len)]
            if suspicion:
                popular = popular_set([raw], s.suspect_top_items)
        if admit is not None and not admit(e):
            continue
        h = history.setdefault(e.user_id, [])
        if suspicion and suspect.held(e, h, popular):
            held(e)
            continue
        seen_before = e.item_id in h
        records = in_force.pop(e.user_id, None)
        if records is not None and (allow_repeats or not seen_before) and n >= score_from and (
                scores is None or scores(e.user_id)):
            seg = gate.segment(len(h))
            scored_at.append(n)
            for src in sources:
                hit = e.item_id in records[src]
                hits[src].append(hit)
                seg_hits[seg, src][0] += hit
                seg_hits[seg, src][1] += 1
                if e.ts - first_seen.get(e.item_id, e.ts) <= new_item_s:
                    new_hits[src][0] += hit
                    new_hits[src][1] += 1
        gate.score(e.user_id, e.item_id, seen_before and not allow_repeats, e.ts)
        # learn
        counts[e.item_id] = counts.get(e.item_id, 0) + 1
        first_seen.setdefault(e.item_id, e.ts)
        if counted(h, e.item_id) or not count_once:  # one count per user and item, as ingest counts
            if settles:  # as PopularityBoard.count, settling once someone can be suspected
                raw.add(e.item_id, e.ts)
                if suspect.base_rate.rate is None:
                    popularity.add(e.item_id, e.ts)
                else:
                    settling.add(0, e.item_id, e.ts, e.user_id.encode())
                for _, item, ts in settling.due():
                    popularity.add(item, ts)
            else:
                popularity.add(e.item_id, e.ts)
            covisit.add(h, e.item_id, e.ts)
            if e.category is not None:
                categories.add(e.category, e.item_id, e.ts)
        if e.category is not None:
            last_category[e.user_id] = e.category
        h.append(e.item_id)
        del h[:-seq_len]
        if model is not None or training is not None:
            t = typed.setdefault(e.user_id, [])
            t.append((e.item_id, e.type))
            del t[:-seq_len]
        if training is not None and n >= score_from:  # a pretrained model has learned the events before
            if len(t) >= 2:
                pending.append(list(t))
            if len(pending) >= UPDATE_BATCH:
                training.learn(pending)
                pending = []
            if n and n % publish_every == 0:
                version = training.judge()[1]
                if version is not None:
                    model = version
                    model.prepare_serving()
                    versions.append(n)
        if n >= score_from - GATE_WARMUP:  # before that, the sources only learn
            due[e.user_id] = None
            batched += 1
        if due and (batched >= batch or n == len(events) - 1):
            make_records(list(due), warmup=n < score_from)
            due.clear()
            batched = 0
        if (model is not None or training is not None) and n % 50_000 == 0:
            print(f"  {n:,} of {len(events):,} events, {len(versions)} versions announced", flush=True)
    cpu = time.process_time() - started
    scored = len(hits["alltime"])
    hr = {src: sum(v) / scored if scored else 0.0 for src, v in hits.items()}
    windows = []
    for a in range(0, scored, window):
        b = min(scored, a + window)
        windows.append({"start": a, "end": b, **{src: sum(hits[src][a:b]) / (b - a) for src in sources}})
    best_simple = max(hr["alltime"], hr["popular"], hr["covisit"])
    worst = min((w["gated"] / max(w["alltime"], w["popular"], w["covisit"]) for w in windows  # full windows only
                 if w["end"] - w["start"] == window and max(w["alltime"], w["popular"], w["covisit"]) > 0), default=None)
    tail = [w for w in windows if w["start"] >= scored // 10]  # after the first 10 % of the scored events
    tail_hr = {src: sum(w[src] * (w["end"] - w["start"]) for w in tail) / max(1, sum(w["end"] - w["start"] for w in tail))
               for src in sources}
    # over the part of the stream that bench/prequential.py replays after pretraining (Taobao: the
    # second half; ML-1M: the last 30 %), to set the sources beside the encoder on the same events
    hr_from = {}
    for fraction in (0.5, 0.7):
        first = next((j for j, at in enumerate(scored_at) if at >= fraction * len(events)), scored)
        part = scored - first
        hr_from[str(fraction)] = {"events": part, **{src: sum(hits[src][first:]) / part if part else None
                                                     for src in sources}}
    return {"events": len(events), "scored_events": scored, "hr_after_first_10pct": tail_hr,
            "hr_from_stream_fraction": hr_from, "k": k, "allow_repeats": allow_repeats,
            "hr": hr, "gated_over_best_simple": hr["gated"] / best_simple if best_simple else None,
            "worst_window_gated_over_best": worst, "window": window,
            "segments": {f"{seg}/{src}": {"hr": h / t if t else None, "events": t}
                         for (seg, src), (h, t) in seg_hits.items()},
            "new_items": {src: {"hr": h / t if t else None, "events": t} for src, (h, t) in new_hits.items()},
            "new_item_s": new_item_s, "categories": len(categories), "served_by_choice": served_by, "gate": gate.report(), "windows": windows,
            "versions_announced_after_event": versions if training is not None else None,
            "cpu_us_per_event": cpu / max(1, len(events)) * 1e6}


def plot(result: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    x = [w["end"] for w in result["windows"]]
    for src in result["hr"]:
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
    ap.add_argument("--checkpoint", default=None, help="serve this pretrained model as the source 'model' (frozen)")
    ap.add_argument("--pretrain-minutes", type=float, default=0.0,
                    help="pretrain a model on the first --from-fraction of the stream for this long (CPU) and "
                         "serve it as 'model' (frozen)")
    ap.add_argument("--from-fraction", type=float, default=0.7,
                    help="with a model: score only the events after this fraction of the stream (the model "
                         "was trained on the ones before; every source learns from them)")
    ap.add_argument("--batch", type=int, default=64, help="records made per micro-batch of this many events (the worker's holds the events of "
                         "its 10 ms window, ~10 at 1,000 events/s; the latest per user)")
    ap.add_argument("--online", action="store_true",
                    help="train the model online with the worker's trainer and promotion gate, from the "
                         "pretrained one (--checkpoint, --pretrain-minutes) or, without one, from scratch")
    ap.add_argument("--publish-every", type=int, default=15_000,
                    help="with --online: events between the trainer's publish intervals (the worker's 15 s "
                         "at 1,000 events/s)")
    ap.add_argument("--out", default=None, help="output path without suffix (default bench/results/live_quality_<data>)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path, fmt = DATA.get(args.data, (args.data, args.format))
    events = load_events(path, fmt)
    if args.limit:
        events = events[:args.limit]
    name = args.data if args.data in DATA else Path(path).stem
    model = None
    if args.checkpoint or args.pretrain_minutes:
        name += "_model"
    if args.online:
        name += "_online"
    out = args.out or str(HERE / "results" / f"live_quality_{name}{'_repeats' if args.allow_repeats else ''}")
    print(f"{len(events):,} events from {path}", flush=True)
    if args.checkpoint:
        model = Recommender.from_checkpoint(args.checkpoint)
    elif args.pretrain_minutes:
        from model.pretrain import TrainConfig
        from model.prequential_run import pretrain_on_events

        prefix = events[:int(args.from_fraction * len(events))]
        print(f"pretraining on the first {len(prefix):,} events for {args.pretrain_minutes} minutes", flush=True)
        encoder = EncoderConfig(dim=64, n_layers=2, n_heads=1, max_len=load_settings().seq_len, dropout=0.2)
        model = pretrain_on_events(prefix, str(HERE.parent / "runs" / "live_quality" / f"{name}-pretrain"), encoder,
                                   tcfg=TrainConfig(epochs=30, max_minutes=args.pretrain_minutes, patience=5))
    training = None
    if args.online:  # the worker's trainer: its settings, its promotion judgement
        settings = load_settings()
        trained = model.snapshot() if model is not None else Recommender.fresh(EncoderConfig(max_len=settings.seq_len))
        training = Training(settings, trained, online_trainer(settings, trained), Metrics(),
                            in_force=model)
    if model is not None:
        model.prepare_serving()
    with_model = model is not None or training is not None
    result = replay(events, args.k, args.window, args.rank_every, args.allow_repeats, load_settings().seq_len,
                    args.new_item_s, model, args.batch if with_model else 1,
                    int(args.from_fraction * len(events)) if model is not None else 0, training, args.publish_every)
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
