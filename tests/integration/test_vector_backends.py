"""Backend-specific behaviour of the server VectorIndex adapters (the shared contract is in
tests/contract/test_vector_index.py): pgvector's exact filtered search, Pinecone's namespace per
tenant and read-your-writes, and how each adapter reports an unreachable backend."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from incident_responder.errors import BackendError, BackendUnavailable
from incident_responder.ports import VectorFilter, VectorPoint
from tests.pinecone_fake import FakePinecone

PG_DIM = 32
ROWS, MATCHING, QUERIES, TOP = 5_000, 50, 20, 5


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pgvector ---------------------------------------------------------------------------


@pytest.fixture
def pg_table(pgvector_dsn: str) -> Iterator[str]:
    from tests.vector_servers import drop_table

    table = f"vt_{uuid.uuid4().hex[:16]}"
    yield table
    drop_table(pgvector_dsn, table)


@pytest.fixture(scope="module")
def needles(pgvector_dsn: str) -> Iterator[tuple[str, np.ndarray, list[str], list[int]]]:
    """5,000 rows of one tenant, 50 of them (1 %) in service "needle"; HNSW built over all of them."""
    import psycopg

    from incident_responder.backends.vector.pgvector import PgVectorIndex
    from tests.vector_servers import drop_table

    table = f"vt_{uuid.uuid4().hex[:16]}"
    rng = np.random.default_rng(7)
    x = _unit(rng, ROWS, PG_DIM)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(ROWS)]
    chosen = sorted(rng.choice(ROWS, size=MATCHING, replace=False).tolist())
    needle_set = set(chosen)
    idx = PgVectorIndex(dsn=pgvector_dsn, table=table, dim=PG_DIM)
    # Inserting 5,000 rows one by one into a live HNSW graph takes ~6 s on this machine; load
    # without it and let reopening the index build it in bulk (~1.5 s), as a migration would.
    with psycopg.connect(pgvector_dsn, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {table}_embedding_hnsw")
    try:
        idx.upsert(
            [
                VectorPoint(
                    ids[i],
                    x[i],
                    {"tenant": "acme", "kind": "incident", "service": "needle" if i in needle_set else "hay"},
                )
                for i in range(ROWS)
            ]
        )
    finally:
        idx.close()
    PgVectorIndex(dsn=pgvector_dsn, table=table, dim=PG_DIM).close()  # builds the HNSW index
    yield table, x, ids, chosen
    drop_table(pgvector_dsn, table)


def test_pgvector_filtered_search_is_exact_at_one_percent_selectivity(
    pgvector_dsn: str, needles: tuple[str, np.ndarray, list[str], list[int]]
) -> None:
    import psycopg
    from pgvector.psycopg import register_vector

    from incident_responder.backends.vector.pgvector import PgVectorIndex

    pg_table, x, ids, chosen = needles
    idx = PgVectorIndex(dsn=pgvector_dsn, table=pg_table, dim=PG_DIM)
    queries = _unit(np.random.default_rng(11), QUERIES, PG_DIM)
    where = VectorFilter({"tenant": "acme", "kind": "incident", "service": "needle"})
    control_found = 0
    try:
        with psycopg.connect(pgvector_dsn) as conn:
            register_vector(conn)
            hnsw = conn.execute(
                "SELECT 1 FROM pg_indexes WHERE indexname = %s", (f"{pg_table}_embedding_hnsw",)
            )
            assert hnsw.fetchone() is not None
            for q in queries:
                truth = sorted(chosen, key=lambda i: (-float(x[i] @ q), ids[i]))[:TOP]
                hits = idx.search(q, where, TOP)
                assert [h.id for h in hits] == [ids[i] for i in truth]
                assert [h.score for h in hits] == pytest.approx([float(x[i] @ q) for i in truth], abs=1e-5)
                assert all(h.payload["service"] == "needle" for h in hits)
                # Control: the plain HNSW plan (filter applied after ef_search=40 candidates).
                conn.execute("SET enable_seqscan = off")
                conn.execute("SET enable_bitmapscan = off")
                plain = conn.execute(
                    f"SELECT id FROM {pg_table} WHERE payload->>'service' = 'needle' "
                    "ORDER BY embedding <=> %s LIMIT %s",
                    (q, TOP),
                ).fetchall()
                control_found += len({str(r[0]) for r in plain} & {ids[i] for i in truth})
    finally:
        idx.close()
    # The control shows the test can fail: the default HNSW plan misses most of these neighbours.
    assert control_found < 0.9 * QUERIES * TOP


def test_pgvector_broad_filters_use_hnsw_with_iterative_scan(
    pgvector_dsn: str, needles: tuple[str, np.ndarray, list[str], list[int]]
) -> None:
    from incident_responder.backends.vector.pgvector import PgVectorIndex

    pg_table, x, ids, chosen = needles
    # exact_limit below the 50 admitted rows forces the approximate path for the same filter.
    idx = PgVectorIndex(dsn=pgvector_dsn, table=pg_table, dim=PG_DIM, exact_limit=10)
    where = VectorFilter({"tenant": "acme", "service": "needle"})
    found = 0
    try:
        for q in _unit(np.random.default_rng(11), QUERIES, PG_DIM):
            truth = {ids[i] for i in sorted(chosen, key=lambda i: -float(x[i] @ q))[:TOP]}
            hits = idx.search(q, where, TOP)
            assert len(hits) == TOP  # iterative scan keeps going until enough rows pass the filter
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            found += len({h.id for h in hits} & truth)
    finally:
        idx.close()
    assert found >= 0.9 * QUERIES * TOP


def test_pgvector_statement_timeout_is_unavailable(pgvector_dsn: str, pg_table: str) -> None:
    import psycopg

    from incident_responder.backends.vector.pgvector import PgVectorIndex

    idx = PgVectorIndex(dsn=pgvector_dsn, table=pg_table, dim=4, statement_timeout_ms=200)
    try:
        idx.upsert([VectorPoint(str(uuid.uuid4()), np.ones(4, np.float32), {"tenant": "t"})])
        with psycopg.connect(pgvector_dsn) as locker:
            locker.execute(f"LOCK TABLE {pg_table} IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="QueryCanceled"):
                idx.search(np.ones(4, np.float32), VectorFilter({"tenant": "t"}), 3)
            assert time.monotonic() - started < 5
            locker.rollback()
        assert len(idx.search(np.ones(4, np.float32), VectorFilter({"tenant": "t"}), 3)) == 1
    finally:
        idx.close()


def test_pgvector_stopped_server_and_refused_connection_are_unavailable() -> None:
    from incident_responder.backends.vector.pgvector import PgVectorIndex
    from tests.vector_servers import PgServer

    server = PgServer()  # a private server: this test stops it
    stopped = False
    try:
        idx = PgVectorIndex(dsn=server.dsn, table="incidents", dim=4, connect_timeout=0.5)
        try:
            idx.upsert([VectorPoint(str(uuid.uuid4()), np.ones(4, np.float32), {"tenant": "t"})])
            server.stop()
            stopped = True
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="PoolTimeout"):
                idx.search(np.ones(4, np.float32), VectorFilter({"tenant": "t"}), 3)
            assert time.monotonic() - started < 5
        finally:
            idx.close()
        with pytest.raises(BackendUnavailable, match="pgvector open"):
            PgVectorIndex(dsn=server.dsn, table="incidents", dim=4, connect_timeout=0.5)
    finally:
        if not stopped:
            server.stop()


# -- Qdrant (server API) ---------------------------------------------------------------------


class _StatusServer:
    """Answers every HTTP request with one status code (a Qdrant that is overloaded or confused)."""

    def __init__(self, status: int) -> None:
        code = status

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = b'{"status": {"error": "injected"}}'
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.mark.parametrize(
    ("status", "error"), [(None, BackendUnavailable), (503, BackendUnavailable), (400, BackendError)]
)
def test_qdrant_server_errors_are_translated(status: int | None, error: type[BackendError]) -> None:
    from qdrant_client import QdrantClient

    from incident_responder.backends.vector.qdrant_server import QdrantServerIndex

    stub = _StatusServer(status) if status is not None else None
    url = stub.url if stub is not None else f"http://127.0.0.1:{_free_port()}"  # refused
    client = QdrantClient(url=url, timeout=2, check_compatibility=False)
    try:
        with pytest.raises(error) as caught:
            QdrantServerIndex(client=client, collection="incidents", dim=4)
        assert (caught.type is BackendUnavailable) == (error is BackendUnavailable)
    finally:
        client.close()
        if stub is not None:
            stub.stop()


def test_qdrant_local_reopens_an_existing_collection(tmp_path: Any) -> None:
    from qdrant_client import QdrantClient

    from incident_responder.backends.vector.qdrant_server import QdrantServerIndex
    from incident_responder.errors import ConfigError

    path = str(tmp_path / "qdrant")
    idx = QdrantServerIndex(client=QdrantClient(path=path), collection="incidents", dim=4)
    pid = str(uuid.uuid4())
    idx.upsert([VectorPoint(pid, np.ones(4, np.float32), {"tenant": "t", "kind": "incident"})])
    idx.close()  # closes the client, releasing the storage lock
    again = QdrantServerIndex(client=QdrantClient(path=path), collection="incidents", dim=4)
    try:
        assert again.exists(pid) and again.count(VectorFilter({"tenant": "t"})) == 1
        with pytest.raises(ConfigError, match="vector size 4, expected 8"):
            QdrantServerIndex(client=again._client, collection="incidents", dim=8)
    finally:
        again.close()


# -- Pinecone ---------------------------------------------------------------------------------


def _pine(fake: FakePinecone, prefix: str | None = None, **kwargs: Any) -> Any:
    from incident_responder.backends.vector.pinecone import PineconeIndex

    return PineconeIndex(
        index_host=fake.url,
        api_key=fake.api_key,
        namespace_prefix=prefix if prefix is not None else f"{uuid.uuid4().hex[:8]}-",
        dim=fake.dim,
        timeout=5.0,
        **kwargs,
    )


def _v(*xs: float, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def test_pinecone_keeps_each_tenant_in_its_own_namespace(pinecone_fake: FakePinecone) -> None:
    prefix = f"{uuid.uuid4().hex[:8]}-"
    idx, other = _pine(pinecone_fake, prefix), _pine(pinecone_fake)
    try:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        idx.upsert(
            [
                VectorPoint(a, _v(1, 0), {"tenant": "acme", "ticket_id": "T1", "n": 7}),
                VectorPoint(b, _v(1, 0), {"tenant": "globex", "ticket_id": "T1"}),
            ]
        )
        assert set(pinecone_fake.namespace_records(f"{prefix}acme")) == {a}
        assert set(pinecone_fake.namespace_records(f"{prefix}globex")) == {b}
        hits = idx.search(_v(1, 0), VectorFilter({"tenant": "acme"}), 10)
        assert [h.id for h in hits] == [a] and hits[0].payload == {
            "tenant": "acme",
            "ticket_id": "T1",
            "n": 7,
        }
        # Same ticket id in both tenants: a tenant's delete and set_payload stay in its namespace.
        idx.set_payload(VectorFilter({"tenant": "globex", "ticket_id": "T1"}), {"status": "resolved"})
        assert "status" not in idx.find(VectorFilter({"tenant": "acme"}), 10)[0].payload
        idx.delete(VectorFilter({"tenant": "acme", "ticket_id": "T1"}))
        assert idx.find(VectorFilter({"tenant": "acme"}), 10) == []
        assert [p.id for p in idx.vectors(VectorFilter({"tenant": "globex"}))] == [b]
        assert idx.exists(b) and not idx.exists(a)
        # Another prefix on the same index is another set of namespaces.
        assert other.search(_v(1, 0), VectorFilter({"tenant": "globex"}), 10) == [] and not other.exists(b)
        # Without a tenant there is no namespace to address.
        for call in (
            lambda: idx.search(_v(1, 0), VectorFilter({"ticket_id": "T1"}), 3),
            lambda: idx.find(VectorFilter({"ticket_id": "T1"}), 3),
            lambda: idx.vectors(VectorFilter({})),
            lambda: idx.set_payload(VectorFilter({"ticket_id": "T1"}), {"x": "y"}),
            lambda: idx.delete(VectorFilter({"ticket_id": "T1"})),
            lambda: idx.upsert([VectorPoint(str(uuid.uuid4()), _v(1), {"ticket_id": "T1"})]),
        ):
            with pytest.raises(ValueError, match="tenant"):
                call()
    finally:
        idx.close()
        other.close()


def test_pinecone_reads_wait_for_the_index_to_catch_up() -> None:
    from pinecone import Index

    fake = FakePinecone(dim=8, lag=0.4).start()
    idx = _pine(fake, "p-")
    raw = Index(host=fake.url, api_key=fake.api_key, timeout=5.0)
    try:
        pid = str(uuid.uuid4())
        idx.upsert([VectorPoint(pid, _v(1, 0), {"tenant": "t", "ticket_id": "T1"})])
        # The index really lags: a query straight after the write does not see it...
        assert raw.query(top_k=1, vector=_v(1, 0).tolist(), namespace="p-t").matches == []
        # ...but this process reads its own writes.
        assert [h.id for h in idx.search(_v(1, 0), VectorFilter({"tenant": "t"}), 3)] == [pid]
        idx.set_payload(VectorFilter({"tenant": "t", "ticket_id": "T1"}), {"status": "resolved"})
        assert idx.find(VectorFilter({"tenant": "t"}), 3)[0].payload["status"] == "resolved"
    finally:
        raw.close()
        idx.close()
        fake.stop()


@pytest.mark.parametrize(
    ("status", "error"), [(503, BackendUnavailable), (429, BackendUnavailable), (400, BackendError)]
)
def test_pinecone_http_errors_are_translated(
    pinecone_fake: FakePinecone, status: int, error: type[BackendError]
) -> None:
    idx = _pine(pinecone_fake)
    try:
        pinecone_fake.fail_with(status, times=8, path="/query")  # more than the SDK's retries
        with pytest.raises(error) as caught:
            idx.search(_v(1), VectorFilter({"tenant": "t"}), 3)
        assert (caught.type is BackendUnavailable) == (error is BackendUnavailable)
    finally:
        with pinecone_fake._lock:
            pinecone_fake._failures.clear()
        idx.close()


def test_pinecone_wrong_key_is_a_backend_error(pinecone_fake: FakePinecone) -> None:
    from incident_responder.backends.vector.pinecone import PineconeIndex

    with pytest.raises(BackendError, match="401") as caught:
        PineconeIndex(index_host=pinecone_fake.url, api_key="wrong", dim=8)
    assert caught.type is BackendError


def test_pinecone_stopped_server_is_unavailable() -> None:
    fake = FakePinecone(dim=8).start()
    idx = _pine(fake)
    try:
        idx.upsert([VectorPoint(str(uuid.uuid4()), _v(1), {"tenant": "t"})])
        fake.stop()
        with pytest.raises(BackendUnavailable, match="PineconeConnectionError"):
            idx.search(_v(1), VectorFilter({"tenant": "t"}), 3)  # after the SDK's own retries (~3 s)
    finally:
        idx.close()


@pytest.mark.skipif(
    not (os.environ.get("PINECONE_API_KEY") and os.environ.get("PINECONE_INDEX_HOST")),
    reason="live Pinecone test: set PINECONE_API_KEY and PINECONE_INDEX_HOST (a dense cosine index)",
)
def test_pinecone_live_round_trip() -> None:
    from pinecone import Index

    from incident_responder.backends.vector.pinecone import PineconeIndex

    host, key = os.environ["PINECONE_INDEX_HOST"], os.environ["PINECONE_API_KEY"]
    admin = Index(host=host, api_key=key)
    dim = admin.describe_index_stats().dimension or 8
    prefix = f"ir-test-{uuid.uuid4().hex[:8]}-"
    idx = PineconeIndex(index_host=host, api_key=key, namespace_prefix=prefix, dim=dim)

    def eventually(check: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "Pinecone did not converge in time"
            time.sleep(1.0)

    try:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        idx.upsert(
            [
                VectorPoint(a, _v(1, 0, dim=dim), {"tenant": "t", "ticket_id": "A", "n": 1}),
                VectorPoint(b, _v(1, 0.3, dim=dim), {"tenant": "t", "ticket_id": "B"}),
            ]
        )
        eventually(lambda: len(idx.search(_v(1, 0, dim=dim), VectorFilter({"tenant": "t"}), 5)) == 2)
        hits = idx.search(_v(1, 0, dim=dim), VectorFilter({"tenant": "t"}), 5)
        assert [h.id for h in hits] == [a, b] and hits[0].payload["n"] == 1
        idx.set_payload(VectorFilter({"tenant": "t", "ticket_id": "B"}), {"status": "resolved"})
        eventually(lambda: idx.find(VectorFilter({"tenant": "t", "status": "resolved"}), 5) != [])
        idx.delete(VectorFilter({"tenant": "t", "ticket_id": "A"}))
        eventually(lambda: [p.id for p in idx.vectors(VectorFilter({"tenant": "t"}))] == [b])
        assert idx.exists(b)
    finally:
        idx.close()
        try:
            admin.delete_namespace(name=f"{prefix}t")
        finally:
            admin.close()
