"""Tickets and their vectors, written in an order that a crash cannot make inconsistent.

Creating a ticket is three writes: an intent marker, the ticket, the vector; then the
marker is removed (for a group of new tickets: one marker naming them all, all tickets,
one upsert).
A crash leaves the marker behind, and ``reconcile`` (run at start-up) finishes or
undoes the pair: a ticket without its vector gets it (re-embedded from the stored
template), a vector without its ticket is deleted.
Updates (occurrence, regression, resolve) are compare-and-swap on the ticket and
retried on conflict, so concurrent writers never lose each other's changes. Between
rounds a loser waits a random time under a doubling cap ("full jitter"): replicas that
keep colliding on one ticket in a storm drift apart instead of colliding again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import structlog

from incident_responder.errors import LimitReached, NotFound, VersionConflict
from incident_responder.ids import point_id
from incident_responder.models import Comment, Recommendation, RunbookHit, Severity, Signature, Ticket
from incident_responder.ports import (
    ObjectWrite,
    Vector,
    VectorFilter,
    VectorIndex,
    VectorPoint,
    WriteLock,
)
from incident_responder.repositories import PendingMarkers, TicketRepository

log = structlog.get_logger(__name__)

# Occurrence comments kept per ticket (newest) by default; the count is exact regardless.
# Every write of a ticket serializes and writes all of them, so a storm's ticket must stay small.
MAX_OCCURRENCE_COMMENTS = 25
CAS_ATTEMPTS = 20
# Backoff after the n-th lost round (from 0): up to min(BACKOFF_CAP, BACKOFF_BASE * 2**n) s.
BACKOFF_BASE = 0.002
BACKOFF_CAP = 0.2


def full_jitter(cap: float) -> None:
    """Sleep a random time in [0, cap] ("full jitter")."""
    time.sleep(random.uniform(0.0, cap))


@dataclass(frozen=True)
class Occurrence:
    """One report as its ticket records it: its id, its log, and its normalized forms."""

    incident_id: str
    log: str
    fingerprint: str
    template: str
    embed_text: str
    vector: Vector | None  # None only when the fingerprint is already indexed


def incident_point_id(tenant: str, ticket_id: str, fingerprint: str) -> str:
    return point_id(tenant, "incident", ticket_id, fingerprint)


def write_turn(write_lock: WriteLock | None, tenant: str) -> AbstractContextManager[None]:
    """The tenant's turn to write tickets (none needed when this process writes alone)."""
    return nullcontext() if write_lock is None else write_lock.hold(tenant)


def incident_point(ticket: Ticket, report: Occurrence, version: str) -> VectorPoint:
    """The vector of one normalized form of ``ticket``, made by the rules of ``version``."""
    if report.vector is None:
        raise ValueError("a report with a new fingerprint needs its vector")
    return VectorPoint(
        id=incident_point_id(ticket.tenant, ticket.ticket_id, report.fingerprint),
        vector=report.vector,
        payload={
            "tenant": ticket.tenant,
            "kind": "incident",
            "service": ticket.service,
            "ticket_id": ticket.ticket_id,
            "fingerprint": report.fingerprint,
            "template": report.template,  # read by dedup; the embed text lives in the ticket
            "status": ticket.status,
            "normalizer_version": version,
        },
    )


