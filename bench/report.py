"""Render the tables of BENCHMARKS.md from the canonical results in bench/results/ (standard library only).

Each table sits between ``<!-- table: SPEC -->`` and ``<!-- /table -->``; SPEC names one result file, several
(one table of rows from each), or a file and a view (``bench/results/model_quality.json#ablation``).

    python bench/report.py            # print every table
    python bench/report.py --write    # rewrite the tables in BENCHMARKS.md
    python bench/report.py --check    # exit 1 if a table differs from what its JSON gives
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
MARKER = re.compile(r"<!-- table: (?P<spec>[^>]+?) -->\n(?P<body>.*?)<!-- /table -->", re.S)

def load(path: str) -> dict:
    return json.loads((ROOT / path).read_text(encoding="utf-8"))

def num(x, digits=0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"

def ms(seconds, digits=0) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.{digits}f} ms"

def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"

def times(values) -> str:
    vals = [v for v in values if v is not None]
    mean = f" (mean {sum(vals) / len(vals):.1f})" if vals else ""
    return ", ".join("–" if v is None else f"{v:.2f}" for v in values) + mean

def crash_recovery(d):
    r = d["restarts"]
    exact = d["dlq_distinct_by_reason"] == d["dlq_expected_by_reason"]
    return table(["measure", "value"], [
        ["messages sent", f"{d['messages_sent']:,} to {d['users']} users: {d['valid_events']:,} valid, "
                          f"{d['malformed']:,} malformed"],
        ["SIGKILLs of the worker", d["kills"]],
        ["events lost / applied twice", f"**{d['events_lost']} / {d['events_applied_twice']}**"],
        ["users whose event count is wrong", f"{d['users_with_wrong_n']} of {d['users']}"],
        ["DLQ: one record per malformed message, per reason; raw bytes equal to what was sent",
         f"{'yes' if exact else '**no**'}; {'yes' if d['dlq_raw_matches'] else '**no**'}"],
        ["DLQ records in all (dead letters written twice)",
         f"{d['dlq_records']:,} ({d['dlq_duplicate_records']})"],
        ["kill → `/health/` lists partitions, s", times([x["ready_s"] for x in r])],
        ["kill → first recommendation, s", times([x["first_recommendation_s"] for x in r])],
        ["drain after the producer finished", f"{d['drain_after_producer_s']} s"],
        ["worker log ERROR / WARNING lines", f"{d['worker_log_errors']} / {d['worker_log_warnings']}"],
    ])

def fuzz_dlq(d):
    k, rss = d["kinds"], d["rss_mib"]
    invalid = k["invalid"] + k["oversize"]
    exact = d["dlq_distinct_by_reason"] == d["expected_dlq_by_reason"]
    return table(["measure", "value"], [
        ["fuzzed messages (+ control events)", f"{d['fuzzed_messages']:,} ({d['sent_with_controls']:,} sent)"],
        ["worker stops", "**0**" if d["worker_same_pid_alive"] else "**≥ 1**"],
        ["invalid → DLQ with the oracle's reason", f"{d['dlq_records'] - d['dlq_duplicate_records']:,} of "
                                                    f"{invalid:,} ({k['oversize']:,} oversize); "
                                                    f"{'exact' if exact else 'differs'}"],
        ["DLQ duplicates; raw bytes equal", f"{d['dlq_duplicate_records']}; {'yes' if d['dlq_raw_matches'] else 'no'}"],
        ["valid messages (distinct ids): accepted + duplicate",
         f"{k['valid']:,} ({d['valid_distinct']:,}): {num(d['accepted_plus_duplicate'])}"],
        ["control users' event counts exact", "yes" if d["control_users_exact"] else "no"],
        ["worker RSS first / max / last", f"{rss['first']:.0f} / {rss['max']:.0f} / {rss['last']:.0f} MiB"],
        ["sent in / all processed after", f"{d['send_s']} s / {d['processed_after_s']} s"],
    ])

def throughput_runs(*docs):
    rows = []
    for path, d in docs:
        s = d.get("soak_half_rate") or {}
        rows.append([Path(path).stem.replace("throughput_", ""), num(d["ceiling_plain_consumer"]["events_per_s"]),
                     num(d["faust_bare_agent"]["events_per_s"]),
                     f"**{num(d['worker_drain']['events_per_s'])}**",
                     f"{d['ratio_worker_to_ceiling'] * 100:.1f} %",
                     d["state_check_after_drain"]["users_with_wrong_count"],
                     f"{num(s.get('target_rate'))}/s, {s.get('seconds', 0):.0f} s",
                     ms(s.get("p50_s")), ms(s.get("p99_s")), f"{num(s.get('lag_max'))} / {num(s.get('lag_last'))}"])
    return table(["run", "ceiling, events/s", "bare Faust", "worker drain", "drain / ceiling", "users wrong",
                  "soak", "soak p50", "soak p99", "soak lag max / end"], rows)

def throughput_steps(d):
    steps = [(f"step {i + 1}", s) for i, s in enumerate(d["search"]["steps"])]
    rows = []
    for name, s in steps + [("soak at half", d["soak_half_rate"])]:
        halves = ""
        if "p99_first_half_s" in s:
            halves = f" ({ms(s['p99_first_half_s'])} → {ms(s['p99_second_half_s'])})"
        cpu = "–"
        if "worker_cpu_cores_first_half" in s:
            cpu = (f"{s['worker_cpu_cores_first_half']:.2f}→{s['worker_cpu_cores_second_half']:.2f} / "
                   f"{s['broker_cpu_cores_first_half']:.2f}→{s['broker_cpu_cores_second_half']:.2f}")
        rows.append([name, f"{num(s['target_rate'])}/s", f"{s['seconds']:.0f} s",
                     "**yes**" if s.get("sustained") else "no", ms(s["p50_s"]), ms(s["p99_s"]) + halves,
                     f"{num(s['lag_max'])} / {num(s.get('lag_mean_last_third'))}", cpu])
    return table(["phase", "producer rate", "length", "sustained", "p50", "p99 (1st → 2nd half)",
                  "lag max / mean of last third", "CPU cores worker / broker"], rows)

def live_swap(*docs):
    rows = []
    for _, d in docs:
        loads = d["load_build_swap_s"]
        rows.append([d["serving"], f"{d['steady']['p50_ms']:.1f} / {d['steady']['p99_ms']:.1f} ms",
                     f"{d['during_swaps']['p99_ms']:.1f} ms", f"**{d['p99_ratio_during_vs_steady']:.1f}×**",
                     f"{d['back_to_back_swaps']['p99_ms']:.1f} ms", f"{d['swap_s_mean']:.2f} s",
                     f"{loads[0]:.2f} / " + ", ".join(f"{x:.2f}" for x in loads[1:]) + " s",
                     f"{d['new_item_searchable_ms']['p50_ms']:.0f} / {d['new_item_searchable_ms']['p99_ms']:.0f} ms"])
    return table(["serving", "steady p50 / p99", "p99 during swaps", "ratio", "back-to-back swaps p99",
                  "swap mean", "load + build + swap, first / next", "new item → searchable p50 / p99"], rows)

def index_latency(d):
    names = {"flat": "flat (exact)", "ivf": "IVF{nlist}, nprobe {effort}", "hnsw": "HNSW32, efSearch {effort}"}
    rows = []
    for r in d["results"]:
        size = f"{r['size'] // 1000:,}k" if r["size"] < 10**6 else f"{r['size'] // 10**6}M"
        b = r["baseline_numpy"]
        rows.append([size, "numpy brute force", "1.000", f"{b['1']['p50_ms']:.2f} / {b['1']['p99_ms']:.2f}", "–",
                     f"{b['256']['p50_ms']:,.0f} / {b['256']['p99_ms']:,.0f}", num(b["256"]["qps"]), "–", "–", "–"])
        for i in r["indexes"]:
            lat = i["latency"]
            rows.append([size, names[i["kind"]].format(**i), f"{i['recall_at_10']:.3f}",
                         f"{lat['1']['p50_ms']:.2f} / {lat['1']['p99_ms']:.2f}", f"{lat['1_filtered50']['p99_ms']:.2f}",
                         f"{lat['256']['p50_ms']:,.1f} / {lat['256']['p99_ms']:,.1f}", num(lat["256"]["qps"]),
                         f"{i['build_s']:.2f}", f"{i['refresh_s']:.2f}", f"{i['add_1000_ms']:.1f}"])
    return table(["items", "index", "R@10", "b1 p50 / p99 ms", "b1 filtered p99 ms", "b256 p50 / p99 ms",
                  "b256 QPS", "build s", "refresh s", "add 1000 ms"], rows)

def group_drain(d):
    return table(["round", "workers in the group", "events in the topic", "events/s"], [
        [i + 1, r["workers"], num(r["events_in_topic"]), num(r["events_per_s"])] for i, r in enumerate(d["rounds"])])

def user_state_cost(d):
    return table(["event ids", "events applied", "state bytes", "of which event ids", "CPU per event"], [
        [r["id_format"], r["events_applied"], num(r["state_bytes"]), num(r["event_id_bytes"]),
         f"{r['cpu_us_per_event']:.1f} µs"] for r in d["rows"]])

def metrics(m) -> list[str]:
    return [f"{m[k]:.4f}" for k in ("HR@10", "NDCG@10", "HR@20", "NDCG@20")]

def model_quality(gpu, cpu):
    g, c = gpu[1], cpu[1]["rows"]["main"]
    def enc(e):
        heads = f"{e['n_heads']} head" + ("s" if e["n_heads"] > 1 else "")
        return f"dim {e['dim']}, {e['n_layers']} layers, {heads}, dropout {e['dropout']}"
    rows = [[f"**GPU: {enc(g['encoder'])}, all windows**", f"{g['train']['epochs']} ({g['best_epoch']})",
             f"{g['train']['train_minutes']:.1f}", f"{g['train']['best_val_ndcg10']:.4f}", *metrics(g["test"]["model"]["filtered"])],
            [f"CPU default: {enc(c['encoder'])}", f"{c['train']['epochs']} ({c['best_epoch']})",
             f"{c['train']['train_minutes']:.1f}", f"{c['train']['best_val_ndcg10']:.4f}", *metrics(c["test"]["model"]["filtered"])],
            ["popularity", "", "", "", *metrics(c["test"]["popular"]["filtered"])]]
    rows += [[f"{name} (published)", "", "", "", f"{hr:.4f}", f"{nd:.4f}", "", ""]
             for name, (hr, nd) in cpu[1]["published_ml1m_hr10_ndcg10"].items()]
    return table(["model (seen items filtered)", "epochs (best)", "train min", "val NDCG@10",
                  "HR@10", "NDCG@10", "HR@20", "NDCG@20"], rows)

def transfer(d):
    cell = lambda r, c: f"{r[c]['test']['model']['NDCG@10']:.4f} / {r[c]['test']['model']['HR@10']:.4f}"
    rows = []
    for r in sorted(d["rows"], key=lambda r: (len(r["objectives"]), str(r["objectives"]), r["seed"])):
        objs = " + ".join(f"{k} {v:g}" for k, v in r["objectives"].items())
        pre = r["pretrain"]
        ratio = r["finetune"]["test"]["model"]["NDCG@10"] / r["scratch"]["test"]["model"]["NDCG@10"]
        rows.append([objs, r["seed"], f"{pre['epochs']}, {pre['best_val_ndcg10']:.4f}", cell(r, "zero-shot"),
                     cell(r, "finetune"), cell(r, "frozen"), cell(r, "scratch"), f"**{ratio:.2f}×**"])
    return table(["pretraining objectives", "seed", "pretraining epochs, val NDCG@10", "zero-shot",
                  "fine-tuned", "fine-tuned, encoder frozen", "from scratch", "fine-tuned / scratch"], rows)

def purchase_task(d):
    rows = []
    for r in d["rows"]:
        for c in ("next-item", "purchase, encoder trained", "purchase, encoder frozen"):
            t = r[c]["test"]
            rows.append([c, r["seed"], f"{t['purchase_hr10']:.4f}", f"{t['purchase_ndcg10']:.4f}", f"{t['click_hr10']:.4f}",
                         f"{t['click_ndcg10']:.4f}", num(t.get("auc"), 3), num(t.get("log_loss"), 4)])
    b = d["popularity_propensity"]
    rows.append(["popularity propensity", "", "", "", "", "", num(b["auc"], 3), num(b["log_loss"], 4)])
    return table(["model", "seed", "purchase HR@10", "purchase NDCG@10", "click HR@10", "click NDCG@10",
                  "propensity AUC", "log-loss"], rows)

def robustness(d):
    by: dict = {}
    for r in d["runs"]:
        objs = " + ".join(f"{k} {v:g}" + (f" (eps {r.get('adv_eps', 0.5):g})" if k == "adversarial" else "")
                          for k, v in r["objectives"].items())
        by.setdefault(objs, {})[r["data"]] = r
    poisoned = sorted({r["data"] for r in d["runs"] if r["data"] != "clean"})
    rows = []
    for objs, runs in by.items():
        row = [objs]
        for data in ["clean"] + poisoned:
            r = runs.get(data)
            row.append("–" if r is None else f"**{r['exposure']:.3f}** · {r['test']['NDCG@10']:.4f} · {r['epochs']}")
        rows.append(row)
    return table(["objectives"] + [f"{data}: target exposure · real test NDCG@10 · epochs" for data in ["clean"] + poisoned],
                 rows)

def prequential(*docs):
    rows = []
    for path, d in docs:
        name = Path(path).stem.split("_", 1)[1]
        protocols = ["allow_repeats", "exclude_seen"]
        protocols.sort(key=lambda p: p != d["primary"])
        for p in protocols:
            hr, warm = d[f"hr_{p}"], d[f"hr_{p}_warm"]
            label = p.replace("_", " ") + (" (primary)" if p == d["primary"] else "")
            rows.append([name, label, f"{num(d['events'])} ({num(d['cold_events'])})", f"{hr['online']:.4f}",
                         f"{hr['frozen']:.4f}", f"{hr['popularity']:.4f}", f"**{hr['online'] / hr['frozen']:.2f}×**",
                         f"{warm['online'] / warm['frozen']:.2f}×"])
    return table(["dataset", "protocol", "replayed events (cold)", "online HR@10", "frozen", "popularity",
                  "online / frozen", "warm users only"], rows)

def _source_hr(d: dict, values: dict, src: str) -> str:
    """A source's HR@10 in a live_quality table; "–" for one the run had not (the category source
    on a stream whose events name no category)."""
    if src not in values or values[src] is None or (src == "category" and not d.get("categories")):
        return "–"
    return f"{values[src]:.4f}"


def live_quality(*docs):
    rows = []
    for path, d in docs:
        hr, after = d["hr"], d["hr_after_first_10pct"]
        name = "Taobao sample" if d["format"] == "taobao" else "ML-1M"
        rows.append([name, num(d["events"]), num(d["scored_events"])] + [_source_hr(d, hr, s) for s in
                    ("alltime", "popular", "covisit", "category", "gated")] + [
                    f"{d['gated_over_best_simple']:.2f}×", f"{after['gated'] / after['alltime']:.2f}×",
                    f"{d['worst_window_gated_over_best']:.2f}", num(d["cpu_us_per_event"])])
    return table(["stream", "events", "scored", "all-time popularity", "decayed popularity", "co-visitation",
                  "category popularity", "gated", "gated / best simple", "gated / all-time pop., after 10 %",
                  "worst 5k window, gated / best", "CPU µs / event"], rows)


def live_quality_cold(*docs):
    """New items, a user's first events, and the stretch the encoder is replayed on in bench/prequential.py."""
    rows = []
    for path, d in docs:
        name = "Taobao sample" if d["format"] == "taobao" else "ML-1M"
        new, seg = d["new_items"], d["segments"]
        part = d["hr_from_stream_fraction"]["0.5" if d["format"] == "taobao" else "0.7"]
        share = "last 50 %" if d["format"] == "taobao" else "last 30 %"
        for label, get, n in (
                (f"new items (first seen ≤ {d['new_item_s']:,.0f} s before)", lambda s: new[s]["hr"], new["gated"]["events"]),
                ("a user's first events (short segment)", lambda s: seg[f"short/{s}"]["hr"], seg["short/gated"]["events"]),
                (f"{share} of the stream", lambda s: part[s], part["events"])):
            rows.append([name, label, num(n)] + [_source_hr(d, {s: get(s) for s in d["hr"]}, s)
                                                 for s in ("alltime", "popular", "covisit", "category", "gated")])
    return table(["stream", "events", "scored", "all-time popularity", "decayed popularity", "co-visitation",
                  "category popularity", "gated"], rows)


