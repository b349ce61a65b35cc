"""Process-local caches for the hot path (alert storms are mostly repeats).

Both are safe to keep per replica without coordination: an embedding is a pure
function of its text, and a fingerprint, once indexed under a ticket, stays with
that ticket (tickets are never merged or deleted).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from incident_responder.ports import Embedder, Vector

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


class CachedEmbedder:
    """An Embedder that embeds each distinct text once."""

    def __init__(self, inner: Embedder, cache: VectorCache) -> None:
        self._inner = inner
        self._cache = cache

    @property
    def dim(self) -> int:
        return self._inner.dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        known = {t: v for t in dict.fromkeys(texts) if (v := self._cache.get(t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            fresh = self._inner.embed(missing)
            for i, text in enumerate(missing):
                known[text] = fresh[i]
                self._cache.put(text, fresh[i])
        return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)
