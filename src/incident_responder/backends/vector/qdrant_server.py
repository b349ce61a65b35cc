"""A Qdrant server (or qdrant-client's local mode) as the vector index.

One collection holds every tenant; ``tenant`` lives in the payload with a keyword index
marked ``is_tenant`` so the server co-locates each tenant's points. Filtered searches are
planned by Qdrant itself (payload-index scan for selective filters, filterable HNSW
otherwise). Vendor errors are translated here: connection failures, timeouts, 5xx and
429 become ``BackendUnavailable``; everything else ``BackendError``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from incident_responder.errors import BackendError, BackendUnavailable, ConfigError, IncidentResponderError
from incident_responder.ports import Vector, VectorFilter, VectorHit, VectorPoint

# Payload fields the service filters on; each gets a keyword index.
INDEXED_FIELDS = ("tenant", "kind", "service", "ticket_id", "fingerprint", "runbook_id")
_PAGE = 1_000
_UPSERT_BATCH = 256
# gRPC status codes worth retrying (qdrant-client raises grpc.RpcError with prefer_grpc=True).
_RETRYABLE_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}

T = TypeVar("T")


def _translate(what: str, exc: Exception) -> BackendError:
    if isinstance(exc, ResourceExhaustedResponse):
        return BackendUnavailable(f"qdrant {what}: rate limited: {exc}")
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code or 0
        if status >= 500 or status in (408, 429):
            return BackendUnavailable(f"qdrant {what}: HTTP {status}: {exc.reason_phrase}")
        return BackendError(f"qdrant {what}: HTTP {status}: {exc.content[:200]!r}")
    if isinstance(exc, ResponseHandlingException):
        # Wraps the transport error (connect refused, timeout, ...) or an unparsable reply.
        source = exc.source
        if isinstance(source, (httpx.TransportError, OSError, TimeoutError)):
            return BackendUnavailable(f"qdrant {what}: {type(source).__name__}: {source}")
        return BackendError(f"qdrant {what}: bad response: {source}")
    code = getattr(exc, "code", None)
    if type(exc).__module__.startswith("grpc") and callable(code):
        name = getattr(code(), "name", "")
        if name in _RETRYABLE_GRPC:
            return BackendUnavailable(f"qdrant {what}: gRPC {name}")
        return BackendError(f"qdrant {what}: gRPC {name}: {exc}")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return BackendUnavailable(f"qdrant {what}: {exc}")
    return BackendError(f"qdrant {what}: {type(exc).__name__}: {exc}")


def _filter(where: VectorFilter) -> models.Filter | None:
    if where.empty:
        return None
    conditions: list[models.Condition] = [
        models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in where.equals.items()
    ]
    conditions += [
        models.FieldCondition(key=k, match=models.MatchAny(any=list(vs))) for k, vs in where.any_of.items()
    ]
    return models.Filter(must=conditions)


def _as_list(vector: Any) -> list[float]:
    return [float(x) for x in np.asarray(vector, dtype=np.float32).reshape(-1)]


class QdrantServerIndex:
    """``VectorIndex`` over one collection of a Qdrant server (cosine, unnamed dense vector)."""

    def __init__(self, *, client: QdrantClient, collection: str, dim: int) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self._client = client
        self._collection = collection
        self._dim = dim
        self._call("open collection", self._ensure_collection)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except IncidentResponderError:  # already ours (ConfigError from the set-up check)
            raise
        except Exception as exc:
            raise _translate(what, exc) from exc

    def _ensure_collection(self) -> None:
        if not self._client.collection_exists(self._collection):
            try:
                self._client.create_collection(
                    self._collection,
                    vectors_config=models.VectorParams(size=self._dim, distance=models.Distance.COSINE),
                )
            except UnexpectedResponse as exc:
                # Another replica created it between our check and our create.
                if exc.status_code != 409 and not self._client.collection_exists(self._collection):
                    raise
            except ValueError:
                # Local mode says "Collection ... already exists" for the same race.
                if not self._client.collection_exists(self._collection):
                    raise
        info = self._client.get_collection(self._collection)
        params = info.config.params.vectors
        size = params.size if isinstance(params, models.VectorParams) else None
        if size != self._dim:
            raise ConfigError(
                f"qdrant collection {self._collection!r} has vector size {size}, expected {self._dim}"
            )
        with warnings.catch_warnings():
            # Local mode (tests) warns that payload indexes are no-ops there; a server builds them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
            for name in INDEXED_FIELDS:
                schema: models.KeywordIndexParams | models.PayloadSchemaType = (
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
                    if name == "tenant"
                    else models.PayloadSchemaType.KEYWORD
                )
                # Creating an index that already exists with the same schema is a no-op.
                self._client.create_payload_index(self._collection, name, field_schema=schema, wait=True)

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        batch = [
            models.PointStruct(id=p.id, vector=self._checked(p.vector), payload=dict(p.payload))
            for p in points
        ]
        for start in range(0, len(batch), _UPSERT_BATCH):
            self._call(
                "upsert",
                partial(
                    self._client.upsert, self._collection, batch[start : start + _UPSERT_BATCH], wait=True
                ),
            )

    def _checked(self, vector: Any) -> list[float]:
        values = _as_list(vector)
        if len(values) != self._dim:
            raise ValueError(f"vector has {len(values)} dimensions, index has {self._dim}")
        return values

    def search(self, vector: Vector, where: VectorFilter, limit: int) -> list[VectorHit]:
        if limit <= 0:
            return []
        query = self._checked(vector)
        found = self._call(
            "search",
            lambda: self._client.query_points(
                self._collection, query=query, query_filter=_filter(where), limit=limit, with_payload=True
            ),
        )
        return [VectorHit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in found.points]

    def _scroll(self, where: VectorFilter, limit: int | None, with_vectors: bool) -> list[models.Record]:
        records: list[models.Record] = []
        offset: Any = None
        while True:
            page = _PAGE if limit is None else min(_PAGE, limit - len(records))
            if page <= 0:
                return records
            found, offset = self._call(
                "scroll",
                partial(
                    self._client.scroll,
                    self._collection,
                    scroll_filter=_filter(where),
                    limit=page,
                    offset=offset,
                    with_payload=True,
                    with_vectors=with_vectors,
                ),
            )
            records.extend(found)
            if offset is None:
                return records

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        return [
            VectorHit(id=str(r.id), score=0.0, payload=r.payload or {})
            for r in self._scroll(where, limit, False)
        ]

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        points = []
        for r in self._scroll(where, None, True):
            raw: Any = r.vector
            if isinstance(raw, dict):  # a collection created elsewhere with one named vector
                raw = next(iter(raw.values()))
            points.append(
                VectorPoint(id=str(r.id), vector=np.asarray(raw, dtype=np.float32), payload=r.payload or {})
            )
        return points

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        condition = _filter(where)
        if condition is None:
            raise ValueError("set_payload needs a filter")
        self._call(
            "set_payload",
            lambda: self._client.set_payload(self._collection, dict(payload), points=condition, wait=True),
        )

    def delete(self, where: VectorFilter) -> None:
        condition = _filter(where)
        if condition is None:
            raise ValueError("delete needs a filter")
        self._call(
            "delete",
            lambda: self._client.delete(
                self._collection, points_selector=models.FilterSelector(filter=condition), wait=True
            ),
        )

    def exists(self, point_id: str) -> bool:
        found = self._call(
            "retrieve",
            lambda: self._client.retrieve(
                self._collection, [point_id], with_payload=False, with_vectors=False
            ),
        )
        return bool(found)

    def count(self, where: VectorFilter) -> int:
        result = self._call(
            "count", lambda: self._client.count(self._collection, count_filter=_filter(where), exact=True)
        )
        return int(result.count)

    def close(self) -> None:
        # Writes are acknowledged with wait=True, so there is nothing to flush; the caller owns
        # the client but an index is its only user in the service, so release its connections.
        self._call("close", lambda: self._client.close())