def live_quality_model(*runs):
    """One or more (path, result) of bench/live_quality.py with a model, a block of rows each."""
    rows = []
    for path, d in runs:
        name = "Taobao sample" if d.get("format") == "taobao" else "ML-1M"
        hr, served = d["hr"], d["served_by_choice"]
        total = sum(served.values())

        def seg(segment, src):
            value = d["segments"][f"{segment}/{src}"]["hr"]
            return "–" if value is None else f"{value:.4f}"

        rows += [[name if n == 0 else "", src, f"{hr[src]:.4f}", seg("short", src), seg("long", src)]
                 for n, src in enumerate(src for src in ("alltime", "popular", "covisit", "category", "model", "blend",
                                                         "gated") if src in hr and (src != "category" or d.get("categories")))]
        rows.append(["", "gated / best simple", f"**{d['gated_over_best_simple']:.2f}×**", "", ""])
        rows.append(["", "records by the gate's choice",
                     ", ".join(f"{src} {n / total:.0%}" for src, n in sorted(served.items())), "", ""])
        if d.get("versions_announced_after_event") is not None:
            rows.append(["", "versions announced (online training)",
                         num(len(d["versions_announced_after_event"])), "", ""])
        rows.append(["", "events scored", num(d["scored_events"]), "", ""])
    return table(["stream", "source", "HR@10", "short histories", "long histories"], rows)


