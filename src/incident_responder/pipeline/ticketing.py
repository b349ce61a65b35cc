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

from incident_responder.alerts.links import AlertLinks
from incident_responder.errors import Conflict, LimitReached, NotFound, VersionConflict
from incident_responder.models import (
    FEEDBACK_KEPT,
    AlertInfo,
    Comment,
    Feedback,
    Recommendation,
    RunbookHit,
    Severity,
    Signature,
    Ticket,
    utcnow,
)
from incident_responder.notifications.events import EventLog
from incident_responder.notifications.model import EventKind
from incident_responder.pipeline.lifecycle import (
    DEFAULT_RULES,
    Applied,
    Rules,
    apply_reports,
    open_ticket,
    resolve,
    settle_alerts,
)
from incident_responder.pipeline.occurrence import Occurrence
from incident_responder.pipeline.ticket_points import incident_point
from incident_responder.ports import (
    ObjectWrite,
    VectorFilter,
    VectorIndex,
    VectorPoint,
    WriteLock,
)
from incident_responder.repositories import PendingMarkers, TicketRepository

__all__ = [
    "Attached",
    "Draft",
    "Occurrence",
    "TicketDesk",
    "full_jitter",
    "write_turn",
]

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


def write_turn(write_lock: WriteLock | None, tenant: str) -> AbstractContextManager[None]:
    """The tenant's turn to write tickets (none needed when this process writes alone)."""
    return nullcontext() if write_lock is None else write_lock.hold(tenant)


