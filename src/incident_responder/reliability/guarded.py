"""Backends wrapped in retries and a circuit breaker, keeping their interfaces.

``GuardedObjectStore(LocalObjectStore(...), guard)`` is still an ``ObjectStore``;
the pipeline never knows whether it talks to a guarded backend or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from incident_responder.errors import IncidentResponderError, VersionConflict
from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.observability.metrics import Metrics
from incident_responder.observability.tracing import set_attributes
from incident_responder.ports import (
    ObjectStore,
    ObjectWrite,
    Recommender,
    StoredObject,
    Vector,
    VectorFilter,
    VectorHit,
    VectorIndex,
    VectorPoint,
)
from incident_responder.reliability.breaker import STATE_VALUES, CircuitBreaker, State
from incident_responder.reliability.retry import RetryPolicy

T = TypeVar("T")


class Guard:
    """Retries (inside) and a circuit breaker (outside) for one backend, with metrics."""

    def __init__(
        self, backend: str, *, retry: RetryPolicy, breaker: CircuitBreaker, metrics: Metrics
    ) -> None:
        self.backend = backend
        self.breaker = breaker
        self._retry = retry
        self._metrics = metrics
        metrics.breaker_state.labels(backend).set(STATE_VALUES["closed"])

    @classmethod
    def create(
        cls, backend: str, *, retry: RetryPolicy, fail_max: int, reset_timeout: float, metrics: Metrics
    ) -> Guard:
        def changed(name: str, state: State) -> None:
            metrics.breaker_state.labels(name).set(STATE_VALUES[state])

        breaker = CircuitBreaker(backend, fail_max=fail_max, reset_timeout=reset_timeout, on_change=changed)
        return cls(backend, retry=retry, breaker=breaker, metrics=metrics)

    def __call__(self, operation: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        outcome = "ok"
        set_attributes(backend=self.backend)  # on the current stage span, if tracing is on
        try:
            return self.breaker.call(lambda: self._retry.run(fn, on_retry=self._count_retry))
        except IncidentResponderError as exc:
            outcome = exc.code
            raise
        finally:
            self._metrics.backend_calls.labels(self.backend, operation, outcome).inc()
            self._metrics.backend_seconds.labels(self.backend, operation).observe(
                time.perf_counter() - started
            )

    def _count_retry(self) -> None:
        self._metrics.backend_retries.labels(self.backend).inc()


class GuardedObjectStore:
    """An ``ObjectStore`` whose every call goes through a :class:`Guard`."""

    def __init__(self, inner: ObjectStore, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    def get(self, key: str) -> StoredObject | None:
        return self._guard("get", lambda: self._inner.get(key))

    def put(self, key: str, data: bytes, *, if_version: str | None = None, if_absent: bool = False) -> str:
        return self._guard(
            "put", lambda: self._inner.put(key, data, if_version=if_version, if_absent=if_absent)
        )

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        # A retry after a partial failure is safe: what landed then reports a VersionConflict
        # (conditional writes) or is rewritten with the same bytes (unconditional ones).
        return self._guard("put_many", lambda: self._inner.put_many(writes))

    def delete(self, key: str) -> None:
        self._guard("delete", lambda: self._inner.delete(key))

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        return self._guard(
            "list", lambda: self._inner.list_keys(prefix, start_after=start_after, limit=limit)
        )

    def list_prefixes(self, prefix: str) -> list[str]:
        return self._guard("list", lambda: self._inner.list_prefixes(prefix))

    def ping(self) -> None:
        self._guard("ping", self._inner.ping)


class GuardedVectorIndex:
    """A ``VectorIndex`` whose every call but ``close`` goes through a :class:`Guard`."""

    def __init__(self, inner: VectorIndex, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        self._guard("upsert", lambda: self._inner.upsert(points))

    def search(self, vector: Vector, where: VectorFilter, limit: int) -> list[VectorHit]:
        return self._guard("search", lambda: self._inner.search(vector, where, limit))

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        return self._guard("find", lambda: self._inner.find(where, limit))

    def vectors(self, where: VectorFilter) -> list[VectorPoint]:
        return self._guard("scroll", lambda: self._inner.vectors(where))

    def set_payload(self, where: VectorFilter, payload: Mapping[str, Any]) -> None:
        self._guard("set_payload", lambda: self._inner.set_payload(where, payload))

    def delete(self, where: VectorFilter) -> None:
        self._guard("delete", lambda: self._inner.delete(where))

    def count(self, where: VectorFilter) -> int:
        return self._guard("count", lambda: self._inner.count(where))

    def exists(self, point_id: str) -> bool:
        return self._guard("exists", lambda: self._inner.exists(point_id))

    def close(self) -> None:
        self._inner.close()


class GuardedRecommender:
    """A ``Recommender`` whose calls go through a :class:`Guard`."""

    def __init__(self, inner: Recommender, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def remote(self) -> bool:
        return self._inner.remote

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        return self._guard("recommend", lambda: self._inner.recommend(log, chunks, titles))