def sources_cost(d):
    """One row per configuration: every round's figure in run order, the median in bold."""
    defences = d.get("compare") == "defences"
    each = lambda rs, key, fmt: " · ".join(fmt(r[key]) for r in rs)
    rows = []
    for config, m in d["median"].items():
        rs = [r for r in d["rounds"] if r["config"] == config]
        rows.append([f"**{config}**", ", ".join(str(r["round"] + 1) for r in rs),
                     f"{each(rs, 'events_per_s', num)} (**{num(m['events_per_s'])}**)",
                     f"{each(rs, 'cpu_us_per_event', num)} (**{m['cpu_us_per_event']:.0f}**)",
                     f"{each(rs, 'paced_p50_ms', lambda v: f'{v:.0f}')} (**{m['paced_p50_ms']:.1f}**)", f"{each(rs, 'paced_p99_ms', lambda v: f'{v:.0f}')} (**{m['paced_p99_ms']:.1f}**)"]
                    + ([each(rs, "held_back_paced", num)] if defences else []))
    paced = f"p50 ms at {d['config']['paced_rate']:,.0f}/s per round (median)"
    head = [f"limits per user (flood: one id at {d['config']['flood_factor']:g} × the paced rate)" if defences
            else "gate + co-visitation", "rounds", "drain events/s per round (median)", "CPU µs / event (median)",
            paced, "p99 ms per round (median)"]
    return table(head + (["held back while paced"] if defences else []), rows)


