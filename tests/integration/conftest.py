"""Fixtures for tests against a real Kafka-protocol broker (the embedded Tansu broker).

- ``broker``: one embedded broker for the session, on a free port.
- ``worker_factory``: starts ``streamrec worker`` subprocesses on that broker
  (``worker_factory.start(n=2)``); every worker of one group shares an app id and topic
  names of its own (a fresh namespace per group, so tests never see each other's events).
  Every process is stopped at teardown (SIGTERM, then SIGKILL of its process group), also
  when a test fails or the session is interrupted.
- ``worker``: one ready worker for the session (its ``settings`` name its topics).
- ``kafka_producer``: a kafka-python producer for the broker.
- ``read_topic``: ``read_topic(settings, topic, until=..., timeout=...)`` reads a topic from
  the beginning (``streams.cli.consume.watch_consumer``) until ``until(records)`` holds.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import requests
from pydantic import SecretStr

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.clients import watch_consumer
from streams.kafka.clients import make_producer
from streams.settings import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
_groups = itertools.count(1)
_running: list["WorkerProcess"] = []  # for the atexit safety net


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The environment without STREAMREC_* variables (the worker gets its settings as flags)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}


def wait_for(predicate: Callable, timeout: float, what, interval: float = 0.3):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``
    seconds, describing ``what`` (a string, or a callable for a description made at failure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what() if callable(what) else what}"[:6000])


def get_json(url: str, timeout: float = 5.0):
    try:
        response = requests.get(url, timeout=timeout)
        return response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None


class WorkerProcess:
    """One ``python -m streams.cli worker`` in its own process group, logging to a file."""

    def __init__(self, name: str, settings: Settings, flags: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.settings, self.log_path = name, settings, log_path
        self.env = env or {}  # STREAMREC_* variables on top of clean_env() (secrets: never flags)
        self.cmd = [sys.executable, "-m", "streams.cli", "worker", *flags]
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self.settings.http_port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "WorkerProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env={**clean_env(), **self.env}, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _running.append(self)
        return self

    def health(self) -> dict | None:
        return get_json(f"{self.base}/health/", timeout=3) if self.alive else None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "WorkerProcess":
        """Until ``/health/`` reports assigned partitions of the events topic."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                pytest.fail(f"worker {self.name} exited with code {self.proc.returncode}:\n{self.log()[-3000:]}")
            if (self.health() or {}).get("partitions"):
                return self
            time.sleep(0.25)
        pytest.fail(f"worker {self.name} had no partitions after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group (nothing is left behind)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        if self in _running:
            _running.remove(self)
        return proc.returncode


class WorkerFactory:
    def __init__(self, broker: EmbeddedBroker, tmp: Path) -> None:
        self.broker, self.tmp = broker, tmp
        self.workers: list[WorkerProcess] = []

    def group_settings(self, namespace: str | None = None, **overrides) -> Settings:
        """Settings of a new group: its own app id and topics (``<namespace>.events`` ...)."""
        ns = namespace or f"g{next(_groups)}-{os.getpid()}"
        values = {
            "bootstrap_servers": self.broker.bootstrap, "app_id": ns, "partitions": 2, "train": False,
            "topic_events": f"{ns}.events", "topic_dlq": f"{ns}.events.dlq", "topic_suspect": f"{ns}.events.suspect",
            "topic_recommendations": f"{ns}.recommendations", "topic_model_updates": f"{ns}.model-updates",
            "data_dir": self.tmp / ns,
        }
        values.update(overrides)
        return load_settings(values, environ={})

    def start(self, n: int = 1, settings: Settings | None = None, *, wait: bool = True,
              **overrides) -> list[WorkerProcess]:
        """Start ``n`` workers of one group (``settings`` from :meth:`group_settings` by default);
        each gets its own free HTTP port. Waits until each reports partitions unless ``wait`` is
        false (with n workers, wait for all before asserting who owns what)."""
        settings = settings or self.group_settings(**overrides)
        started = []
        for _ in range(n):
            port = free_port()
            worker_settings = load_settings({**settings.model_dump(exclude_defaults=True),
                                             "sasl_password": None, "http_port": port}, environ={})
            flags, env = [], {}
            for name, value in worker_settings.model_dump(exclude_defaults=True).items():
                if isinstance(value, SecretStr):  # through the environment, not the command line
                    env[env_name(name)] = value.get_secret_value()
                    continue
                flags += ["--" + name.replace("_", "-"), str(value).lower() if isinstance(value, bool) else str(value)]
            name = f"{settings.app_id}-w{len(self.workers) + 1}"
            worker = WorkerProcess(name, worker_settings, flags, self.tmp / f"{name}.log", env).start()
            self.workers.append(worker)
            started.append(worker)
        if wait:
            for worker in started:
                worker.wait_ready()
        return started

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


@atexit.register
def _kill_leftovers() -> None:
    for worker in list(_running):
        worker.stop(timeout=5)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    broker = EmbeddedBroker(free_port(), log_file=log).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def worker_factory(broker, tmp_path_factory):
    factory = WorkerFactory(broker, tmp_path_factory.mktemp("workers"))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def worker(worker_factory) -> WorkerProcess:
    """One ready worker (2 partitions, no training) with topics of its own: ``worker.settings``."""
    [one] = worker_factory.start(1)
    return one


@pytest.fixture(scope="session")
def kafka_producer(broker):
    producer = make_producer(load_settings({"bootstrap_servers": broker.bootstrap}, environ={}))
    try:
        yield producer
    finally:
        producer.close()


@pytest.fixture
def read_topic() -> Callable:
    """``read_topic(settings, topic, until=lambda records: ..., timeout=30)``: the records of
    ``topic`` from its beginning, read until ``until(records)`` holds (fails on timeout)."""
    consumers = []

    def read(settings: Settings, topic: str, until: Callable[[list], bool] = lambda records: True,
             timeout: float = 30.0) -> list:
        consumer = watch_consumer(settings, [topic], from_beginning=True)
        consumers.append(consumer)
        records: list = []
        deadline = time.monotonic() + timeout
        while True:
            for batch in consumer.poll(timeout_ms=250).values():
                records.extend(batch)
            if until(records):
                return records
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s reading {topic}: {len(records)} records, "
                            f"condition not met")

    yield read
    for consumer in consumers:
        consumer.close()


@pytest.fixture(scope="session")
def ops_binary() -> Callable[[str, str], str]:
    """``ops_binary("promtool", "prometheus")``: the path of an operations tool. Missing, the test
    skips with the Debian package to install, except under CI (``CI=true``, where `.ci/run`
    installs the packages), where a missing tool fails the test."""
    import shutil

    def find(binary: str, package: str) -> str:
        path = shutil.which(binary)
        if path:
            return path
        message = f"{binary} not found: install the Debian package {package} (apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must run this test")
        pytest.skip(message)

    return find
