"""A Pinecone (serverless, cosine) index as the vector index, one namespace per tenant.

Every point lives in namespace ``namespace_prefix + payload["tenant"]`` and keeps ``tenant`` in
its metadata too, so every filter sent is non-empty and a point reads back unchanged. Filters
are Pinecone metadata filters (``{"field": {"$eq": value}}``, implicit AND). Because the
namespace is the tenant, ``where`` must name the tenant; ``allow_cross_tenant=True`` instead
fans such calls out over every namespace under the prefix (slow; for maintenance and tests).
``exists(point_id)`` has no tenant to go on, so it always looks through those namespaces.

Consistency: Pinecone applies writes asynchronously. Upsert and update responses carry the
log position (LSN) they committed at; before the next read of that namespace this adapter
polls a one-row query until the index reports it has caught up (bounded by
``consistency_timeout``), giving read-your-writes for this process. The SDK does not return the
LSN of a delete, so deletes become visible eventually (normally within a second or two).

Vendor errors are translated here: transport failures, timeouts, 429 and 5xx (after the SDK's
own retries) are ``BackendUnavailable``; everything else ``BackendError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import httpx
import numpy as np
import structlog
from pinecone import Index
from pinecone.errors.exceptions import (
    ApiError,
    PineconeConnectionError,
    PineconeError,
    PineconeTimeoutError,
    RateLimitError,
    ServiceError,
)
from pinecone.models.response_info import ResponseInfo

from incident_responder.errors import BackendError, BackendUnavailable, ConfigError
from incident_responder.ports import Vector, VectorFilter, VectorHit, VectorPoint

_UPSERT_BATCH = 100  # Pinecone caps a request at 1,000 vectors and 2 MB
_FETCH_PAGE = 1_000
_MAX_TOP_K = 1_000  # the server's cap on top_k when metadata is included
_POLL_INTERVAL = 0.1

log = structlog.get_logger(__name__)

T = TypeVar("T")


def _translate(what: str, exc: Exception) -> BackendError:
    if isinstance(exc, (PineconeConnectionError, PineconeTimeoutError, RateLimitError, ServiceError)):
        return BackendUnavailable(f"pinecone {what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ApiError) and (exc.status_code >= 500 or exc.status_code in (408, 429)):
        return BackendUnavailable(f"pinecone {what}: HTTP {exc.status_code}: {exc}")
    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return BackendUnavailable(f"pinecone {what}: {type(exc).__name__}: {exc}")
    return BackendError(f"pinecone {what}: {type(exc).__name__}: {exc}")


def _payload(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    # Pinecone stores numbers as doubles; our payload values are str or int.
    out: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value
    return out


class PineconeIndex:
    """``VectorIndex`` over one Pinecone index's data plane (REST), namespace per tenant."""

    def __init__(
        self,
        *,
        index_host: str,
        api_key: str,
        namespace_prefix: str = "",
        dim: int,
        timeout: float = 10.0,
        consistency_timeout: float = 10.0,
        allow_cross_tenant: bool = False,
    ) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        if not api_key:
            raise ConfigError("a Pinecone API key is required")
        self._dim = dim
        self._prefix = namespace_prefix
        self._consistency_timeout = consistency_timeout
        self._allow_cross_tenant = allow_cross_tenant
        self._probe = [1.0] + [0.0] * (dim - 1)
        self._pending: dict[str, int] = {}  # namespace -> LSN of our last acknowledged write
        self._lock = threading.Lock()
        try:
            self._index = Index(host=index_host, api_key=api_key, timeout=timeout)
        except PineconeError as exc:
            raise ConfigError(f"pinecone index host {index_host!r}: {exc}") from exc
        try:
            stats = self._call("describe_index_stats", self._index.describe_index_stats)
            if stats.dimension is not None and stats.dimension != dim:
                raise ConfigError(f"pinecone index has dimension {stats.dimension}, expected {dim}")
            if stats.metric is not None and stats.metric != "cosine":
                raise ConfigError(f"pinecone index uses metric {stats.metric!r}, expected 'cosine'")
        except BaseException:
            self._index.close()
            raise

    # -- helpers --------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except BackendError:
            raise
        except (PineconeError, httpx.HTTPError, OSError) as exc:
            raise _translate(what, exc) from exc

    def _namespace(self, tenant: str) -> str:
        return f"{self._prefix}{tenant}"

    def _tenant_namespaces(self, where: VectorFilter, op: str) -> list[tuple[str, str]]:
        """(tenant, namespace) pairs that ``where`` can match."""
        tenant = where.equals.get("tenant")
        if tenant is not None:
            return [(str(tenant), self._namespace(str(tenant)))]
        if not self._allow_cross_tenant:
            raise ValueError(f"pinecone {op} needs a tenant in the filter (one namespace per tenant)")
        return [(ns[len(self._prefix) :], ns) for ns in self._all_namespaces()]

    def _all_namespaces(self) -> list[str]:
        def listing() -> list[str]:
            names: list[str] = []
            for page in self._index.list_namespaces(prefix=self._prefix or None, limit=100):
                names.extend(ns.name for ns in page.namespaces if ns.name.startswith(self._prefix))
            return names

        return self._call("list_namespaces", listing)

    @staticmethod
    def _filter(tenant: str, where: VectorFilter) -> dict[str, Any]:
        conditions: dict[str, Any] = {"tenant": {"$eq": tenant}}
        for key, value in where.equals.items():
            conditions[key] = {"$eq": value}
        for key, values in where.any_of.items():
            conditions[key] = {"$in": list(values)}
        return conditions

    def _vector(self, vector: Any) -> list[float]:
        values = [float(x) for x in np.asarray(vector, dtype=np.float32).reshape(-1)]
        if len(values) != self._dim:
            raise ValueError(f"vector has {len(values)} dimensions, index has {self._dim}")
        return values

    def _committed(self, namespace: str, info: ResponseInfo | None) -> None:
        lsn = None if info is None else info.lsn_committed
        if lsn is not None:
            with self._lock:
                self._pending[namespace] = max(lsn, self._pending.get(namespace, lsn))

    def _await_writes(self, namespace: str) -> None:
        """Block until the index has applied our last write to ``namespace`` (bounded)."""
        with self._lock:
            target = self._pending.get(namespace)
        if target is None:
            return
        deadline = time.monotonic() + self._consistency_timeout
        while True:
            probe = self._call(
                "query", partial(self._index.query, top_k=1, vector=self._probe, namespace=namespace)
            )
            info = probe.response_info
            reconciled = None if info is None else info.lsn_reconciled
            # Unknown position: the server cannot tell us, so waiting would only burn the deadline.
            if reconciled is None or reconciled >= target:
                break
            if time.monotonic() >= deadline:
                # Stop waiting (and stop making every read wait): the read may miss our writes.
                log.warning(
                    "pinecone.read_your_writes_timeout", namespace=namespace, lsn=target, at=reconciled
                )
                break
            time.sleep(_POLL_INTERVAL)
        with self._lock:
            if self._pending.get(namespace) == target:
                del self._pending[namespace]

    def _fetch_pages(
        self, namespace: str, flt: dict[str, Any], limit: int | None
    ) -> Iterator[tuple[str, list[float], dict[str, Any]]]:
        token: str | None = None
        seen = 0
        while limit is None or seen < limit:
            page_size = _FETCH_PAGE if limit is None else min(_FETCH_PAGE, limit - seen)
            page = self._call(
                "fetch_by_metadata",
                partial(
                    self._index.fetch_by_metadata,
                    filter=flt,
                    namespace=namespace,
                    limit=page_size,
                    pagination_token=token,
                ),
            )
            for vid, vec in page.vectors.items():
                yield vid, list(vec.values), _payload(vec.metadata)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            token = page.pagination.next if page.pagination is not None else None
            if not token:
                return

    # -- VectorIndex ----------------------------------------------------------

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for p in points:
            tenant = p.payload.get("tenant")
            if tenant is None:
                raise ValueError(f"point {p.id} has no tenant in its payload")
            record = {"id": p.id, "values": self._vector(p.vector), "metadata": dict(p.payload)}
            by_namespace.setdefault(self._namespace(str(tenant)), []).append(record)
        for namespace, records in by_namespace.items():
            for start in range(0, len(records), _UPSERT_BATCH):
                chunk = records[start : start + _UPSERT_BATCH]
                response = self._call(
                    "upsert",
                    partial(self._index.upsert, vectors=chunk, namespace=namespace),
                )
                self._committed(namespace, response.response_info)

    def search(self, vector: Vector, where: VectorFilter, limit: int) -> list[VectorHit]:
        if limit <= 0:
            return []
        query = self._vector(vector)
        top_k = min(limit, _MAX_TOP_K)
        hits: list[VectorHit] = []
        for tenant, namespace in self._tenant_namespaces(where, "search"):
            self._await_writes(namespace)
            found = self._call(
                "query",
                partial(
                    self._index.query,
                    top_k=top_k,
                    vector=query,
                    namespace=namespace,
                    filter=self._filter(tenant, where),
                    include_metadata=True,
                ),
            )
            hits.extend(
                VectorHit(id=m.id, score=float(m.score), payload=_payload(m.metadata)) for m in found.matches
            )
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        hits: list[VectorHit] = []
        for tenant, namespace in self._tenant_namespaces(where, "find"):
            if len(hits) >= limit:
                break
            self._await_writes(namespace)
            for vid, _, payload in self._fetch_pages(
                namespace, self._filter(tenant, where), limit - len(hits)
            ):
                hits.append(VectorHit(id=vid, score=0.0, payload=payload))
        return hits

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        points: list[VectorPoint] = []
        for tenant, namespace in self._tenant_namespaces(where, "vectors"):
            self._await_writes(namespace)
            for vid, values, payload in self._fetch_pages(namespace, self._filter(tenant, where), None):
                points.append(
                    VectorPoint(id=vid, vector=np.asarray(values, dtype=np.float32), payload=payload)
                )
        return points

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        if where.empty:
            raise ValueError("set_payload needs a filter")
        if "tenant" in payload:
            raise ValueError("set_payload cannot move points between tenants (namespaces)")
        for tenant, namespace in self._tenant_namespaces(where, "set_payload"):
            response = self._call(
                "update",
                partial(
                    self._index.update,
                    filter=self._filter(tenant, where),
                    set_metadata=dict(payload),
                    namespace=namespace,
                ),
            )
            self._committed(namespace, response.response_info)

    def delete(self, where: VectorFilter) -> None:
        if where.empty:
            raise ValueError("delete needs a filter")
        for tenant, namespace in self._tenant_namespaces(where, "delete"):
            self._call(
                "delete", partial(self._index.delete, filter=self._filter(tenant, where), namespace=namespace)
            )

    def exists(self, point_id: str) -> bool:
        for namespace in self._all_namespaces():
            self._await_writes(namespace)
            found = self._call(
                "fetch",
                partial(self._index.fetch, ids=[point_id], namespace=namespace),
            )
            if point_id in found.vectors:
                return True
        return False

    def count(self, where: VectorFilter) -> int:
        total = 0
        for tenant, namespace in self._tenant_namespaces(where, "count"):
            self._await_writes(namespace)
            total += sum(1 for _ in self._fetch_pages(namespace, self._filter(tenant, where), None))
        return total

    def close(self) -> None:
        # Every write was acknowledged before it returned; this only releases the HTTP client.
        self._index.close()
