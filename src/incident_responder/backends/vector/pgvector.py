"""PostgreSQL + pgvector as the vector index (psycopg 3, pooled connections).

One table per index::

    id uuid PRIMARY KEY, embedding vector(dim), payload jsonb,
    tenant/kind/service/ticket_id/fingerprint/runbook_id  -- generated from payload, btree-indexed

plus an HNSW index (``vector_cosine_ops``). Filters on those six fields use the generated
columns; any other payload key is compared as ``payload->>key``.

Exactness. An HNSW scan visits ``ef_search`` candidates of the *whole* table and only then
applies the filter, so a selective filter (one tenant's one service) silently loses
neighbours. Every search therefore first counts the rows its filter admits (bounded by
``exact_limit`` and served by the btree indexes); when that count is within ``exact_limit``
the search is an exact scan of those rows, behind a ``MATERIALIZED`` CTE so the planner
cannot swap in the HNSW index. Only broader searches use HNSW, with pgvector 0.8's
``hnsw.iterative_scan = relaxed_order`` so the scan keeps going until ``limit`` rows pass the
filter (the final ``ORDER BY`` restores strict order).

Every statement runs under ``statement_timeout``; vendor errors are translated here
(connection loss, pool timeouts, cancelled statements, serialization failures and resource
exhaustion are ``BackendUnavailable``; everything else ``BackendError``).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed

from incident_responder.errors import BackendError, BackendUnavailable, ConfigError
from incident_responder.ports import Vector, VectorFilter, VectorHit, VectorPoint

# Payload fields the service filters on; each is a generated column with a btree index.
INDEXED_FIELDS = ("tenant", "kind", "service", "ticket_id", "fingerprint", "runbook_id")
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_DDL_LOCK = "incident_responder.pgvector.ddl"
_MAX_EF_SEARCH = 1_000  # pgvector's upper bound for hnsw.ef_search
_UPSERT_BATCH = 500
# SQLSTATE classes of OperationalError that a retry will not fix (54: program limit exceeded).
_PERMANENT_CLASSES = ("54",)

T = TypeVar("T")


def _translate(what: str, exc: Exception) -> BackendError:
    if isinstance(exc, PoolClosed):
        return BackendError(f"pgvector {what}: the index is closed")
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None) or ""
        if not state.startswith(_PERMANENT_CLASSES):
            # Connection refused/lost, pool timeout, statement_timeout, admin shutdown,
            # serialization failure/deadlock, too many connections, lock timeout.
            return BackendUnavailable(f"pgvector {what}: {type(exc).__name__}: {exc}")
    return BackendError(f"pgvector {what}: {type(exc).__name__}: {exc}")


def _uuid(point_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(point_id)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"point id {point_id!r} is not a UUID") from exc


class PgVectorIndex:
    """``VectorIndex`` over one PostgreSQL table with pgvector (cosine)."""

    def __init__(
        self,
        *,
        dsn: str,
        table: str,
        dim: int,
        min_connections: int = 1,
        max_connections: int = 4,
        connect_timeout: float = 5.0,
        statement_timeout_ms: int = 10_000,
        exact_limit: int = 10_000,
        ef_search: int = 100,
    ) -> None:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"table name {table!r} must match {_TABLE_NAME.pattern}")
        if dim <= 0:
            raise ValueError("dim must be positive")
        self._dim = dim
        self._table = sql.Identifier(table)
        self._table_name = table
        self._exact_limit = exact_limit
        self._ef_search = ef_search
        self._statement_timeout_ms = statement_timeout_ms
        connect_kwargs: dict[str, Any] = {"connect_timeout": max(1, math.ceil(connect_timeout))}
        try:
            # The extension must exist before the pool registers the vector type on each connection.
            with psycopg.connect(dsn, **connect_kwargs) as conn:
                self._bootstrap(conn)
        except BackendError:
            raise
        except psycopg.Error as exc:
            raise _translate("open", exc) from exc
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            kwargs=connect_kwargs,
            min_size=min_connections,
            max_size=max_connections,
            open=False,
            timeout=connect_timeout,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            name=f"pgvector-{table}",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise _translate("open pool", exc) from exc

    # -- set-up ---------------------------------------------------------------

    def _bootstrap(self, conn: psycopg.Connection[Any]) -> None:
        t = self._table
        with conn.transaction():
            # Serialize DDL across replicas starting at once (CREATE ... IF NOT EXISTS races).
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_DDL_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            generated = sql.SQL(", ").join(
                sql.SQL("{} text GENERATED ALWAYS AS (payload->>{}) STORED").format(
                    sql.Identifier(f), sql.Literal(f)
                )
                for f in INDEXED_FIELDS
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id uuid PRIMARY KEY, embedding vector({}) NOT NULL, "
                    "payload jsonb NOT NULL DEFAULT '{{}}'::jsonb, {})"
                ).format(t, sql.Literal(self._dim), generated)
            )
            for f in INDEXED_FIELDS:
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                        sql.Identifier(f"{self._table_name}_{f}_idx"), t, sql.Identifier(f)
                    )
                )
            conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)"
                ).format(sql.Identifier(f"{self._table_name}_embedding_hnsw"), t)
            )
            row = conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                (self._table_name,),
            ).fetchone()
        if row is None or row[0] != self._dim:
            stored = None if row is None else row[0]
            raise ConfigError(
                f"table {self._table_name!r} stores vector({stored}), expected vector({self._dim})"
            )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(self._statement_timeout_ms),))
        conn.commit()

    # -- helpers --------------------------------------------------------------

    def _run(self, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except BackendError:
            raise
        except psycopg.Error as exc:
            raise _translate(what, exc) from exc

    def _where(self, where: VectorFilter) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for key, value in where.equals.items():
            if key in INDEXED_FIELDS:
                parts.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
                params.append(str(value))
            else:
                parts.append(sql.SQL("payload->>%s = %s"))
                params.extend([key, str(value)])
        for key, values in where.any_of.items():
            if key in INDEXED_FIELDS:
                parts.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(key)))
                params.append([str(v) for v in values])
            else:
                parts.append(sql.SQL("payload->>%s = ANY(%s)"))
                params.extend([key, [str(v) for v in values]])
        if not parts:
            return sql.SQL("TRUE"), params
        return sql.SQL(" AND ").join(parts), params

    def _vector(self, vector: Any) -> Vector:
        arr = np.asarray(vector, dtype=np.float32).reshape(-1)
        if arr.shape[0] != self._dim:
            raise ValueError(f"vector has {arr.shape[0]} dimensions, index has {self._dim}")
        return arr

    # -- VectorIndex ----------------------------------------------------------

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        rows = [(_uuid(p.id), self._vector(p.vector), Jsonb(dict(p.payload))) for p in points]
        statement = sql.SQL(
            "INSERT INTO {} (id, embedding, payload) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, payload = EXCLUDED.payload"
        ).format(self._table)

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:  # one transaction: all points or none
                for start in range(0, len(rows), _UPSERT_BATCH):
                    cur.executemany(statement, rows[start : start + _UPSERT_BATCH])

        self._run("upsert", write)

    def search(self, vector: Vector, where: VectorFilter, limit: int) -> list[VectorHit]:
        if limit <= 0:
            return []
        query = self._vector(vector)
        cond, params = self._where(where)
        t = self._table

        def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            admitted = conn.execute(
                sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} WHERE {} LIMIT %s) AS admitted").format(
                    t, cond
                ),
                [*params, self._exact_limit + 1],
            ).fetchone()
            if admitted is not None and admitted[0] <= self._exact_limit:
                # Exact: the fence keeps the HNSW index out; the btree indexes serve the filter.
                statement = sql.SQL(
                    "WITH candidates AS MATERIALIZED ("
                    "SELECT id, payload, embedding <=> %s AS distance FROM {} WHERE {}) "
                    "SELECT id, payload, distance FROM candidates ORDER BY distance, id LIMIT %s"
                ).format(t, cond)
                return conn.execute(statement, [query, *params, limit]).fetchall()
            conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            ef = min(_MAX_EF_SEARCH, max(self._ef_search, limit))
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
            statement = sql.SQL(
                "WITH nearest AS MATERIALIZED ("
                "SELECT id, payload, embedding <=> %s AS distance FROM {} WHERE {} "
                "ORDER BY embedding <=> %s LIMIT %s) "
                "SELECT id, payload, distance FROM nearest ORDER BY distance, id"
            ).format(t, cond)
            return conn.execute(statement, [query, *params, query, limit]).fetchall()

        rows = self._run("search", run)
        return [VectorHit(id=str(r[0]), score=1.0 - float(r[2]), payload=r[1]) for r in rows]

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        if limit <= 0:
            return []
        cond, params = self._where(where)
        statement = sql.SQL("SELECT id, payload FROM {} WHERE {} ORDER BY id LIMIT %s").format(
            self._table, cond
        )
        rows = self._run("find", lambda conn: conn.execute(statement, [*params, limit]).fetchall())
        return [VectorHit(id=str(r[0]), score=0.0, payload=r[1]) for r in rows]

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        cond, params = self._where(where)
        statement = sql.SQL("SELECT id, embedding, payload FROM {} WHERE {} ORDER BY id").format(
            self._table, cond
        )
        rows = self._run("vectors", lambda conn: conn.execute(statement, params).fetchall())
        return [
            VectorPoint(id=str(r[0]), vector=np.array(r[1].to_numpy(), dtype=np.float32), payload=r[2])
            for r in rows
        ]

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        if where.empty:
            raise ValueError("set_payload needs a filter")
        cond, params = self._where(where)
        statement = sql.SQL("UPDATE {} SET payload = payload || %s WHERE {}").format(self._table, cond)
        self._run("set_payload", lambda conn: conn.execute(statement, [Jsonb(dict(payload)), *params]))

    def delete(self, where: VectorFilter) -> None:
        if where.empty:
            raise ValueError("delete needs a filter")
        cond, params = self._where(where)
        statement = sql.SQL("DELETE FROM {} WHERE {}").format(self._table, cond)
        self._run("delete", lambda conn: conn.execute(statement, params))

    def exists(self, point_id: str) -> bool:
        try:
            key = _uuid(point_id)
        except ValueError:
            return False  # never stored: upsert only accepts UUIDs
        statement = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(self._table)
        return self._run("exists", lambda conn: conn.execute(statement, (key,)).fetchone() is not None)

    def count(self, where: VectorFilter) -> int:
        cond, params = self._where(where)
        statement = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(self._table, cond)
        row = self._run("count", lambda conn: conn.execute(statement, params).fetchone())
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        # Every write commits before it returns; closing only releases the connections.
        self._pool.close()
