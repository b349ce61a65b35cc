"""The runbook library of every tenant: stored as documents, searched in memory.

Each runbook is a JSON document (source of truth) plus one vector per heading chunk
in the vector index (so start-up does not re-embed the library). At start-up every
tenant's runbooks are preloaded into a ``RunbookIndex``; chunks whose vectors are
missing or stale (content hash differs) are re-embedded then.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import structlog

from incident_responder.errors import NotFound
from incident_responder.ids import point_id
from incident_responder.models import Runbook, RunbookChunk, RunbookHit
from incident_responder.pipeline.alert_text import query_text
from incident_responder.pipeline.chunking import CHUNKER_VERSION, chunk_runbook, embedding_text
from incident_responder.pipeline.runbook_index import RunbookIndex
from incident_responder.ports import Embedder, Vector, VectorFilter, VectorIndex, VectorPoint
from incident_responder.repositories import RunbookRepository

log = structlog.get_logger(__name__)


def content_hash(runbook: Runbook) -> str:
    """Changes whenever the stored chunk vectors would: content, title or chunker."""
    return hashlib.sha256(f"{CHUNKER_VERSION}\0{runbook.title}\0{runbook.content}".encode()).hexdigest()[:32]


class RunbookCatalog:
    """Every tenant's runbooks: stored, their chunks' vectors indexed, and searched in memory (one
    :class:`RunbookIndex` per tenant)."""

    def __init__(
        self,
        *,
        repo: RunbookRepository,
        index: VectorIndex,
        embedder: Embedder,
        index_factory: Callable[[], RunbookIndex],
        top_k: int,
    ) -> None:
        self._repo = repo
        self._index = index
        self._embedder = embedder
        self._factory = index_factory
        self._top_k = top_k
        self._libraries: dict[str, RunbookIndex] = {}
        self._lock = threading.Lock()

    def _library(self, tenant: str) -> RunbookIndex:
        with self._lock:
            library = self._libraries.get(tenant)
            if library is None:
                library = self._libraries[tenant] = self._factory()
            return library

    def preload(self, tenants: Iterable[str]) -> int:
        """Load every runbook of ``tenants`` into memory; returns how many."""
        loaded = 0
        for tenant in tenants:
            runbooks = self._repo.all(tenant)
            if not runbooks:
                continue
            stored: dict[str, list[VectorPoint]] = defaultdict(list)
            for p in self._index.vectors(VectorFilter({"tenant": tenant, "kind": "runbook"})):
                stored[str(p.payload["runbook_id"])].append(p)
            for runbook in runbooks:
                chunks = chunk_runbook(runbook)
                points = sorted(stored.get(runbook.id, []), key=lambda p: int(p.payload["chunk_no"]))
                fresh = len(points) == len(chunks) and all(
                    p.payload.get("hash") == content_hash(runbook) for p in points
                )
                if fresh:
                    vectors = (
                        np.stack([p.vector for p in points])
                        if points
                        else np.zeros((0, self._embedder.dim), np.float32)
                    )
                    self._library(tenant).put(runbook, chunks, vectors)
                else:
                    self._index_runbook(tenant, runbook, chunks)
                loaded += 1
            log.info("runbooks.preloaded", tenant=tenant, runbooks=len(runbooks))
        return loaded

    def _index_runbook(self, tenant: str, runbook: Runbook, chunks: Sequence[RunbookChunk]) -> None:
        vectors = self._embedder.embed([embedding_text(c, runbook.title) for c in chunks])
        digest = content_hash(runbook)
        self._index.delete(VectorFilter({"tenant": tenant, "kind": "runbook", "runbook_id": runbook.id}))
        self._index.upsert(
            [
                VectorPoint(
                    id=point_id(tenant, "runbook", runbook.id, str(c.chunk_no)),
                    vector=vectors[i],
                    payload={
                        "tenant": tenant,
                        "kind": "runbook",
                        "runbook_id": runbook.id,
                        "chunk_no": c.chunk_no,
                        "hash": digest,
                    },
                )
                for i, c in enumerate(chunks)
            ]
        )
        self._library(tenant).put(runbook, chunks, vectors)

    def put(self, tenant: str, runbook: Runbook) -> bool:
        """Store and index a runbook; returns True if it was new."""
        previous = self._repo.get(tenant, runbook.id)
        if previous is not None:
            runbook.created_at = previous.created_at
        self._repo.put(tenant, runbook)
        self._index_runbook(tenant, runbook, chunk_runbook(runbook))
        return previous is None

    def get(self, tenant: str, runbook_id: str) -> Runbook:
        runbook = self._repo.get(tenant, runbook_id)
        if runbook is None:
            raise NotFound(f"runbook {runbook_id} not found")
        return runbook

    def all(self, tenant: str) -> list[Runbook]:
        return self._repo.all(tenant)

    def delete(self, tenant: str, runbook_id: str) -> None:
        self.get(tenant, runbook_id)
        self._repo.delete(tenant, runbook_id)
        self._index.delete(VectorFilter({"tenant": tenant, "kind": "runbook", "runbook_id": runbook_id}))
        self._library(tenant).remove(runbook_id)

    def search(
        self,
        tenant: str,
        log_text: str,
        *,
        plain: str | None = None,
        embedded: Mapping[str, Vector] | None = None,
    ) -> list[RunbookHit]:
        """The best runbooks for ``log_text``, best first. ``plain`` and ``embedded``: see
        :func:`query_text`; a query text found in ``embedded`` is not embedded again."""
        library = self._library(tenant)
        if len(library) == 0:
            return []
        text = query_text(log_text, plain)
        known = embedded.get(text) if embedded is not None else None
        query_vector = known if known is not None else self._embedder.embed([text])[0]
        return [hit for hit, _ in library.search(log_text, query_vector, top_k=self._top_k)]

    def has_runbooks(self, tenant: str) -> bool:
        return len(self._library(tenant)) > 0

    def grounding(self, tenant: str, hits: Sequence[RunbookHit], runbooks: int = 3) -> list[RunbookChunk]:
        """Every chunk of the best ``runbooks`` hits, best runbook first: the recommender
        needs the Diagnosis/Mitigation sections, which are rarely the chunks most like the log."""
        library = self._library(tenant)
        return [chunk for hit in hits[:runbooks] for chunk in library.chunks(hit.id)]
