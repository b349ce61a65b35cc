"""The embedded default index: Qdrant Edge (Qdrant's engine in-process), one shard on disk.

Crash safety comes from the shard's write-ahead log: an acknowledged ``update`` is
replayed on the next ``load`` even after ``kill -9``. A background thread flushes the
shard every ``flush_seconds`` while there are writes, which lets Qdrant truncate the
WAL: without it the WAL grows with every write (all of it mapped into memory) and a
restart replays all of it. ``optimize()`` is never called on the
request path (it rebuilds segments and can take minutes at scale); filtered queries
are exact scans over the keyword payload indexes, which is what we want for "the
reports of one tenant+service".

Three layout choices keep a million stored incidents small and fast (``bench/index_1m.py``):
vectors are stored as float16 (half the memory; cosine scores move by < 1e-3); every
point carries one ``_scope`` keyword (tenant, kind and service joined) so the dedup
search filters on one indexed field instead of intersecting three; and
only the fields that narrow a filter are indexed (see ``INDEXED_FIELDS``). Shards
written before ``_scope`` existed are backfilled once when opened.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
import structlog

from incident_responder.errors import BackendUnavailable
from incident_responder.ports import VectorFilter, VectorHit, VectorPoint

_VECTOR = "v"
# A filter on all of these is answered from one compound keyword (the dedup search's filter).
SCOPE_FIELDS = ("tenant", "kind", "service")
SCOPE = "_scope"
# The keyword indexes of a new shard: every filter the service runs has one of these that
# narrows it to a few points (tenant, kind and service through the scope; runbooks through
# ``kind``). Each index costs memory per point, so tenant and service alone have none
# (filters on them are checked on the narrowed points).
INDEXED_FIELDS = ("kind", "ticket_id", "fingerprint", "runbook_id", SCOPE)
# What shards written before the scope existed have.
LEGACY_FIELDS = ("tenant", "kind", "service", "ticket_id", "fingerprint", "runbook_id")
_PAGE = 1_000
log = structlog.get_logger(__name__)


def scope_of(payload: Mapping[str, Any]) -> str | None:
    """The ``_scope`` keyword of a payload (None unless it has every scope field as text)."""
    if not all(isinstance(payload.get(f), str) for f in SCOPE_FIELDS):
        return None
    return json.dumps([payload[f] for f in SCOPE_FIELDS], ensure_ascii=False, separators=(",", ":"))


def _filter(where: VectorFilter) -> qe.Filter | None:
    if where.empty:
        return None
    equals = dict(where.equals)
    scope = scope_of(equals)
    if scope is not None:
        for field in SCOPE_FIELDS:
            del equals[field]
        equals[SCOPE] = scope
    return _must(equals, where.any_of)


def _must(equals: Mapping[str, Any], any_of: Mapping[str, Sequence[str]] | None = None) -> qe.Filter:
    conditions: list[Any] = [qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in equals.items()]
    conditions += [qe.FieldCondition(key=k, match=qe.MatchAny(list(vs))) for k, vs in (any_of or {}).items()]
    return qe.Filter(must=conditions)


def _public(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if k != SCOPE}


class QdrantEdgeIndex:
    """``VectorIndex`` over one Qdrant Edge shard on disk, in-process (cosine), flushed every
    ``flush_seconds`` while it is written to."""

    def __init__(self, path: Path, dim: int, *, float16: bool = True, flush_seconds: float = 10.0) -> None:
        self._dim = dim
        self._write_lock = threading.Lock()
        self._dirty = False
        params = qe.EdgeVectorParams(
            size=dim,
            distance=qe.Distance.Cosine,
            datatype=qe.VectorStorageDatatype.Float16 if float16 else qe.VectorStorageDatatype.Float32,
        )
        try:
            if path.is_dir() and any(path.iterdir()):
                self._shard = qe.EdgeShard.load(str(path))
                if SCOPE not in self._shard.info().payload_schema:
                    self._backfill_scope()
            else:
                path.mkdir(parents=True, exist_ok=True)
                self._shard = qe.EdgeShard.create(str(path), qe.EdgeConfig(vectors={_VECTOR: params}))
                for name in INDEXED_FIELDS:
                    self._create_keyword_index(name)
        except Exception as exc:  # the binding raises plain exceptions
            raise BackendUnavailable(f"cannot open vector index at {path}: {exc}") from exc
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        if flush_seconds > 0:
            self._flusher = threading.Thread(
                target=self._flush_every, args=(flush_seconds,), name="qdrant-edge-flush", daemon=True
            )
            self._flusher.start()

    def _create_keyword_index(self, name: str) -> None:
        self._shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))

    def _backfill_scope(self) -> None:
        """Give every point of a shard written before ``_scope`` existed its scope keyword.
        The field index is created last: it marks the backfill done (a crash redoes it)."""
        scopes: dict[str, dict[str, str]] = {}
        for record in self._scroll(VectorFilter({}), None, False):
            payload = record.payload or {}
            scope = scope_of(payload)
            if scope is not None:
                scopes[scope] = {f: payload[f] for f in SCOPE_FIELDS}
        for scope, fields in scopes.items():  # the plain fields: this shard has no scope yet
            self._shard.update(qe.UpdateOperation.set_payload_by_filter(_must(fields), {SCOPE: scope}))
        self._create_keyword_index(SCOPE)
        self._shard.flush()

    def _flush_every(self, seconds: float) -> None:
        while not self._closed.wait(seconds):
            try:
                self.flush()
            except BackendUnavailable as exc:  # retried next round; the WAL keeps the writes
                log.warning("vector_index.flush_failed", error=str(exc))

    def flush(self) -> None:
        """Persist the segments so the WAL can be truncated (no-op without new writes)."""
        with self._write_lock:
            if not self._dirty or self._closed.is_set():
                return
            self._dirty = False
            try:
                self._shard.flush()
            except Exception as exc:  # the WAL still holds every write: nothing is lost
                self._dirty = True
                raise BackendUnavailable(f"vector index flush failed: {exc}") from exc

    def _update(self, op: qe.UpdateOperation) -> None:
        try:
            with self._write_lock:
                self._shard.update(op)
                self._dirty = True
        except Exception as exc:
            raise BackendUnavailable(f"vector index update failed: {exc}") from exc

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        batch = [
            qe.Point(
                id=p.id,
                vector={_VECTOR: np.asarray(p.vector, dtype=np.float32).tolist()},
                payload=_with_scope(p.payload),
            )
            for p in points
        ]
        self._update(qe.UpdateOperation.upsert_points(batch))

    def search(self, vector: Any, where: VectorFilter, limit: int) -> list[VectorHit]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=_VECTOR),
            filter=_filter(where),
            with_payload=True,
        )
        try:
            found = self._shard.query(request)
        except Exception as exc:
            raise BackendUnavailable(f"vector search failed: {exc}") from exc
        return [VectorHit(id=str(p.id), score=float(p.score), payload=_public(p.payload)) for p in found]

    def _scroll(self, where: VectorFilter, limit: int | None, with_vector: bool) -> list[Any]:
        records: list[Any] = []
        offset = None
        try:
            while True:
                page = _PAGE if limit is None else min(_PAGE, limit - len(records))
                found, offset = self._shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=page,
                        filter=_filter(where),
                        with_payload=True,
                        with_vector=with_vector,
                    )
                )
                records.extend(found)
                if offset is None or (limit is not None and len(records) >= limit):
                    return records
        except Exception as exc:
            raise BackendUnavailable(f"vector scroll failed: {exc}") from exc

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        return [
            VectorHit(id=str(r.id), score=0.0, payload=_public(r.payload))
            for r in self._scroll(where, limit, False)
        ]

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        points = []
        for r in self._scroll(where, None, True):
            raw = r.vector[_VECTOR] if isinstance(r.vector, dict) else r.vector
            points.append(
                VectorPoint(
                    id=str(r.id), vector=np.asarray(raw, dtype=np.float32), payload=_public(r.payload)
                )
            )
        return points

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        condition = _filter(where)
        if condition is None:
            raise ValueError("set_payload needs a filter")
        if any(field in payload for field in (*SCOPE_FIELDS, SCOPE)):
            raise ValueError(f"set_payload cannot change {', '.join(SCOPE_FIELDS)}: upsert the point instead")
        self._update(qe.UpdateOperation.set_payload_by_filter(condition, dict(payload)))

    def delete(self, where: VectorFilter) -> None:
        condition = _filter(where)
        if condition is None:
            raise ValueError("delete needs a filter")
        self._update(qe.UpdateOperation.delete_points_by_filter(condition))

    def exists(self, point_id: str) -> bool:
        try:
            return bool(self._shard.retrieve([point_id], False, False))
        except Exception as exc:
            raise BackendUnavailable(f"vector lookup failed: {exc}") from exc

    def count(self, where: VectorFilter) -> int:
        try:
            return int(self._shard.count(qe.CountRequest(filter=_filter(where), exact=True)))
        except Exception as exc:
            raise BackendUnavailable(f"vector count failed: {exc}") from exc

    def close(self) -> None:
        with self._write_lock:
            if self._closed.is_set():
                return
            self._closed.set()
            try:
                self._shard.flush()
            finally:
                self._shard.close()
        if self._flusher is not None:
            self._flusher.join()


def _with_scope(payload: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(payload)
    out.pop(SCOPE, None)
    scope = scope_of(out)
    if scope is not None:
        out[SCOPE] = scope
    return out
