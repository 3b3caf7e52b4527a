"""The operations files through the real tools: Prometheus' ``promtool`` (Debian package
``prometheus``) checks the configuration and the alert rules and runs the rules' unit tests;
``docker-compose`` 1.29 (Debian package ``docker-compose``) parses and validates the compose file
(``config`` needs no Docker engine). Without the tools these tests skip, except under CI=true.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from streams.harness.prometheus import ALERTS, config_for, fast_rules

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_alert_rules(ops_binary):
    promtool = ops_binary("promtool", "prometheus")
    done = run(promtool, "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
    assert f"SUCCESS: {rules} rules found" in done.stdout


def test_promtool_rejects_a_broken_rule(ops_binary, tmp_path):
    """The check above would catch a mistake: the same file with one expression broken fails."""
    promtool = ops_binary("promtool", "prometheus")
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("expr: up{job=", "expr: up{{job=", 1))
    done = run(promtool, "check", "rules", str(broken))
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_promtool_unit_tests_of_every_alert(ops_binary):
    promtool = ops_binary("promtool", "prometheus")
    done = run(promtool, "test", "rules", str(ALERTS.parent / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_checks_the_configuration(ops_binary, tmp_path):
    """prometheus.yml names its rules at the container path /etc/prometheus/alerts.yml: checked
    here with the rules at their repository path (and with the test configuration's shape)."""
    promtool = ops_binary("promtool", "prometheus")
    config = yaml.safe_load((ALERTS.parent / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(ALERTS)]
    production = tmp_path / "prometheus.yml"
    production.write_text(yaml.safe_dump(config))
    test_config = tmp_path / "test-prometheus.yml"
    test_config.write_text(yaml.safe_dump(config_for(["127.0.0.1:6066"], [fast_rules(ALERTS, tmp_path / "fast.yml")])))
    for path in (production, test_config):
        done = run(promtool, "check", "config", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def test_docker_compose_validates_the_compose_file(ops_binary):
    compose = ops_binary("docker-compose", "docker-compose")
    done = run(compose, "-f", str(COMPOSE), "config", "-q")
    assert done.returncode == 0, done.stderr
    # And with every profile's services: the GPU and replay services parse too.
    resolved = run(compose, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "replay", "config")
    assert resolved.returncode == 0, resolved.stderr
    services = yaml.safe_load(resolved.stdout)["services"]
    assert set(services) == {"kafka", "topics", "worker", "worker-gpu", "replay", "prometheus", "grafana"}
    # The anchors and merges resolve as tests/unit/test_deploy.py reads them.
    assert services["worker"]["environment"]["STREAMREC_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["worker-gpu"]["environment"] == services["worker"]["environment"]
    assert services["topics"]["environment"]["STREAMREC_PARTITIONS"] == "4"


def test_docker_compose_rejects_a_broken_file(ops_binary, tmp_path):
    compose = ops_binary("docker-compose", "docker-compose")
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text()
    assert "  stop_grace_period: 30s" in text
    broken.write_text(text.replace("  stop_grace_period: 30s", "  stop_grace_periods: 30s"))  # a typo
    done = run(compose, "-f", str(broken), "--project-directory", str(ROOT), "config", "-q")
    assert done.returncode != 0 and "stop_grace_periods" in done.stderr, done.stderr
