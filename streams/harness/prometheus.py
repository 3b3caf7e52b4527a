"""A real Prometheus (Debian's ``prometheus`` package) for the integration tests and
``ops/render_dashboard.py``: started on a free port with a temporary TSDB, scraping workers given
as ``host:port``, with the production configuration and alert rules of ``ops/prometheus/``.

What differs from production, and only that: targets are static instead of found by DNS, the
scrape and evaluation intervals are 1 s, and :func:`fast_rules` shortens every alert's ``for:``
(nothing else of a rule is changed; the copy is checked to equal the original otherwise).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests
import yaml

from .procs import free_port

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
CONFIG = OPS / "prometheus" / "prometheus.yml"
ALERTS = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "dashboards" / "streamrec.json"
PACKAGE = "prometheus"  # Debian package with the prometheus and promtool binaries


def fast_rules(src: Path, dest: Path, for_: str = "1s") -> Path:
    """A copy of the rules file ``src`` with every ``for:`` set to ``for_``; fails if the rewrite
    changed anything else."""
    text, n = re.subn(r"(?m)^(\s+for:\s*)\S+\s*$", lambda m: m.group(1) + for_, src.read_text())
    original, fast = yaml.safe_load(src.read_text()), yaml.safe_load(text)
    for group in original["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    if fast != original or n == 0:
        raise ValueError(f"rewriting `for:` in {src} changed more than the durations")
    dest.write_text(text)
    return dest


def config_for(targets: list[str], rules: list[Path], interval: str = "1s") -> dict:
    """The production prometheus.yml with static ``targets`` and ``rules`` files."""
    config = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(r) for r in rules]
    [job] = config["scrape_configs"]
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": list(targets)}]
    return config


class Prometheus:
    """``prometheus`` as a subprocess on 127.0.0.1 and a free port; :meth:`stop` kills it."""

    def __init__(self, workdir: Path, config: dict, binary: str | None = None) -> None:
        self.workdir = workdir
        self.binary = binary or shutil.which("prometheus")
        if self.binary is None:
            raise FileNotFoundError(f"no prometheus binary: install the Debian package {PACKAGE!r}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Prometheus":
        cmd = [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def _get(self, path: str, **params) -> dict:
        body = requests.get(f"{self.url}{path}", params=params, timeout=10).json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        return self._get("/api/v1/query", query=expr, **({} if at is None else {"time": at}))["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        return self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def firing(self, name: str) -> list[dict]:
        return [a for a in self.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]

    def targets_up(self) -> dict[str, bool]:
        return {t["labels"]["instance"]: t["health"] == "up" for t in self._get("/api/v1/targets")["activeTargets"]}


def rate_interval(scrape_interval_s: float = 1.0, step_s: float = 1.0) -> str:
    """Grafana's ``$__rate_interval``: max(step + scrape interval, 4 x scrape interval)."""
    return f"{max(step_s + scrape_interval_s, 4 * scrape_interval_s):g}s"


def dashboard_queries(dashboard: dict) -> list[tuple[dict, dict]]:
    """(panel, target) of every query of the dashboard, in panel order."""
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def promql(expr: str, interval: str) -> str:
    """A dashboard expression as Prometheus evaluates it (Grafana's variables substituted)."""
    return expr.replace("$__rate_interval", interval)


def legend_labels(legend: str) -> list[str]:
    return re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)


def legend(fmt: str, metric: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)
