"""The embedded default index: Qdrant Edge (Qdrant's engine in-process), one shard on disk.

Crash safety comes from the shard's write-ahead log: an acknowledged ``update`` is
replayed on the next ``load`` even after ``kill -9``. ``optimize()`` is never called
on the request path (it rebuilds segments and can take minutes at scale); filtered
queries are exact scans over the keyword payload indexes, which is what we want for
"the reports of one tenant+service".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from incident_responder.errors import BackendUnavailable
from incident_responder.ports import VectorFilter, VectorHit, VectorPoint

_VECTOR = "v"
# Payload fields the service filters on; each gets a keyword index.
INDEXED_FIELDS = ("tenant", "kind", "service", "ticket_id", "fingerprint", "runbook_id")
_PAGE = 1_000


def _filter(where: VectorFilter) -> qe.Filter | None:
    if not where.equals:
        return None
    return qe.Filter(must=[qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in where.equals.items()])


class QdrantEdgeIndex:
    def __init__(self, path: Path, dim: int) -> None:
        self._dim = dim
        self._write_lock = threading.Lock()
        config = qe.EdgeConfig(vectors={_VECTOR: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)})
        try:
            if path.is_dir() and any(path.iterdir()):
                self._shard = qe.EdgeShard.load(str(path))
            else:
                path.mkdir(parents=True, exist_ok=True)
                self._shard = qe.EdgeShard.create(str(path), config)
                for name in INDEXED_FIELDS:
                    self._shard.update(
                        qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword)
                    )
        except Exception as exc:  # the binding raises plain exceptions
            raise BackendUnavailable(f"cannot open vector index at {path}: {exc}") from exc

    def _update(self, op: qe.UpdateOperation) -> None:
        try:
            with self._write_lock:
                self._shard.update(op)
        except Exception as exc:
            raise BackendUnavailable(f"vector index update failed: {exc}") from exc

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        batch = [
            qe.Point(
                id=p.id,
                vector={_VECTOR: np.asarray(p.vector, dtype=np.float32).tolist()},
                payload=dict(p.payload),
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
        return [VectorHit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in found]

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
            VectorHit(id=str(r.id), score=0.0, payload=r.payload or {})
            for r in self._scroll(where, limit, False)
        ]

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        points = []
        for r in self._scroll(where, None, True):
            raw = r.vector[_VECTOR] if isinstance(r.vector, dict) else r.vector
            points.append(
                VectorPoint(id=str(r.id), vector=np.asarray(raw, dtype=np.float32), payload=r.payload or {})
            )
        return points

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        condition = _filter(where)
        if condition is None:
            raise ValueError("set_payload needs a filter")
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
            try:
                self._shard.flush()
            finally:
                self._shard.close()