class TicketDesk:
    """Writes tickets and their vectors: opens tickets in groups, attaches reports to them, adds
    comments and resolutions, settles source alerts; every update is compare-and-swap, retried
    on conflict. Each write carries, in its own group commit, the events it causes and the
    links of the source alerts that joined the ticket."""

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
        rules: Callable[[str, str], Rules] | None = None,
        events: EventLog | None = None,
        links: AlertLinks | None = None,
        on_events: Callable[[str], None] | None = None,
        wants_events: Callable[[str], bool] | None = None,
    ) -> None:
        """``write_lock`` lets processes take turns updating a tenant's tickets (none: one
        process); ``back_off(cap)`` waits between compare-and-swap rounds (default: a random
        time up to ``cap``); ``on_conflict(n)`` hears of every round in which ``n`` ticket
        writes lost to another writer; ``occurrence_comments``: the newest occurrence
        comments a ticket keeps (a replay is recognized by its comment, so only within them;
        a dead-letter replay first looks for the report's incident record); ``max_comments``:
        the most comments people may add to one ticket; ``rules(tenant, service)``: the
        lifecycle rules of a ticket (default: :data:`DEFAULT_RULES`); ``events``: where the
        events of a write are recorded (none: not recorded); ``links``: the source alert
        links; ``on_events(tenant)`` hears that events of ``tenant`` were written;
        ``wants_events(tenant)``: whether anyone may hear of them (no channel: none are written)."""
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
        self._rules = rules or (lambda _tenant, _service: DEFAULT_RULES)
        self._events = events
        self._links = links
        self._on_events = on_events
        self._wants_events = wants_events or (lambda _tenant: True)

    def _turn(self, tenant: str) -> AbstractContextManager[None]:
        return write_turn(self._write_lock, tenant)

    def _lost(self, attempt: int, conflicts: int) -> None:
        """``conflicts`` writes of round ``attempt`` (from 0) lost: count them, then back off."""
        if self._on_conflict is not None:
            self._on_conflict(conflicts)
        if attempt + 1 < CAS_ATTEMPTS:
            self._back_off(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))

    def _recorded(self, ticket: Ticket, events: Sequence[EventKind]) -> list[EventKind]:
        """The events of a ticket write that are recorded (none when nobody could hear of them)."""
        if self._events is None or not events or not self._wants_events(ticket.tenant):
            return []
        return list(events)

    def _consequences(
        self, ticket: Ticket, events: Sequence[EventKind], alerts: Sequence[AlertInfo]
    ) -> list[ObjectWrite]:
        """The writes that go with a ticket write: its recorded events and its new source alert
        links, each ``after`` the ticket (they land only with it)."""
        key = self._tickets.key(ticket.tenant, ticket.ticket_id)
        writes: list[ObjectWrite] = []
        if self._events is not None and events:
            writes += self._events.writes(ticket, list(events), merged_into=ticket.merged_into)
        if self._links is not None and alerts:
            writes += self._links.writes(ticket.tenant, ticket.ticket_id, alerts)
        return [replace(w, after=key) for w in writes]

    def _landed(self, ticket: Ticket, events: Sequence[EventKind], alerts: Sequence[AlertInfo]) -> None:
        if self._links is not None and alerts:
            self._links.written(ticket.tenant, ticket.ticket_id, alerts)
        if events and self._events is not None and self._on_events is not None:
            self._on_events(ticket.tenant)

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
        record its reports' outcome: they go in the same group commit, each after its ticket,
        with the ticket's events and source alert links (the marker stays until the vectors
        are written, so whatever a crash or a failed upsert leaves is repaired by
        ``reconcile``)."""
        if not drafts:
            return []
        tickets: list[Ticket] = []
        points: list[VectorPoint] = []
        along: list[ObjectWrite] = []
        landed: list[tuple[Ticket, Applied]] = []
        now = utcnow()
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
                recommendation_pending=draft.recommendation_pending,
                signatures={
                    first.fingerprint: Signature(
                        template=first.template,
                        embed_text=first.embed_text,
                        normalizer_version=self._normalizer_version,
                    )
                },
                normalizer_version=self._normalizer_version,
                created_at=now,
                updated_at=now,
            )
            applied = open_ticket(
                ticket,
                draft.reports,
                keep=self._keep_comments,
                version=self._normalizer_version,
                rules=self._rules(tenant, draft.service),
                now=now,
            )
            points.append(incident_point(ticket, first, self._normalizer_version))
            points.extend(incident_point(ticket, r, self._normalizer_version) for r in applied.new_templates)
            tickets.append(ticket)
            landed.append((ticket, applied))
        marker = self._pending.marker(tenant, [t.ticket_id for t in tickets])
        for ticket, applied in landed:
            key = self._tickets.key(tenant, ticket.ticket_id)
            if records is not None:
                along.extend(replace(w, after=key) for w in records(ticket))
            applied.events = self._recorded(ticket, applied.events)
            along.extend(self._consequences(ticket, applied.events, applied.new_alerts))
        self._tickets.create_many(tickets, first=marker, also=along)
        for ticket, applied in landed:
            self._landed(ticket, applied.events, applied.new_alerts)
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
        compare-and-swap, retried per ticket on conflict. A report may reopen a resolved
        ticket (see :mod:`~incident_responder.pipeline.lifecycle`).

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
                changed: list[tuple[Ticket, str, Applied]] = []
                along: list[ObjectWrite] = []
                now = utcnow()
                for ticket_id, group in todo.items():
                    try:
                        ticket, version = self._tickets.get(tenant, ticket_id)
                    except NotFound as exc:
                        out[ticket_id] = exc
                        continue
                    if ticket.status == "merged" or any(r.fingerprint in ticket.split_off for r in group):
                        # A person moved these forms elsewhere after they were looked up: the
                        # caller forgets what it remembered and decides them again.
                        out[ticket_id] = NotFound(f"ticket {ticket_id} was corrected; decide again")
                        continue
                    applied = apply_reports(
                        ticket,
                        group,
                        keep=self._keep_comments,
                        version=self._normalizer_version,
                        rules=self._rules(tenant, ticket.service),
                        now=now,
                    )
                    attached = Attached(ticket, applied.regressions, applied.flapping)
                    writes = records(ticket_id, attached) if records is not None else ()
                    if applied.fresh:
                        changed.append((ticket, version, applied))
                        key = self._tickets.key(tenant, ticket_id)
                        along.extend(replace(w, after=key) for w in writes)
                        applied.events = self._recorded(ticket, applied.events)
                        along.extend(self._consequences(ticket, applied.events, applied.new_alerts))
                    else:  # every report a replay or a repeat this ticket already counted
                        out[ticket_id] = attached
                        along.extend(writes)
                todo = {}
                changes = [(t, v) for t, v, _ in changed]
                written = self._tickets.update_many(changes, also=along) if changes or along else []
                for (ticket, _, applied), result in zip(changed, written, strict=True):
                    if isinstance(result, VersionConflict):
                        todo[ticket.ticket_id] = list(reports[ticket.ticket_id])
                        continue
                    out[ticket.ticket_id] = Attached(ticket, applied.regressions, applied.flapping)
                    self._landed(ticket, applied.events, applied.new_alerts)
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

        def change(ticket: Ticket) -> list[EventKind]:
            if sum(c.kind == "comment" for c in ticket.comments) >= self._max_comments:
                raise LimitReached(
                    f"ticket {ticket_id} holds the most comments allowed ({self._max_comments})"
                )
            ticket.comments.append(Comment(kind="comment", author=author, body=body))
            return []

        return self.update(tenant, ticket_id, change)

    def resolve(self, tenant: str, ticket_id: str, resolution: str | None) -> Ticket:
        """Resolve a ticket now (a person's resolution); ``Conflict`` for a merged ticket."""

        def change(ticket: Ticket) -> list[EventKind]:
            if ticket.status == "merged":
                raise Conflict(f"ticket {ticket_id} was merged into {ticket.merged_into}; resolve that one")
            return resolve(ticket, resolution, at=utcnow(), author="api")

        ticket = self.update(tenant, ticket_id, change)
        self._index.set_payload(self._ticket_filter(ticket), {"status": "resolved"})
        return ticket

    def settle(self, tenant: str, marks: Mapping[str, Sequence[AlertInfo]]) -> dict[str, Ticket | NotFound]:
        """Record resolved source alerts (ticket id -> its alerts that resolved); each ticket
        resolves if its tenant's resolve policy says so. A ticket merged since its alerts joined
        it passes them on to the ticket it was merged into (the answer is that ticket)."""
        out: dict[str, Ticket | NotFound] = {}
        for ticket_id, group in marks.items():

            def change(ticket: Ticket, group: Sequence[AlertInfo] = group) -> list[EventKind]:
                if ticket.status == "merged" and ticket.merged_into:
                    raise _Moved(ticket.merged_into)
                return settle_alerts(ticket, group, self._rules(tenant, ticket.service), utcnow())

            target = ticket_id
            for _ in range(_MAX_HOPS):
                try:
                    ticket = self.update(tenant, target, change)
                except _Moved as moved:
                    target = moved.into
                    continue
                except NotFound as exc:
                    out[ticket_id] = exc
                break
            else:
                out[ticket_id] = NotFound(f"ticket {ticket_id}: too many merges to follow")
            if ticket_id in out:
                continue
            if ticket.status == "resolved":
                self._index.set_payload(self._ticket_filter(ticket), {"status": "resolved"})
            out[ticket_id] = ticket
        return out

    def set_recommendation(
        self, tenant: str, ticket_id: str, recommendation: Recommendation | None
    ) -> Ticket:
        """Replace the ticket's recommendation (one that arrived after the ticket opened)."""

        def change(ticket: Ticket) -> list[EventKind]:
            if recommendation is not None:
                ticket.recommendation = recommendation
            ticket.recommendation_pending = False
            return []

        return self.update(tenant, ticket_id, change)

    def feedback(
        self, tenant: str, ticket_id: str, *, helpful: bool, comment: str | None, author: str | None
    ) -> Ticket:
        """Record a person's vote on the ticket's recommendation, as its last ``feedback`` (the
        newest ``FEEDBACK_KEPT`` are kept; ``helpful_votes``/``unhelpful_votes`` count them all);
        ``Conflict`` if the ticket has no recommendation."""

        def change(ticket: Ticket) -> list[EventKind]:
            shown = ticket.recommendation
            if shown is None:
                raise Conflict(f"ticket {ticket_id} has no recommendation to vote on")
            vote = Feedback(
                helpful=helpful, comment=comment, author=author, variant=shown.variant, source=shown.source
            )
            ticket.feedback = [*ticket.feedback[-(FEEDBACK_KEPT - 1) :], vote]
            if helpful:
                ticket.helpful_votes += 1
            else:
                ticket.unhelpful_votes += 1
            return []

        return self.update(tenant, ticket_id, change)

    def update(self, tenant: str, ticket_id: str, change: Callable[[Ticket], list[EventKind]]) -> Ticket:
        """Apply ``change`` to a ticket (it returns the events it causes) by compare-and-swap,
        retried on conflict; the events are written in the ticket's group commit."""
        for attempt in range(CAS_ATTEMPTS):
            with self._turn(tenant):
                ticket, version = self._tickets.get(tenant, ticket_id)
                events = self._recorded(ticket, change(ticket))
                (result,) = self._tickets.update_many(
                    [(ticket, version)], also=self._consequences(ticket, events, ())
                )
                if not isinstance(result, VersionConflict):
                    self._landed(ticket, events, ())
                    return ticket
            self._lost(attempt, 1)
        raise VersionConflict(f"ticket {ticket_id} kept changing; gave up after {CAS_ATTEMPTS} attempts")

    @staticmethod
    def _ticket_filter(ticket: Ticket) -> VectorFilter:
        return VectorFilter({"tenant": ticket.tenant, "kind": "incident", "ticket_id": ticket.ticket_id})


_MAX_HOPS = 8  # merges followed from a ticket to the one holding its reports now


class _Moved(Exception):
    """The ticket was merged into ``into``: the change belongs there."""

    def __init__(self, into: str) -> None:
        super().__init__(into)
        self.into = into


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
    recommendation_pending: bool = False


@dataclass(frozen=True)
class Attached:
    """A ticket after :meth:`TicketDesk.attach`, and per report whether it reopened the ticket
    and whether that reopening was flapping."""

    ticket: Ticket
    regressions: list[bool]
    flapping: list[bool] = field(default_factory=list)