def attack(d):
    rows = []

    def quarters(run):
        return " ".join("–" if q is None else f"{q:.2f}" for q in run.get("exposure_by_quarter", []))

    for stream, res in d["streams"].items():
        runs, name = res["runs"], "Taobao sample" if res["format"] == "taobao" else "ML-1M"
        for key, on in runs.items():
            attack_name, side = key.rsplit(" / defences ", 1)
            if side != "on":
                continue
            off = runs[f"{attack_name} / defences off"]
            ratio = on.get("exposure_over_off")
            clean = attack_name == "clean"
            events = res["events"] if clean else on["injected"]
            rows.append([name, f"{attack_name} ({num(events)} events)", "" if clean else f"{off['exposure']:.3f}",
                         "" if clean else f"{on['exposure']:.3f}",
                         "" if clean else "–" if ratio is None else f"**{ratio:.2f}**", "" if clean else quarters(on),
                         f"{off['hr']:.4f} / {on['hr']:.4f}", f"{on['hr_over_clean']:.2f}", f"{on['hr_over_clean_off']:.2f}",
                         "–" if on.get("hr_second_half_over_clean") is None else f"{on['hr_second_half_over_clean']:.2f}",
                         f"{on['real_held_share']:.2%} ({num(on['fake_held'])} fake)"])
    return table(["stream", "attack", "target exposure, off", "on", "on / off", "on, by quarter of the stream",
                  "real HR@10 off / on", "on / clean on", "on / clean off", "second half: on / clean on",
                  "real events held (fake held)"], rows)


