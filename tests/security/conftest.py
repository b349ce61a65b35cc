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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.servers import ServeProcess as Server

REQUEST_LIMIT = 1.0
STALL_LIMIT = 0.25
KEYS = "acme:acme-key-123,acme:acme-key-789,globex:globex-key-456"
ACME = {"X-API-Key": "acme-key-123"}
ACME_OTHER = {"X-API-Key": "acme-key-789"}
GLOBEX = {"X-API-Key": "globex-key-456"}
METRICS_TOKEN = "metrics-token-0001"


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
