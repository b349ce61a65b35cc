"""Caches for the hot path (alert storms are mostly repeats).

An LRU map in process, and the embeddings of earlier texts per tenant (in process, or in
Redis shared by replicas): an embedding is a pure function of its text, so a remembered one
is always right; it is keyed by tenant so that no tenant's lookup, nor its speed, tells
whether another tenant sent a text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from incident_responder.ports import Vector

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A thread-safe LRU map with hit/miss callbacks for metrics."""

    def __init__(self, max_entries: int, on_lookup: Callable[[bool], None] | None = None) -> None:
        self._max = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._on_lookup = on_lookup

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
        if self._on_lookup is not None:
            self._on_lookup(value is not None)
        return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        self.pop(key)

    def pop(self, key: K) -> V | None:
        """Remove and return ``key``'s value (no lookup is counted: the caller judges it)."""
        with self._lock:
            return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class VectorCache(Protocol):
    """Where embeddings are remembered: in process (LruCache) or shared (Redis)."""

    def get(self, key: str) -> Vector | None: ...

    def put(self, key: str, value: Vector) -> None: ...


class TenantVectors:
    """The embeddings of texts a tenant sent before, keyed by tenant and text.

    ``blocking``: the store waits on the network (Redis): call it off the event loop."""

    def __init__(self, store: VectorCache, *, blocking: bool = False) -> None:
        self._store = store
        self.blocking = blocking

    @staticmethod
    def _key(tenant: str, text: str) -> str:
        return f"{tenant}\0{text}"  # tenant names never hold a NUL

    def known(self, tenant: str, texts: Sequence[str]) -> dict[str, Vector]:
        """The remembered vectors of ``texts`` (each distinct text looked up once)."""
        found = {}
        for text in dict.fromkeys(texts):
            vector = self._store.get(self._key(tenant, text))
            if vector is not None:
                found[text] = vector
        return found

    def remember(self, tenant: str, vectors: Mapping[str, Vector]) -> None:
        for text, vector in vectors.items():
            self._store.put(self._key(tenant, text), vector)