COST_STAGES = ("decode", "state", "changelog", "popularity", "covisit", "gate", "queue", "candidates", "produce",
               "ipc", "encode", "search", "records")


def cost(d):
    """CPU µs per event of each consumer (bench/cost.py), then the worker's per-stage budget."""
    rows = []
    for r in d["phases"]:
        who = f"worker, {r['catalogue']:,} items" if r["catalogue"] else {"aiokafka": "plain aiokafka consumer",
                                                                          "faust": "bare Faust agent"}[r["phase"]]
        main = r.get("main_process_cpu_us_per_event")
        rows.append([r["shape"], who, f"**{r['cpu_us_per_event']:.0f}**", num(main), num(r["broker_cpu_us_per_event"]),
                     num(r["events_per_s"]), num(r.get("worker_latency_p50_ms"), 1), num(r.get("worker_latency_p99_ms"), 1)])
    out = table(["histories", "consumer", "CPU µs / event", "of it, main process", "broker µs / event", "events/s",
                 "worker-added p50 ms", "p99 ms"], rows)
    workers = [r for r in d["phases"] if r["catalogue"]]
    header = ["stage (µs / event)"] + [f"{r['shape']}, {r['catalogue'] // 1000:,}k" for r in workers]
    stage_rows = [[stage] + [num(r["stages_us_per_event"].get(stage), 1) for r in workers]
                  for stage in COST_STAGES if any(stage in r["stages_us_per_event"] for r in workers)]
    stage_rows.append(["**sum of stages**"] + [f"**{r['stages_sum_us']:.0f}**" for r in workers])
    stage_rows.append(["rest of the process tree (Faust, aiokafka, threads)"] +
                      [num(r["cpu_us_per_event"] - r["stages_sum_us"]) for r in workers])
    return out + "\n" + table(header, stage_rows)


