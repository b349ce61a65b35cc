"""The embeddings of texts a tenant sent before, remembered per tenant.

An embedding is a pure function of its text, so a remembered one is always right. It is
keyed by tenant so that no tenant's lookup, nor its speed, tells whether another tenant
sent a text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from incident_responder.ports import Vector, VectorCache


class TenantVectors:
    """The embeddings of texts a tenant sent before, keyed by tenant and text."""

    def __init__(self, store: VectorCache) -> None:
        self._store = store

    @property
    def blocking(self) -> bool:
        """The store waits on the network (Redis): call it off the event loop."""
        return self._store.blocking

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
