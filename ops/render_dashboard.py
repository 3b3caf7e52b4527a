#!/usr/bin/env python3
"""Draw the Grafana dashboard's panels from a Prometheus, with matplotlib (Grafana is not needed).

Every panel of ``ops/grafana/dashboards/streamrec.json`` is drawn where its ``gridPos`` puts it,
with the same PromQL (``$__rate_interval`` as Grafana computes it), units, legends and thresholds
(dashed lines, where within twice the data's maximum); a stat panel shows its last value, coloured by its thresholds, over its series.

    python ops/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 30 --out dash.png
    python ops/render_dashboard.py --demo 150 --out docs/dashboard.png
        # a real short run: embedded broker, two training workers, Prometheus, a synthetic stream

``--demo`` needs the Debian package ``prometheus`` and the dev extras (``pip install -e .[dev]``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "streamrec.json"
COLORS = {"green": "#37872d", "orange": "#fa6400", "red": "#c4162a", "yellow": "#e0b400", "blue": "#1f60c4"}
SCALE = {"s": (1.0, "s"), "percentunit": (100.0, "%"), "bytes": (1 / 2**20, "MiB"), "ops": (1.0, "/s"),
         "reqps": (1.0, "req/s")}


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as answer:
        body = json.load(answer)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, metric: dict) -> str:
    out = fmt
    for key, value in metric.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def color_for(value: float, steps: list[dict]) -> str:
    color = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def fmt(value: float, unit: str) -> str:
    factor, suffix = SCALE.get(unit, (1.0, ""))
    v = value * factor
    return f"{v:.0f}{suffix}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}{suffix}"


def panel_data(prometheus: str, panel: dict, start: float, end: float, step: float,
               interval: str) -> list[tuple[str, list[float], list[float]]]:
    """(legend, times relative to end in minutes, values) of every series of every target."""
    series = []
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", interval)
        for result in query_range(prometheus, expr, start, end, step):
            ts = [(float(t) - end) / 60 for t, _ in result["values"]]
            vs = [float(v) for _, v in result["values"]]
            series.append((legend(target["legendFormat"], result["metric"]), ts, vs))
    return series


def render(prometheus: str, out: Path, start: float, end: float, *, dashboard: Path = DASHBOARD,
           scrape_interval_s: float = 5.0, note: str = "") -> dict[str, int]:
    """Draw the dashboard over [start, end]; returns panel title -> series with data."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads(dashboard.read_text())
    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    step = max(1.0, (end - start) / 300)
    interval = f"{max(step + scrape_interval_s, 4 * scrape_interval_s):g}s"  # Grafana's $__rate_interval
    unit_h = 0.42  # inches per grid row
    head = 0.9  # inches above the grid for the title
    fig = plt.figure(figsize=(24, rows * unit_h + head))
    title = f"{board['title']} — rendered from Prometheus with matplotlib (not Grafana), " \
            f"last {(end - start) / 60:.0f} min" + (f"; {note}" if note else "")
    fig.suptitle(title, x=0.01, y=1 - 0.25 / (rows * unit_h + head), ha="left", va="top", fontsize=13)
    top = 1 - head / (rows * unit_h + head)
    found: dict[str, int] = {}
    for panel in panels:
        g = panel["gridPos"]
        box = [g["x"] / 24 + 0.004, top * (1 - (g["y"] + g["h"]) / rows) + 0.006, g["w"] / 24 - 0.008,
               top * g["h"] / rows - 0.012]
        if panel["type"] == "row":
            fig.text(box[0], box[1] + box[3] / 2, panel["title"], fontsize=12, weight="bold", va="center")
            continue
        if panel["type"] == "timeseries":  # room for the tick labels
            box = [box[0] + 0.022, box[1] + 0.012, box[2] - 0.024, box[3] - 0.012]
        ax = fig.add_axes(box)
        defaults = panel["fieldConfig"]["defaults"]
        unit, steps = defaults.get("unit", "short"), defaults["thresholds"]["steps"]
        factor, suffix = SCALE.get(unit, (1.0, ""))
        series = [(name, ts, [v * factor for v in vs]) for name, ts, vs in
                  panel_data(prometheus, panel, start, end, step, interval)]
        found[panel["title"]] = sum(any(math.isfinite(v) for v in vs) for _, _, vs in series)
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        if panel["type"] == "stat":
            last = next((vs[-1] / factor for _, _, vs in series if vs and math.isfinite(vs[-1])), None)
            for _, ts, vs in series:
                ax.fill_between(ts, vs, alpha=0.15, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
            text, color = ("No data", "grey") if last is None else (fmt(last, unit), color_for(last, steps))
            ax.text(0.5, 0.45, text, transform=ax.transAxes, ha="center", va="center", fontsize=20,
                    color=color, weight="bold")
            continue
        for name, ts, vs in series:
            ax.plot(ts, vs, linewidth=1, label=name)
        top_value = max((v for _, _, vs in series for v in vs if math.isfinite(v)), default=0.0)
        for threshold in steps[1:]:  # within reach of the data only, so that the data stays readable
            if threshold["value"] * factor > 2 * top_value:
                continue
            ax.axhline(threshold["value"] * factor, linestyle="--", linewidth=0.8,
                       color=COLORS.get(threshold["color"], threshold["color"]))
        if not series:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="grey")
        ax.set_ylabel(suffix, fontsize=7)
        ax.set_xlabel("minutes", fontsize=7)
        if series:
            ax.legend(fontsize=6, loc="upper left", ncol=2 if len(series) > 4 else 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return found


def demo(seconds: float, out: Path) -> dict[str, int]:
    """Embedded broker, topics, two training workers, Prometheus (1 s scrapes) and the synthetic
    stream of streams/harness/traffic.py for ``seconds``, then :func:`render`."""
    import tempfile

    from streams.harness.procs import Worker, client_settings, start_broker
    from streams.harness.prometheus import ALERTS, Prometheus, config_for, fast_rules
    from streams.harness.traffic import EventStream
    from streams.kafka.clients import make_producer

    tmp = Path(tempfile.mkdtemp(prefix="streamrec-render-"))
    broker = start_broker(tmp / "broker.log")
    workers, prom, stream, producer = [], None, None, None
    try:
        extra = ["--publish-interval-s", "5", "--serving-processes", "false"]
        workers = [Worker(broker.bootstrap, tmp / f"w{i}", "render", 2, train=True, extra=extra).start()
                   for i in range(2)]
        for worker in workers:
            worker.wait_ready()
        prom = Prometheus(tmp, config_for([f"127.0.0.1:{w.http_port}" for w in workers],
                                          [fast_rules(ALERTS, tmp / "alerts.yml", "5s")])).start()
        producer = make_producer(client_settings(broker.bootstrap, 2))
        stream = EventStream(producer, "events", rate=40).start()
        start = time.time()
        while time.time() - start < seconds:
            for worker in workers:
                urllib.request.urlopen(f"{worker.base}/recommend/u1/?k=5", timeout=30).read()
            time.sleep(2)
        return render(prom.url, out, start, time.time(), scrape_interval_s=1.0,
                      note="2 workers on the embedded broker, synthetic stream of ops/render_dashboard.py --demo")
    finally:
        if stream is not None:
            stream.stop()
        if producer is not None:
            producer.close()
        if prom is not None:
            prom.stop()
        for worker in workers:
            worker.stop()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", help="Prometheus URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=30, help="time range, ending now")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="seconds (for $__rate_interval)")
    parser.add_argument("--demo", type=float, metavar="SECONDS", help="run a short demo and render it")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.demo:
        found = demo(args.demo, args.out)
    elif args.prometheus:
        end = time.time()
        found = render(args.prometheus.rstrip("/"), args.out, end - args.minutes * 60, end,
                       scrape_interval_s=args.scrape_interval)
    else:
        parser.error("give --prometheus URL or --demo SECONDS")
    empty = [title for title, n in found.items() if not n]
    print(f"{args.out}: {len(found) - len(empty)} of {len(found)} panels with data"
          + (f"; without: {', '.join(empty)}" if empty else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
