"""A person's corrections of grouping: merge two tickets, split reports off a ticket.

Both are must-link / cannot-link facts stored with the tickets (so replicas share them and
``reindex`` rebuilds them from the tickets alone) and carried by the tickets' vectors, so
dedup consults them before any threshold:

* **merge** ``source`` into ``survivor``: the source's forms are re-indexed under the
  survivor (marked ``via: merge``), the source answers ``"status": "merged"`` with
  ``merged_into`` and keeps its id; its reports, occurrences, source alerts and links move to
  the survivor, so every later report that would have joined either joins the survivor.
* **split** reports off a ticket: every form (fingerprint) of those reports moves to a new
  ticket (``via: split``) and the old ticket records it in ``split_off``; its vectors carry
  the split-off templates (``cannot_link``), so a report like them never joins it again.

Each correction is several writes: an intent marker (``<tenant>/corrections/<id>.json``)
comes first and goes last, and :meth:`Corrections.recover` (run at start-up) finishes any
that a crash interrupted. Every step is idempotent. Vectors move before the ticket that
forbids them changes, so a report decided meanwhile finds the forms where they are going;
a replica that still remembers the old place is refused by the ticket desk (``NotFound``)
and decides again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from incident_responder.alerts.links import AlertLinks
from incident_responder.errors import Conflict, InvalidInput, NotFound
from incident_responder.ids import new_ticket_id
from incident_responder.models import (
    AlertInfo,
    Comment,
    CorrectionKind,
    IncidentResult,
    Signature,
    SplitOff,
    Ticket,
    utcnow,
)
from incident_responder.notifications.model import EventKind
from incident_responder.pipeline.dedup import FingerprintLookup
from incident_responder.pipeline.lifecycle import MAX_WHY, SYSTEM_AUTHOR
from incident_responder.pipeline.ticket_points import cannot_link, signature_point
from incident_responder.pipeline.ticketing import MAX_OCCURRENCE_COMMENTS, TicketDesk
from incident_responder.ports import ObjectStore, VectorFilter, VectorIndex, VectorPoint
from incident_responder.repositories import IncidentRepository, TicketRepository

log = structlog.get_logger(__name__)

MAX_SPLIT_OFF = 200  # split-off forms a ticket remembers (its vectors carry the newest 20)
MAX_MERGED_FROM = 1_000


@dataclass(frozen=True)
class _Intent:
    """A correction in progress, as its marker records it."""

    op: CorrectionKind
    ticket_id: str  # merge: the source; split: the ticket split
    into: str  # merge: the survivor; split: the new ticket
    fingerprints: tuple[str, ...] = ()  # split: the forms that move
    incident_ids: tuple[str, ...] = ()  # split: the reports named

    def dump(self) -> bytes:
        return json.dumps(
            {
                "op": self.op,
                "ticket_id": self.ticket_id,
                "into": self.into,
                "fingerprints": list(self.fingerprints),
                "incident_ids": list(self.incident_ids),
            }
        ).encode()

    @classmethod
    def load(cls, data: bytes) -> _Intent:
        raw = json.loads(data)
        return cls(
            op=raw["op"],
            ticket_id=raw["ticket_id"],
            into=raw["into"],
            fingerprints=tuple(raw.get("fingerprints", ())),
            incident_ids=tuple(raw.get("incident_ids", ())),
        )


class Corrections:
    """Merges and splits tickets on a person's word (blocking; see the module doc)."""

    def __init__(
        self,
        *,
        desk: TicketDesk,
        tickets: TicketRepository,
        incidents: IncidentRepository,
        index: VectorIndex,
        objects: ObjectStore,
        fingerprints: FingerprintLookup | None = None,
        links: AlertLinks | None = None,
        occurrence_comments: int = MAX_OCCURRENCE_COMMENTS,
    ) -> None:
        self._desk = desk
        self._tickets = tickets
        self._incidents = incidents
        self._index = index
        self._objects = objects
        self._fingerprints = fingerprints
        self._links = links
        self._keep = occurrence_comments

    # ------------------------------------------------------------------ merge
    def merge(self, tenant: str, ticket_id: str, into: str) -> Ticket:
        """Merge ``ticket_id`` into ``into``; the survivor. Merging again is a no-op."""
        if ticket_id == into:
            raise InvalidInput("a ticket cannot be merged into itself")
        source, _ = self._tickets.get(tenant, ticket_id)
        survivor, _ = self._tickets.get(tenant, into)
        if survivor.status == "merged":
            raise Conflict(f"ticket {into} was merged into {survivor.merged_into}; merge into that one")
        if source.status == "merged":
            if source.merged_into == into:
                return survivor
            raise Conflict(f"ticket {ticket_id} was already merged into {source.merged_into}")
        intent = _Intent("merge", ticket_id, into)
        marker = self._mark(tenant, intent)
        survivor = self._finish_merge(tenant, intent)
        self._objects.delete(marker)
        log.info("ticket.merged", tenant=tenant, ticket_id=ticket_id, into=into)
        return survivor

    def _finish_merge(self, tenant: str, intent: _Intent) -> Ticket:
        source_id, into = intent.ticket_id, intent.into
        source, _ = self._tickets.get(tenant, source_id)
        survivor, _ = self._tickets.get(tenant, into)
        if source.status != "merged":
            # Vectors first: from here on a report of the source's forms finds the survivor.
            self._move_points(survivor, self._points_of(source), via="merge")

            def close(ticket: Ticket) -> list[EventKind]:
                if ticket.status == "merged":
                    return []
                ticket.status, ticket.merged_into = "merged", into
                ticket.comments.append(_note(f"merged into {into}"))
                return ["merged"] if ticket.announced else []

            source = self._desk.update(tenant, source_id, close)
        snapshot = source

        def absorb(ticket: Ticket) -> list[EventKind]:
            if source_id in ticket.merged_from:
                return []
            _absorb(ticket, snapshot, keep=self._keep)
            return []

        survivor = self._desk.update(tenant, into, absorb)
        # The survivor's own vectors learn what was split off the source, and the source's go.
        self._index.set_payload(_ticket_filter(tenant, into), {"cannot_link": cannot_link(survivor)})
        self._index.delete(_ticket_filter(tenant, source_id))
        self._relink(tenant, into, snapshot)
        return survivor

    # ------------------------------------------------------------------ split
    def split(self, tenant: str, ticket_id: str, incident_ids: Sequence[str]) -> Ticket:
        """Move the reports ``incident_ids`` of ``ticket_id`` (and every report of their forms)
        to a new ticket; the new ticket."""
        ticket, _ = self._tickets.get(tenant, ticket_id)
        if ticket.status == "merged":
            raise Conflict(f"ticket {ticket_id} was merged into {ticket.merged_into}; split that one")
        fingerprints = self._forms_of(tenant, ticket, incident_ids)
        if set(fingerprints) >= set(ticket.signatures):
            raise InvalidInput(
                "these reports hold every form of the ticket: nothing would be left of it "
                "(name fewer reports, or merge instead)"
            )
        intent = _Intent("split", ticket_id, new_ticket_id(), tuple(fingerprints), tuple(incident_ids))
        marker = self._mark(tenant, intent)
        new = self._finish_split(tenant, intent)
        self._objects.delete(marker)
        log.info(
            "ticket.split", tenant=tenant, ticket_id=ticket_id, into=new.ticket_id, forms=len(fingerprints)
        )
        return new

    def _forms_of(self, tenant: str, ticket: Ticket, incident_ids: Sequence[str]) -> list[str]:
        """The fingerprints of the named reports, each of which must be in ``ticket``."""
        by_comment = {
            c.incident_id: c.fingerprint for c in ticket.comments if c.incident_id and c.fingerprint
        }
        out: dict[str, None] = {}
        for incident_id in dict.fromkeys(incident_ids):
            fingerprint = by_comment.get(incident_id)
            if fingerprint is None:
                try:
                    record = self._incidents.get(tenant, incident_id)
                except NotFound:
                    raise InvalidInput(f"incident {incident_id} not found") from None
                if record.ticket_id != ticket.ticket_id:
                    raise InvalidInput(f"incident {incident_id} is not in ticket {ticket.ticket_id}")
                fingerprint = record.fingerprint
            if fingerprint is None or fingerprint not in ticket.signatures:
                raise InvalidInput(
                    f"incident {incident_id}: its form is not known to ticket {ticket.ticket_id} "
                    "(recorded before forms were kept with reports)"
                )
            out[fingerprint] = None
        return list(out)

    def _finish_split(self, tenant: str, intent: _Intent) -> Ticket:
        old, _ = self._tickets.get(tenant, intent.ticket_id)
        moving = set(intent.fingerprints)
        try:
            new, _ = self._tickets.get(tenant, intent.into)
        except NotFound:
            new = _split_ticket(old, intent.into, moving, keep=self._keep)
            self._tickets.create_many([new])
        # Vectors first (see the module doc), then the old ticket forbids the forms.
        points = self._points_of(old, only=moving)
        self._move_points(new, points, via="split")

        def forbid(ticket: Ticket) -> list[EventKind]:
            _split_off(ticket, moving, into=intent.into)
            return []

        old = self._desk.update(tenant, intent.ticket_id, forbid)
        self._index.delete(
            VectorFilter(
                {"tenant": tenant, "kind": "incident", "ticket_id": old.ticket_id},
                any_of={"fingerprint": sorted(moving)},
            )
        )
        self._index.set_payload(_ticket_filter(tenant, old.ticket_id), {"cannot_link": cannot_link(old)})
        self._rehome_records(tenant, new, intent)
        if self._fingerprints is not None:
            for fingerprint in moving:
                service = new.signatures[fingerprint].service or new.service
                self._fingerprints.forget(tenant, service, fingerprint)
        return new

    def _rehome_records(self, tenant: str, new: Ticket, intent: _Intent) -> None:
        """The moved reports' records name the new ticket (those still in the old one's history
        and those named)."""
        named = set(intent.incident_ids) | {c.incident_id for c in new.comments if c.incident_id}
        moved: list[IncidentResult] = []
        for incident_id in sorted(i for i in named if i):
            try:
                record = self._incidents.get(tenant, incident_id)
            except NotFound:
                continue
            if record.ticket_id == intent.ticket_id:
                update: dict[str, object] = {"ticket_id": new.ticket_id}
                if record.matched_ticket_id is not None:
                    update["matched_ticket_id"] = new.ticket_id
                moved.append(record.model_copy(update=update))
        self._incidents.put_many(tenant, moved)

    # ------------------------------------------------------------------ recovery
    def recover(self, tenant: str) -> int:
        """Finish every correction of ``tenant`` that a crash interrupted; how many."""
        done = 0
        for key in self._objects.list_keys(f"{tenant}/corrections/"):
            found = self._objects.get(key)
            if found is None:
                continue
            intent = _Intent.load(found.data)
            try:
                if intent.op == "merge":
                    self._finish_merge(tenant, intent)
                else:
                    self._finish_split(tenant, intent)
            except NotFound:  # the ticket it names is gone: nothing left to finish
                log.warning("correction.abandoned", tenant=tenant, op=intent.op, ticket_id=intent.ticket_id)
            self._objects.delete(key)
            done += 1
        return done

    # ------------------------------------------------------------------ helpers
    def _mark(self, tenant: str, intent: _Intent) -> str:
        key = f"{tenant}/corrections/{intent.ticket_id}-{intent.into}.json"
        self._objects.put(key, intent.dump())
        return key

    def _points_of(self, ticket: Ticket, only: set[str] | None = None) -> list[VectorPoint]:
        where = _ticket_filter(ticket.tenant, ticket.ticket_id)
        points = self._index.vectors(where)
        return [p for p in points if only is None or str(p.payload.get("fingerprint")) in only]

    def _move_points(self, target: Ticket, points: Sequence[VectorPoint], *, via: CorrectionKind) -> None:
        """Index ``points`` (another ticket's forms, with their vectors) under ``target``."""
        moved = []
        for point in points:
            fingerprint = str(point.payload.get("fingerprint"))
            service = str(point.payload.get("service", target.service))
            signature = Signature(
                template=str(point.payload.get("template", "")),
                embed_text="",
                normalizer_version=str(point.payload.get("normalizer_version", "")),
                service=service if service != target.service else None,
                via=via,
            )
            moved.append(signature_point(target, fingerprint, signature, point.vector))
        if moved:
            self._index.upsert(moved)

    def _relink(self, tenant: str, into: str, source: Ticket) -> None:
        """The source's alerts lead to the survivor; nothing remembers the source's forms."""
        if self._links is not None and source.alerts:
            alerts = [_alert_of(key) for key in source.alerts]
            self._objects.put_many(self._links.writes(tenant, into, alerts))
            self._links.written(tenant, into, alerts)
        if self._fingerprints is not None:
            for fingerprint, sig in source.signatures.items():
                self._fingerprints.forget(tenant, sig.service or source.service, fingerprint)


