"""Keeping stored tickets and their vectors whole: repairing interrupted openings, writing
missing vectors, and bringing tickets made by older normalizer rules to the current ones."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import structlog

from incident_responder.errors import VersionConflict
from incident_responder.models import Signature, Ticket
from incident_responder.pipeline.normalize import NormalizedLog
from incident_responder.pipeline.ticket_points import incident_point, incident_point_id, signature_point
from incident_responder.pipeline.ticketing import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CAS_ATTEMPTS,
    Occurrence,
    full_jitter,
    write_turn,
)
from incident_responder.ports import Embedder, VectorFilter, VectorIndex, WriteLock
from incident_responder.repositories import PendingMarkers, TicketRepository

log = structlog.get_logger(__name__)


class TicketUpkeep:
    """Repairs what a crash or an outage left half-written, and migrates tickets between
    normalizer versions (blocking; run at start-up, by a dead-letter replay and by reindex)."""

    def __init__(
        self,
        *,
        tickets: TicketRepository,
        pending: PendingMarkers,
        index: VectorIndex,
        normalizer_version: str,
        write_lock: WriteLock | None = None,
    ) -> None:
        self._tickets = tickets
        self._pending = pending
        self._index = index
        self._normalizer_version = normalizer_version
        self._write_lock = write_lock

    def _turn(self, tenant: str) -> AbstractContextManager[None]:
        return write_turn(self._write_lock, tenant)

    def reconcile(self, tenant: str, embedder: Embedder) -> int:
        """Finish or undo every interrupted ticket creation of ``tenant``; returns how many were repaired."""
        repaired = 0
        for marker, ticket_ids in self._pending.all(tenant):
            for ticket_id in ticket_ids:
                where = VectorFilter({"tenant": tenant, "kind": "incident", "ticket_id": ticket_id})
                if not self._tickets.exists(tenant, ticket_id):
                    self._index.delete(where)
                    log.warning("reconcile.vector_without_ticket", tenant=tenant, ticket_id=ticket_id)
                else:
                    ticket, _ = self._tickets.get(tenant, ticket_id)
                    self.reindex_ticket(ticket, embedder)
                    log.warning("reconcile.ticket_without_vector", tenant=tenant, ticket_id=ticket_id)
                repaired += 1
            self._pending.clear(marker)  # only once every ticket it marks is whole
        return repaired

    def reindex_ticket(self, ticket: Ticket, embedder: Embedder) -> int:
        """Write every missing vector of ``ticket`` from its stored signatures; returns how many."""
        if ticket.status == "merged":  # its forms are the survivor's now
            return 0
        missing = [
            (fp, sig)
            for fp, sig in ticket.signatures.items()
            if not self._index.exists(
                incident_point_id(
                    ticket.tenant,
                    ticket.ticket_id,
                    fp,
                    sig.service if sig.service != ticket.service else None,
                )
            )
        ]
        if not missing:
            return 0
        vectors = embedder.embed([sig.embed_text for _, sig in missing])
        points = [signature_point(ticket, fp, sig, vectors[i]) for i, (fp, sig) in enumerate(missing)]
        self._index.upsert(points)
        return len(points)

    def renormalize(self, tenant: str, embedder: Embedder, normalize: Callable[[str], NormalizedLog]) -> int:
        """Bring every ticket of ``tenant`` made by older normalizer rules to the current ones:
        the reports it keeps are normalized again, and each new form gets its signature and
        vector (the old ones stay: their templates are only compared with their own version's).
        Done once per rules version (a marker per tenant); returns how many tickets changed."""
        if self._tickets.normalizer_mark(tenant) == self._normalizer_version:
            return 0
        changed = 0
        for ticket in self._tickets.iter_all(tenant):
            if ticket.normalizer_version != self._normalizer_version and ticket.status != "merged":
                changed += self._renormalize_ticket(tenant, ticket.ticket_id, embedder, normalize)
        self._tickets.set_normalizer_mark(tenant, self._normalizer_version)
        return changed

    def _renormalize_ticket(
        self, tenant: str, ticket_id: str, embedder: Embedder, normalize: Callable[[str], NormalizedLog]
    ) -> int:
        current = self._normalizer_version
        for attempt in range(CAS_ATTEMPTS):
            with self._turn(tenant):
                ticket, version = self._tickets.get(tenant, ticket_id)
                if ticket.normalizer_version == current:
                    return 0
                fresh: dict[str, NormalizedLog] = {}
                for comment in ticket.comments:
                    if comment.kind in ("occurrence", "regression"):
                        norm = normalize(comment.body)
                        if norm.fingerprint not in ticket.signatures:
                            fresh.setdefault(norm.fingerprint, norm)
                for sig in ticket.signatures.values():  # say which rules made the old forms
                    sig.normalizer_version = sig.normalizer_version or ticket.normalizer_version
                for fingerprint, norm in fresh.items():
                    ticket.signatures[fingerprint] = Signature(
                        template=norm.template, embed_text=norm.embed_text, normalizer_version=current
                    )
                ticket.normalizer_version = current
                try:
                    self._tickets.update(ticket, version)
                except VersionConflict:  # another writer changed it: read it again, later
                    full_jitter(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                    continue
            # The ticket first: if the vectors are lost now, ``reindex_ticket`` writes them.
            if fresh:
                vectors = embedder.embed([n.embed_text for n in fresh.values()])
                self._index.upsert(
                    [
                        incident_point(
                            ticket, Occurrence("", "", fp, n.template, n.embed_text, vectors[i]), current
                        )
                        for i, (fp, n) in enumerate(fresh.items())
                    ]
                )
            log.info("ticket.renormalized", tenant=tenant, ticket_id=ticket_id, forms=len(fresh))
            return 1
        raise VersionConflict(f"ticket {ticket_id} kept changing; gave up after {CAS_ATTEMPTS} attempts")
