"""The Grafana dashboard as an operator reads it, and the alert rules' coverage, checked from the
files (no Grafana, no Prometheus: tests/integration/test_prometheus.py evaluates every query, and
tests/integration/test_ops_tools.py runs promtool).

Grafana's published package `@grafana/schema` (npm) ships TypeScript types only, no JSON Schema,
so the dashboard model is checked here: the keys Grafana needs, a 24-column grid without overlaps,
rows in the order an operator asks (healthy? keeping up? which model? quality?), a unit and
thresholds on every panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "streamrec.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "operations.md"

ROWS = ["Overview", "Ingest", "Serving", "Model lifecycle", "Quality", "Kafka", "Process"]
UNITS = {"short", "none", "ops", "reqps", "s", "percentunit", "bytes"}
COLORS = {"green", "orange", "red", "yellow", "blue"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def alert_names() -> list[str]:
    return [r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_dashboard_model_keys():
    d = dashboard()
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["uid"] == "streamrec" and d["title"] == "StreamRec"
    assert d["time"] == {"from": "now-30m", "to": "now"} and d["refresh"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for panel in d["panels"]:
        assert panel["type"] in ("row", "stat", "timeseries"), panel["title"]
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"} and all(isinstance(v, int) and v >= 0 for v in grid.values())
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            assert panel["panels"] == [] and not panel["collapsed"] and grid["w"] == 24
            continue
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() and t["legendFormat"] for t in panel["targets"]), panel["title"]


def test_panels_do_not_overlap():
    cells = {}
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_rows_in_the_operators_order_and_every_panel_under_one():
    panels = sorted(dashboard()["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    assert panels[0]["type"] == "row", "the first thing on the dashboard is a row"
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert [next(r for r in ROWS if title.startswith(r)) for title in rows] == ROWS, rows
    under: dict[str, list[str]] = {}
    current = None
    for panel in panels:
        if panel["type"] == "row":
            current = panel["title"]
        else:
            under.setdefault(current, []).append(panel["title"])
    assert set(under) == set(rows), f"rows without panels: {set(rows) - set(under)}"


def test_every_panel_has_a_unit_thresholds_and_a_description():
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] in UNITS, (panel["title"], defaults.get("unit"))
        steps = defaults["thresholds"]["steps"]
        assert defaults["thresholds"]["mode"] == "absolute" and steps[0]["value"] is None, panel["title"]
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values) and all(isinstance(v, (int, float)) for v in values), panel["title"]
        assert all(s["color"] in COLORS for s in steps)
        assert len(panel["description"]) > 20, panel["title"]
        if panel["type"] == "stat":
            assert len(steps) >= 2, f"stat {panel['title']!r} has no threshold to colour it by"
            assert defaults["color"]["mode"] == "thresholds"


def test_thresholds_agree_with_the_alert_rules():
    """A panel that names an alert draws that alert's threshold."""
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    checked = 0
    for panel in dashboard()["panels"]:
        for name in re.findall(r"StreamRec\w+", panel.get("description", "")):
            assert name in rules, f"{panel['title']!r} names unknown alert {name}"
            limit = re.search(r"[\w)]\s*>\s*([\d.]+)", rules[name]["expr"])  # the first `... > N`
            if limit and panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]:
                steps = [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]
                assert float(limit.group(1)) in steps, f"{panel['title']!r}: {name} fires at {limit.group(1)}, thresholds {steps}"
                checked += 1
    assert checked >= 5


def test_every_alert_has_a_promtool_case_that_fires_and_a_runbook_entry():
    cases = yaml.safe_load(ALERTS_TEST.read_text())
    assert cases["rule_files"] == ["alerts.yml"]
    fired = {check["alertname"] for case in cases["tests"] for check in case["alert_rule_test"]
             if check.get("exp_alerts")}
    runbook = RUNBOOK.read_text(encoding="utf-8")
    for name in alert_names():
        assert name in fired, f"ops/prometheus/alerts_test.yml never sees {name} fire"
        assert f"### {name}" in runbook, f"docs/operations.md has no section for {name}"