def _absorb(survivor: Ticket, source: Ticket, *, keep: int) -> None:
    """Add everything ``source`` holds to ``survivor`` (in memory)."""
    for fingerprint, sig in source.signatures.items():
        survivor.split_off.pop(fingerprint, None)  # merged back: the split is undone
        if fingerprint not in survivor.signatures:
            service = sig.service or source.service
            survivor.signatures[fingerprint] = sig.model_copy(
                update={"service": service if service != survivor.service else None, "via": "merge"}
            )
    survivor.occurrences += source.occurrences
    survivor.regressions += source.regressions
    history = [c for c in source.comments if c.kind in ("occurrence", "regression", "comment")]
    survivor.comments = sorted([*survivor.comments, *history], key=lambda c: c.created_at)
    occurrences = [c for c in survivor.comments if c.kind in ("occurrence", "regression")]
    if len(occurrences) > keep:
        drop = {id(c) for c in occurrences[: len(occurrences) - keep]}
        survivor.comments = [c for c in survivor.comments if id(c) not in drop]
    survivor.comments.append(
        _note(f"merged {source.ticket_id} ({source.occurrences} reports) into this ticket")
    )
    for key, state in source.alerts.items():
        survivor.alerts.setdefault(key, state)
    for name, url in source.links.items():
        survivor.links.setdefault(name, url)
    for key, line in source.why.items():
        if len(survivor.why) < MAX_WHY:
            survivor.why.setdefault(f"merged:{key}", f"merged from {source.ticket_id}: {line}")
    for fingerprint, off in source.split_off.items():
        if fingerprint not in survivor.signatures:
            survivor.split_off.setdefault(fingerprint, off)
    _bound_split_off(survivor)
    if source.status == "open" and survivor.status == "resolved":  # it holds an open problem now
        survivor.status, survivor.resolution, survivor.resolved_at = "open", None, None
    survivor.merged_from = [*survivor.merged_from, source.ticket_id][-MAX_MERGED_FROM:]


