"""Recommendations reused across near-identical new incidents that share a runbook context.

An LLM call per new ticket is the slowest and the only paid step of opening one. When a
new incident retrieves exactly the runbook context an earlier one did (the same chunks,
with the same text and runbook titles) and its log embeds close to that incident's
(cosine >= ``similarity``, 0.9 by default, as in the design document), the earlier
recommendation is reused: it cites only runbooks of this context, so it stays grounded.

A context is remembered per tenant (tenants may have runbooks of their own), with a few
incidents' vectors each; contexts are evicted least recently used. Editing a runbook
changes its chunks' text and so its contexts' keys: stale advice is never served.
Only answers of the configured recommender itself are kept, never a fallback's (an LLM
outage must not leave offline advice cached after the LLM is back).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from incident_responder.lru import LruCache
from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.ports import Vector


def context_key(tenant: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]) -> str:
    """One digest of everything a recommender is given besides the log."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (tenant, *(f"{k}\0{v}" for k, v in sorted(titles.items()))):
        digest.update(part.encode("utf-8") + b"\1")
    for chunk in chunks:
        digest.update(f"{chunk.runbook_id}\0{chunk.chunk_no}\0{chunk.heading}\0{chunk.text}".encode() + b"\2")
    return digest.hexdigest()


@dataclass(frozen=True)
class _Context:
    """One context's remembered incidents, replaced whole on every put (readers need no lock)."""

    vectors: Vector  # one row per incident, oldest first
    answers: tuple[Recommendation, ...]


class RecommendationCache:
    """Recommendations of recent new incidents by tenant and runbook context (at most
    ``max_contexts``, least recently used out first), with up to ``per_context`` incidents' vectors each."""

    def __init__(
        self,
        max_contexts: int,
        *,
        similarity: float = 0.9,
        per_context: int = 8,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        if max_contexts < 1 or per_context < 1:
            raise ValueError("max_contexts and per_context must be at least 1")
        if not 0.0 < similarity <= 1.0:
            raise ValueError("similarity must be in (0, 1]")
        self._similarity = similarity
        self._per_context = per_context
        self._on_lookup = on_lookup
        self._contexts: LruCache[str, _Context] = LruCache(max_contexts)

    def get(
        self, tenant: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str], vector: Vector
    ) -> Recommendation | None:
        """A copy of the recommendation of the closest remembered incident of this context, if
        it is similar enough; None otherwise (and always when there are no chunks)."""
        found: Recommendation | None = None
        context = self._contexts.get(context_key(tenant, chunks, titles)) if chunks else None
        if context is not None:
            scores = context.vectors @ np.asarray(vector, dtype=np.float32)
            best = int(np.argmax(scores))
            if float(scores[best]) >= self._similarity:
                found = context.answers[best]
        if self._on_lookup is not None:
            self._on_lookup(found is not None)
        return None if found is None else found.model_copy(deep=True)

    def put(
        self,
        tenant: str,
        chunks: Sequence[RunbookChunk],
        titles: Mapping[str, str],
        vector: Vector,
        answer: Recommendation,
    ) -> None:
        if not chunks:
            return
        key = context_key(tenant, chunks, titles)
        row = np.asarray(vector, dtype=np.float32)[None, :]
        # Replaced whole, not changed in place. Racing with another put or a get of the same
        # context can only lose an incident or miss once: a cache's misses, never a wrong answer.
        before = self._contexts.pop(key)
        if before is None:
            before = _Context(np.empty((0, row.shape[1]), dtype=np.float32), ())
        keep = self._per_context  # the oldest incidents go first
        self._contexts.put(
            key,
            _Context(
                np.concatenate([before.vectors, row])[-keep:],
                (*before.answers, answer.model_copy(deep=True))[-keep:],
            ),
        )

    def __len__(self) -> int:
        return len(self._contexts)