class TicketDesk:
    """Writes tickets and their vectors: opens tickets in groups, attaches reports to them, adds
    comments and resolutions; every update is compare-and-swap, retried on conflict."""

    def __init__(
        self,
        *,
        tickets: TicketRepository,
        pending: PendingMarkers,
        index: VectorIndex,
        normalizer_version: str,
        write_lock: WriteLock | None = None,
        back_off: Callable[[float], None] = full_jitter,
        on_conflict: Callable[[int], None] | None = None,
        occurrence_comments: int = MAX_OCCURRENCE_COMMENTS,
        max_comments: int = 1_000,
    ) -> None:
        """``write_lock`` lets processes take turns updating a tenant's tickets (none: one
        process); ``back_off(cap)`` waits between compare-and-swap rounds (default: a random
        time up to ``cap``); ``on_conflict(n)`` hears of every round in which ``n`` ticket
        writes lost to another writer; ``occurrence_comments``: the newest occurrence
        comments a ticket keeps (a replay is recognized by its comment, so only within them;
        a dead-letter replay first looks for the report's incident record); ``max_comments``:
        the most comments people may add to one ticket."""
        if occurrence_comments < 1:
            raise ValueError("occurrence_comments must be at least 1")
        self._keep_comments = occurrence_comments
        self._max_comments = max_comments
        self._write_lock = write_lock
        self._tickets = tickets
        self._pending = pending
        self._index = index
        self._normalizer_version = normalizer_version
        self._back_off = back_off
        self._on_conflict = on_conflict

    def _turn(self, tenant: str) -> AbstractContextManager[None]:
        return write_turn(self._write_lock, tenant)

    def _lost(self, attempt: int, conflicts: int) -> None:
        """``conflicts`` writes of round ``attempt`` (from 0) lost: count them, then back off."""
        if self._on_conflict is not None:
            self._on_conflict(conflicts)
        if attempt + 1 < CAS_ATTEMPTS:
            self._back_off(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))

    def open_many(
        self,
        tenant: str,
        drafts: Sequence[Draft],
        *,
        records: Callable[[Ticket], Sequence[ObjectWrite]] | None = None,
        before_vector: Callable[[], None] | None = None,
    ) -> list[Ticket]:
        """Open several tickets as one group: one marker naming them, then the tickets (in
        one group commit, the marker first), then every vector in one upsert, then the marker
        cleared. Each draft's first report opens its ticket; the others joined it before it
        was written and count as occurrences. ``records(ticket)`` gives the writes that
        record its reports' outcome: they go in the same group commit, each after its ticket
        (the marker stays until the vectors are written, so whatever a crash or a failed
        upsert leaves is repaired by ``reconcile``)."""
        if not drafts:
            return []
        tickets: list[Ticket] = []
        points: list[VectorPoint] = []
        for draft in drafts:
            first = draft.reports[0]
            ticket = Ticket(
                ticket_id=draft.ticket_id,
                tenant=tenant,
                service=draft.service,
                title=draft.title,
                severity=draft.severity,
                labels=draft.labels,
                runbooks=list(draft.runbooks),
                recommendation=draft.recommendation,
                signatures={
                    first.fingerprint: Signature(
                        template=first.template,
                        embed_text=first.embed_text,
                        normalizer_version=self._normalizer_version,
                    )
                },
                normalizer_version=self._normalizer_version,
                comments=[
                    Comment(
                        kind="occurrence",
                        author="incident-responder",
                        body=first.log,
                        incident_id=first.incident_id,
                    )
                ],
            )
            points.append(incident_point(ticket, first, self._normalizer_version))
            points.extend(
                incident_point(ticket, r, self._normalizer_version)
                for r in _apply(
                    ticket, draft.reports[1:], self._keep_comments, self._normalizer_version
                ).new_templates
            )
            tickets.append(ticket)
        marker = self._pending.marker(tenant, [t.ticket_id for t in tickets])
        along: list[ObjectWrite] = []
        if records is not None:
            for ticket in tickets:
                key = self._tickets.key(tenant, ticket.ticket_id)
                along.extend(replace(w, after=key) for w in records(ticket))
        self._tickets.create_many(tickets, first=marker, also=along)
        if before_vector is not None:  # fault injection point for tests
            before_vector()
        self._index.upsert(points)
        self._pending.clear(marker.key)
        return tickets

    def attach(
        self,
        tenant: str,
        reports: Mapping[str, Sequence[Occurrence]],
        *,
        records: Callable[[str, Attached], Sequence[ObjectWrite]] | None = None,
    ) -> dict[str, Attached | NotFound]:
        """Record reports in existing tickets (ticket id -> its reports, in order) with one
        write per ticket, all tickets in one group commit, in the tenant's write turn;
        compare-and-swap, retried per ticket on conflict. The first report to reach a
        resolved ticket reopens it.

        ``records(ticket_id, attached)`` gives the writes that record those reports' outcome
        (their incident records): they go in the same group commit, each after its ticket,
        so they land only with it (asked again in the next round if it lost)."""
        out: dict[str, Attached | NotFound] = {}
        todo = {ticket_id: list(group) for ticket_id, group in reports.items() if group}
        points: list[VectorPoint] = []
        reopened: list[Ticket] = []
        with self._turn(tenant):
            for attempt in range(CAS_ATTEMPTS):
                if not todo:
                    break
                changed: list[tuple[Ticket, str, _Applied]] = []
                along: list[ObjectWrite] = []
                for ticket_id, group in todo.items():
                    try:
                        ticket, version = self._tickets.get(tenant, ticket_id)
                    except NotFound as exc:
                        out[ticket_id] = exc
                        continue
                    applied = _apply(ticket, group, self._keep_comments, self._normalizer_version)
                    attached = Attached(ticket, applied.regressions)
                    writes = records(ticket_id, attached) if records is not None else ()
                    if applied.fresh:
                        changed.append((ticket, version, applied))
                        key = self._tickets.key(tenant, ticket_id)
                        along.extend(replace(w, after=key) for w in writes)
                    else:  # every report a replay this ticket already counted
                        out[ticket_id] = attached
                        along.extend(writes)
                todo = {}
                changes = [(t, v) for t, v, _ in changed]
                written = self._tickets.update_many(changes, also=along) if changes or along else []
                for (ticket, _, applied), result in zip(changed, written, strict=True):
                    if isinstance(result, VersionConflict):
                        todo[ticket.ticket_id] = list(reports[ticket.ticket_id])
                        continue
                    out[ticket.ticket_id] = Attached(ticket, applied.regressions)
                    points.extend(
                        incident_point(ticket, r, self._normalizer_version) for r in applied.new_templates
                    )
                    if any(applied.regressions):
                        reopened.append(ticket)
                    else:  # read from here on, never changed: the next get may have it unparsed
                        self._tickets.keep(ticket, result)
                if todo:
                    self._lost(attempt, len(todo))
        # Ticket-only writes already landed; if these are lost the tickets still hold their
        # templates and ``reindex`` restores the vectors.
        if points:
            self._index.upsert(points)
        for ticket in reopened:
            self._index.set_payload(self._ticket_filter(ticket), {"status": "open"})
        if todo:
            raise VersionConflict(
                f"tickets {sorted(todo)} kept changing; gave up after {CAS_ATTEMPTS} attempts"
            )
        return out

    def comment(self, tenant: str, ticket_id: str, author: str, body: str) -> Ticket:
        """Add a person's comment; ``LimitReached`` once the ticket holds ``max_comments`` of them."""

        def change(ticket: Ticket) -> None:
            if sum(c.kind == "comment" for c in ticket.comments) >= self._max_comments:
                raise LimitReached(
                    f"ticket {ticket_id} holds the most comments allowed ({self._max_comments})"
                )
            ticket.comments.append(Comment(kind="comment", author=author, body=body))

        return self._mutate(tenant, ticket_id, change)

    def resolve(self, tenant: str, ticket_id: str, resolution: str | None) -> Ticket:
        def change(ticket: Ticket) -> None:
            ticket.status = "resolved"
            ticket.resolution = resolution
            ticket.comments.append(Comment(kind="resolution", author="api", body=resolution or "resolved"))

        ticket = self._mutate(tenant, ticket_id, change)
        self._index.set_payload(self._ticket_filter(ticket), {"status": "resolved"})
        return ticket

    def _mutate(self, tenant: str, ticket_id: str, change: Callable[[Ticket], None]) -> Ticket:
        for attempt in range(CAS_ATTEMPTS):
            with self._turn(tenant):
                ticket, version = self._tickets.get(tenant, ticket_id)
                change(ticket)
                try:
                    self._tickets.update(ticket, version)
                    return ticket
                except VersionConflict:
                    pass
            self._lost(attempt, 1)
        raise VersionConflict(f"ticket {ticket_id} kept changing; gave up after {CAS_ATTEMPTS} attempts")

    @staticmethod
    def _ticket_filter(ticket: Ticket) -> VectorFilter:
        return VectorFilter({"tenant": ticket.tenant, "kind": "incident", "ticket_id": ticket.ticket_id})