def _split_ticket(old: Ticket, new_id: str, moving: set[str], *, keep: int) -> Ticket:
    """The new ticket of a split: the moving forms and the reports of them ``old`` keeps."""
    history = [c for c in old.comments if c.fingerprint in moving]
    now = utcnow()
    first = history[0].body if history else old.signatures[next(iter(moving))].template
    line = next((ln.strip() for ln in first.splitlines() if ln.strip()), "incident")
    ticket = Ticket(
        ticket_id=new_id,
        tenant=old.tenant,
        service=old.service,
        title=line[:120],
        severity=old.severity,
        labels=dict(old.labels),
        created_at=now,
        updated_at=now,
        occurrences=max(1, len(history)),
        runbooks=list(old.runbooks),
        recommendation=old.recommendation,
        signatures={
            fp: sig.model_copy(update={"via": "split"}) for fp, sig in old.signatures.items() if fp in moving
        },
        normalizer_version=old.normalizer_version,
        split_from=old.ticket_id,
        status="open" if old.status == "merged" else old.status,
        resolved_at=old.resolved_at,
        announced=old.announced,
    )
    ticket.comments = [*history[-keep:], _note(f"split off {old.ticket_id}")]
    ticket.why["split"] = f"split off {old.ticket_id} by a person ({len(moving)} forms)"
    return ticket