def gpu_check(d):
    """bench/gpu_check.py: the index on the GPU, the trainer on CUDA against the CPU, the live rounds."""
    out = table(["items × dim", "device", "batch-1 p50 / p99", "batch-256 q/s", "FAISS CPU q/s", "add 1,000 (max)", "rebuild + swap", "recall@10"],
                [[f"{r['items']:,} × {r['dim']}", r["device"], f"{r['batch1_ms']['p50']:.2f} / {r['batch1_ms']['p99']:.2f} ms", num(r["batch256_qps"]),
                  num(r["faiss_cpu_flat_batch256_qps"]), f"{r['add_1000_ms']:.2f} ({r['add_1000_ms_max']:.2f}) ms", f"{r['rebuild_swap_s']:.3f} s", r["recall_at_10"]] for r in d.get("index", [])])
    cpu = {r["model"]: r["updates_per_s"] for r in d.get("trainer", []) if r["device"] == "cpu"}
    out += "\n" + table(["model", "device", "updates/s", "× the CPU"], [[f"{r['model']} ({r['items']:,} items, {r['max_len']} events)", r["device"], f"{r['updates_per_s']:.3f}",
                        f"{r['updates_per_s'] / cpu[r['model']]:.1f}×" if cpu.get(r["model"]) else "–"] for r in d.get("trainer", [])])
    return out + "\n" + table(["workers", "trainer", "drain events/s", "event → rec p50 / p99", "versions published", "served"],
                              [[r["workers"], "on" if r["train"] else "off", num(r["drain_events_per_s"]), f"{ms(r['event_to_rec_p50_s'])} / {ms(r['event_to_rec_p99_s'])}",
                                r["versions_published"], ", ".join(map(str, r["versions_served"]))] for r in d.get("live", [])])