@dataclass
class Draft:
    """A ticket not written yet: what opens it, and every report that joined it meanwhile."""

    service: str
    ticket_id: str
    title: str
    severity: Severity | None
    labels: dict[str, str]
    reports: list[Occurrence]  # the first opens the ticket
    runbooks: list[RunbookHit] = field(default_factory=list)
    recommendation: Recommendation | None = None


@dataclass(frozen=True)
class Attached:
    """A ticket after :meth:`TicketDesk.attach`, and per report whether it reopened the ticket."""

    ticket: Ticket
    regressions: list[bool]


@dataclass
class _Applied:
    regressions: list[bool]
    new_templates: list[Occurrence]
    fresh: int  # reports not counted before


def _apply(ticket: Ticket, reports: Sequence[Occurrence], keep: int, version: str) -> _Applied:
    """Add ``reports`` (normalized by the rules of ``version``) to ``ticket`` in memory, skipping
    any it already counted (replays); then keep its newest ``keep`` occurrence comments."""
    counted = {c.incident_id for c in ticket.comments if c.incident_id}
    applied = _Applied(regressions=[], new_templates=[], fresh=0)
    for report in reports:
        if report.incident_id and report.incident_id in counted:
            applied.regressions.append(False)
            continue
        counted.add(report.incident_id)
        applied.fresh += 1
        regression = ticket.status == "resolved"
        applied.regressions.append(regression)
        ticket.occurrences += 1
        if regression:
            ticket.status = "open"
            ticket.regressions += 1
            ticket.resolution = None
        ticket.comments.append(
            Comment(
                kind="regression" if regression else "occurrence",
                author="incident-responder",
                body=report.log,
                incident_id=report.incident_id,
            )
        )
        if report.fingerprint not in ticket.signatures:
            ticket.signatures[report.fingerprint] = Signature(
                template=report.template, embed_text=report.embed_text, normalizer_version=version
            )
            applied.new_templates.append(report)
    _trim_occurrences(ticket, keep)
    return applied


def _trim_occurrences(ticket: Ticket, keep: int) -> None:
    occurrences = [c for c in ticket.comments if c.kind in ("occurrence", "regression")]
    excess = len(occurrences) - keep
    if excess > 0:
        drop = {id(c) for c in occurrences[:excess]}
        ticket.comments = [c for c in ticket.comments if id(c) not in drop]
