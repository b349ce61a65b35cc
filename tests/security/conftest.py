"""Black-box hostile requests against a real server process.

Each attack runs while a separate process polls ``/healthz`` on its own keep-alive
connection; an attack fails if any of its requests took over ``REQUEST_LIMIT`` seconds or
the worst ``/healthz`` answer meanwhile took over ``STALL_LIMIT`` (the server froze for
everyone). The figures of every attack are printed at the end of the run.
"""

from __future__ import annotations

import http.client
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.s3_servers import free_port

REQUEST_LIMIT = 1.0
STALL_LIMIT = 0.25
KEYS = "acme:acme-key-123,acme:acme-key-789,globex:globex-key-456"
ACME = {"X-API-Key": "acme-key-123"}
ACME_OTHER = {"X-API-Key": "acme-key-789"}
GLOBEX = {"X-API-Key": "globex-key-456"}
METRICS_TOKEN = "metrics-token-0001"


@dataclass
class Server:
    """One ``incident-responder serve`` process on a free port."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    ready_seconds: float = 0.0
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "IR_LOG_LEVEL": "warning", **self.env}
        self._log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115 - closed by stop()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "incident_responder", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            env=env, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(self.log()[-3000:])
            time.sleep(0.05)
        self.ready_seconds = time.perf_counter() - started
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return (self.data_dir.parent / f"server-{self.port}.log").read_text(errors="replace")

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def _poll(port: int, conn: multiprocessing.connection.Connection) -> None:
    """In its own process: GET /healthz back to back; answer the worst latency since the last ask."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    worst = 0.0
    while True:
        if conn.poll():
            command = conn.recv()
            if command == "stop":
                return
            conn.send(worst)
            worst = 0.0
        started = time.perf_counter()
        try:
            client.request("GET", "/healthz")
            client.getresponse().read()
        except (OSError, http.client.HTTPException):
            client.close()
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        worst = max(worst, time.perf_counter() - started)
        time.sleep(0.005)


class HealthWatch:
    """A /healthz poller in another process (the test's own work never delays it)."""

    def __init__(self, port: int) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_poll, args=(port, child), daemon=True
        )
        self._proc.start()
        time.sleep(0.3)

    def worst(self) -> float:
        """The slowest /healthz answer since the last call."""
        self._conn.send("read")
        return float(self._conn.recv())

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(timeout=10)


@dataclass
class Attack:
    name: str
    slowest_request: float = 0.0
    stall: float = 0.0
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def request(self) -> Iterator[None]:
        """Time one request of the attack."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.slowest_request = max(self.slowest_request, time.perf_counter() - started)


RESULTS: list[Attack] = []


@pytest.fixture
def attack(request: pytest.FixtureRequest, health: HealthWatch) -> Iterator[Callable[[str], Attack]]:
    """``attack(name)`` opens a measured attack; at the end of the test, its slowest request and
    the worst /healthz answer meanwhile are checked against the limits."""
    opened: list[Attack] = []

    def start(name: str) -> Attack:
        health.worst()  # what came before is not this attack's
        opened.append(Attack(name))
        return opened[-1]

    yield start
    stall = health.worst()
    for one in opened:
        one.stall = stall
        RESULTS.append(one)
    for one in opened:
        assert one.slowest_request <= REQUEST_LIMIT, f"{one.name}: a request took {one.slowest_request:.2f} s"
        assert stall <= STALL_LIMIT, f"{one.name}: /healthz stalled {stall * 1000:.0f} ms"


MAIN_ENV = {
    "IR_API_KEYS": KEYS,
    "IR_HTTP__HEADER_TIMEOUT": "1",
    "IR_HTTP__BODY_TIMEOUT": "1",
    "IR_HTTP__KEEP_ALIVE_TIMEOUT": "2",
    "IR_HTTP__MAX_CONNECTIONS_PER_CLIENT": "30",
    "IR_METRICS__TOKEN": METRICS_TOKEN,
    "IR_METRICS__MAX_SERVICES": "20",
    "IR_MAX_COMMENTS": "3",
    "IR_MAX_BATCH": "1000",
    "IR_RATE_LIMIT__FAILED_AUTH_PER_ADDRESS": "",
    "IR_RELIABILITY__IDEMPOTENCY_MAX_RECORDS": "5",
    "IR_RELIABILITY__IDEMPOTENCY_SWEEP_INTERVAL": "0.3",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("security")
    running = Server(root / "data", MAIN_ENV).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def health(server: Server) -> Iterator[HealthWatch]:
    watch = HealthWatch(server.port)
    yield watch
    watch.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("hostile requests: slowest request and worst /healthz answer")
    for one in RESULTS:
        terminalreporter.write_line(
            f"{one.name:<58} {one.slowest_request * 1000:8.1f} ms {one.stall * 1000:8.1f} ms  "
            + "; ".join(one.notes)
        )