RENDER = {"attack": attack, "gpu_check": gpu_check, "cost": cost, "live_quality_taobao": live_quality, "live_quality_taobao#cold": live_quality_cold,
          "sources_cost": sources_cost, "defences_cost": sources_cost, "live_quality_ml1m_model": live_quality_model, "live_quality_taobao_model": live_quality_model, "crash_recovery": crash_recovery, "fuzz_dlq": fuzz_dlq, "throughput_drain": throughput_runs,
          "throughput_fresh": throughput_steps, "throughput_search": throughput_steps, "live_swap": live_swap,
          "index_latency": index_latency, "robustness": robustness,
          "group_drain": group_drain, "user_state_cost": user_state_cost,
          "model_quality_gpu": model_quality,
          "transfer": transfer, "purchase_task": purchase_task, "prequential_taobao": prequential}

def render(spec: str) -> str:
    paths, _, view = spec.partition("#")
    paths = paths.split()
    key = re.sub(r"\d+$", "", Path(paths[0]).stem) + (f"#{view}" if view else "")
    if key not in RENDER:
        raise SystemExit(f"bench/report.py: no table for {spec!r}")
    fn, docs = RENDER[key], [load(p) for p in paths]
    return fn(*docs) if len(paths) == 1 and fn.__code__.co_argcount == 1 else fn(*zip(paths, docs))

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="rewrite the tables in BENCHMARKS.md")
    p.add_argument("--check", action="store_true", help="exit 1 if a table differs from what its JSON gives")
    args = p.parse_args()
    text = REPORT.read_text(encoding="utf-8")
    tables = {m["spec"]: (m["body"], render(m["spec"])) for m in MARKER.finditer(text)}
    stale = [spec for spec, (old, new) in tables.items() if old != new]
    if args.write:
        REPORT.write_text(MARKER.sub(lambda m: f"<!-- table: {m['spec']} -->\n{tables[m['spec']][1]}<!-- /table -->",
                                     text), encoding="utf-8")
        print(f"rewrote {len(stale)} of {len(tables)} tables in {REPORT.name}")
    elif args.check:
        for spec in stale:
            print(f"stale table: {spec} (run python bench/report.py --write)")
        print(f"{len(tables) - len(stale)} of {len(tables)} tables match their JSON")
        return 1 if stale else 0
    else:
        print("\n".join(f"<!-- table: {spec} -->\n{new}" for spec, (_, new) in tables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
