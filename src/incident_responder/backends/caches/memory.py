"""Embeddings remembered in this process, least recently used evicted first."""

from __future__ import annotations

from incident_responder.lru import LruCache
from incident_responder.ports import Vector


class MemoryVectorCache(LruCache[str, Vector]):
    """The in-process :class:`~incident_responder.ports.VectorCache` (an LRU of ``max_entries``)."""

    @property
    def blocking(self) -> bool:
        return False
