"""Dedup: is this report the same incident as an earlier one of its tenant+service?

Two tiers, cheapest first: the exact fingerprint of the normalized template
(:class:`FingerprintLookup`: a payload lookup in the index, no ranking, remembered), then
the nearest earlier reports by embedding, judged by template likeness and cosine similarity
(``matching.choose_match``). A composition without a ``FingerprintLookup`` (the benchmark's
naive server) judges every report by the second tier alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from incident_responder.lru import LruCache
from incident_responder.pipeline.matching import Candidate, MatchDecision, MatchThresholds, choose_match
from incident_responder.pipeline.normalize import NormalizedLog
from incident_responder.ports import Vector, VectorFilter, VectorIndex

# A fingerprint is indexed with one point per ticket holding it (a few at most, after a
# race between processes): a batched lookup reads this many points per fingerprint before
# it checks the ones it did not see one by one.
_FIND_SLACK = 4


@dataclass(frozen=True)
class Recent:
    """A report that opened or joined a ticket not indexed yet (decided earlier in the same
    group): dedup weighs it exactly like an indexed one."""

    ticket_id: str
    fingerprint: str
    template: str
    vector: Vector


class FingerprintLookup:
    """Which ticket already holds a report with an exact fingerprint, per tenant+service.

    The index answers (blocking); positive answers are remembered in ``known``, since a
    fingerprint, once indexed under a ticket, stays with that ticket."""

    def __init__(self, index: VectorIndex, known: LruCache[tuple[str, str, str], str] | None = None) -> None:
        self._index = index
        self._known = known

    def cached(self, tenant: str, service: str, fingerprint: str) -> str | None:
        """The remembered ticket of this fingerprint (never blocks): None if not remembered."""
        return None if self._known is None else self._known.get((tenant, service, fingerprint))

    def forget(self, tenant: str, service: str, fingerprint: str) -> None:
        """Drop a remembered fingerprint whose ticket turned out to be gone."""
        if self._known is not None:
            self._known.discard((tenant, service, fingerprint))

    def find(self, tenant: str, service: str, fingerprint: str) -> str | None:
        """The ticket holding this fingerprint, asking the index (blocking), remembering a hit."""
        where = VectorFilter(
            {"tenant": tenant, "kind": "incident", "service": service, "fingerprint": fingerprint}
        )
        hits = self._index.find(where, limit=1)
        if not hits:
            return None
        ticket_id = str(hits[0].payload["ticket_id"])
        if self._known is not None:
            self._known.put((tenant, service, fingerprint), ticket_id)
        return ticket_id

    def find_many(self, tenant: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """:meth:`find` for several (service, fingerprint) keys of a tenant, one index query per
        service (blocking): key -> ticket for those indexed."""
        by_service: dict[str, set[str]] = {}
        for service, fingerprint in keys:
            by_service.setdefault(service, set()).add(fingerprint)
        return {
            (service, fingerprint): ticket_id
            for service, fingerprints in by_service.items()
            for fingerprint, ticket_id in self._find_in_service(tenant, service, fingerprints).items()
        }

    def _find_in_service(self, tenant: str, service: str, fingerprints: Collection[str]) -> dict[str, str]:
        """One query: fingerprint -> ticket among ``fingerprints`` of one tenant+service."""
        if not fingerprints:
            return {}
        wanted = sorted(set(fingerprints))
        limit = len(wanted) * _FIND_SLACK
        where = VectorFilter(
            {"tenant": tenant, "kind": "incident", "service": service}, any_of={"fingerprint": wanted}
        )
        hits = self._index.find(where, limit=limit)
        found: dict[str, str] = {}
        for hit in hits:
            found.setdefault(str(hit.payload["fingerprint"]), str(hit.payload["ticket_id"]))
        if len(hits) >= limit:  # cut off: a fingerprint not seen may be past the limit
            for fingerprint in wanted:
                if fingerprint not in found:
                    ticket_id = self.find(tenant, service, fingerprint)
                    if ticket_id is not None:
                        found[fingerprint] = ticket_id
        if self._known is not None:
            for fingerprint, ticket_id in found.items():
                self._known.put((tenant, service, fingerprint), ticket_id)
        return found


class Deduplicator:
    """Decides which ticket a report joins, if any: an exact fingerprint match first (with a
    :class:`FingerprintLookup`), else the nearest earlier reports of its tenant+service."""

    def __init__(
        self,
        *,
        index: VectorIndex,
        thresholds: MatchThresholds,
        search_limit: int,
        fingerprints: FingerprintLookup | None = None,
        normalizer_version: str = "",
    ) -> None:
        self._index = index
        self._thresholds = thresholds
        self._search_limit = search_limit
        self._fingerprints = fingerprints
        self._version = normalizer_version

    def decide(
        self,
        tenant: str,
        service: str,
        norm: NormalizedLog,
        vector: Vector | None,
        recent: Sequence[Recent] = (),
        *,
        indexed: Mapping[tuple[str, str], str] | None = None,
    ) -> MatchDecision:
        """Which ticket this report joins, among the indexed reports of its tenant+service and
        ``recent`` (reports of that tenant+service decided but not written yet). ``indexed``:
        what :meth:`FingerprintLookup.find_many` answered for this report's fingerprint among
        others, just now (else the index is asked for this one)."""
        ticket_id = None
        lookup = self._fingerprints
        if lookup is not None:
            if indexed is None:
                ticket_id = lookup.cached(tenant, service, norm.fingerprint) or lookup.find(
                    tenant, service, norm.fingerprint
                )
            else:
                ticket_id = lookup.cached(tenant, service, norm.fingerprint) or indexed.get(
                    (service, norm.fingerprint)
                )
            if ticket_id is None:
                ticket_id = next((r.ticket_id for r in recent if r.fingerprint == norm.fingerprint), None)
        if ticket_id is not None:
            return MatchDecision(
                ticket_id=ticket_id,
                method="fingerprint",
                similarity=1.0,
                template=norm.template,
                related_ticket_ids=(),
                threshold=1.0,
                report_template=norm.template,
            )
        if vector is None:
            raise ValueError("a report without a fingerprint match needs its vector")
        where = VectorFilter({"tenant": tenant, "kind": "incident", "service": service})
        hits = self._index.search(vector, where, limit=self._search_limit)
        candidates = [
            Candidate(
                ticket_id=str(h.payload["ticket_id"]),
                template=str(h.payload.get("template", "")),
                similarity=h.score,
                # a template made by other rules is not compared with this one's
                comparable=h.payload.get("normalizer_version", self._version) == self._version,
                via=_text_or_none(h.payload.get("via")),
                cannot_link=_texts(h.payload.get("cannot_link")),
            )
            for h in hits
        ]
        if recent:
            scores = np.stack([r.vector for r in recent]) @ np.asarray(vector, dtype=np.float32)
            candidates.extend(
                Candidate(ticket_id=r.ticket_id, template=r.template, similarity=float(score))
                for r, score in zip(recent, scores, strict=True)
            )
            candidates.sort(key=lambda c: -c.similarity)  # best first, as the index answers
            candidates = candidates[: self._search_limit]
        return choose_match(norm.template, candidates, self._thresholds)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _texts(value: object) -> tuple[str, ...]:
    """A payload's list of texts (a backend may hand it back as a list or a tuple)."""
    if not isinstance(value, list | tuple):
        return ()
    return tuple(v for v in value if isinstance(v, str))