def _split_off(ticket: Ticket, moving: set[str], *, into: str) -> None:
    """Make ``ticket`` forget the ``moving`` forms and refuse them from now on (in memory)."""
    for fingerprint in moving:
        sig = ticket.signatures.pop(fingerprint, None)
        if sig is not None:
            ticket.split_off[fingerprint] = SplitOff(template=sig.template, into=into)
    gone = [c for c in ticket.comments if c.fingerprint in moving]
    ticket.comments = [c for c in ticket.comments if c.fingerprint not in moving]
    ticket.occurrences = max(1, ticket.occurrences - len(gone))
    ticket.comments.append(_note(f"split {len(moving)} forms off into {into}"))
    _bound_split_off(ticket)


def _bound_split_off(ticket: Ticket) -> None:
    excess = len(ticket.split_off) - MAX_SPLIT_OFF
    for fingerprint in list(ticket.split_off)[: max(0, excess)]:
        del ticket.split_off[fingerprint]


def _note(body: str) -> Comment:
    return Comment(kind="correction", author=SYSTEM_AUTHOR, body=body)


def _alert_of(key: str) -> AlertInfo:
    source, _, fingerprint = key.partition(":")
    return AlertInfo.model_validate({"source": source, "fingerprint": fingerprint})


def _ticket_filter(tenant: str, ticket_id: str) -> VectorFilter:
    return VectorFilter({"tenant": tenant, "kind": "incident", "ticket_id": ticket_id})
