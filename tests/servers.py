"""``incident-responder serve`` as a real process, for the tests that need one: start it on a
free port, wait until it is ready, stop it (SIGTERM) or kill it (SIGKILL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tests.s3_servers import free_port


@dataclass
class ServeProcess:
    """One server process on ``data_dir`` with ``env`` (beside the test's own environment)."""

    data_dir: Path
    env: dict[str, str]
    args: tuple[str, ...] = ()  # more command-line options, e.g. ("--workers", "2")
    port: int = field(default_factory=free_port)
    ready_answers: int = 1  # /readyz 200s in a row that mean ready (more with several workers)
    proc: subprocess.Popen[bytes] | None = None
    ready_seconds: float = 0.0
    _log: IO[bytes] | None = None
    _spawned: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 180.0) -> ServeProcess:
        """Spawn the process and wait until it is ready."""
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> ServeProcess:
        """Spawn the process (several can then start side by side before ``wait_ready``)."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "IR_LOG_LEVEL": "warning", **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()/kill()
        self._spawned = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "incident_responder", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir), *self.args],
            env=env, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        return self

    def wait_ready(self, timeout: float = 180.0) -> ServeProcess:
        """Wait for ``ready_answers`` /readyz 200s in a row; the log tail if it exits first."""
        assert self.proc is not None, "spawn first"
        deadline = time.time() + timeout
        answers = 0
        while answers < self.ready_answers:
            try:
                ok = httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
                answers = answers + 1 if ok else 0
            except httpx.HTTPError:
                answers = 0
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(self.log()[-3000:])
            if answers < self.ready_answers:
                time.sleep(0.05)
        self.ready_seconds = time.perf_counter() - self._spawned
        return self

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait; the exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=timeout)
        self._close()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush or drain."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
