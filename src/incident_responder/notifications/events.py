"""Ticket events as objects beside the tickets: written in the ticket's own group commit, read
and removed by the event pump.

Layout: ``<tenant>/events/<event_id>.json``; event ids are time-ordered, so a listing reads a
tenant's events in the order they happened.
"""

from __future__ import annotations

from incident_responder.errors import NotFound
from incident_responder.ids import new_event_id
from incident_responder.models import Ticket, utcnow
from incident_responder.notifications.model import EventKind, TicketEvent
from incident_responder.ports import ObjectStore, ObjectWrite


class EventLog:
    """Where ticket events wait until the pump has turned them into outbox messages."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    @staticmethod
    def _key(tenant: str, event_id: str) -> str:
        return f"{tenant}/events/{event_id}.json"

    def writes(
        self, ticket: Ticket, kinds: list[EventKind], *, merged_into: str | None = None
    ) -> list[ObjectWrite]:
        """The writes that record ``kinds`` about ``ticket`` (for the group commit of its write)."""
        out = []
        for kind in kinds:
            event = TicketEvent(
                event_id=new_event_id(),
                tenant=ticket.tenant,
                ticket_id=ticket.ticket_id,
                kind=kind,
                service=ticket.service,
                severity=ticket.severity,
                at=utcnow(),
                merged_into=merged_into,
            )
            out.append(
                ObjectWrite(self._key(ticket.tenant, event.event_id), event.model_dump_json().encode())
            )
        return out

    def pending(self, tenant: str, limit: int) -> list[TicketEvent]:
        """The oldest ``limit`` events of ``tenant`` still to be pumped."""
        out = []
        for key in self._objects.list_keys(f"{tenant}/events/", limit=limit):
            found = self._objects.get(key)
            if found is not None:
                out.append(TicketEvent.model_validate_json(found.data))
        return out

    def get(self, tenant: str, event_id: str) -> TicketEvent:
        found = self._objects.get(self._key(tenant, event_id))
        if found is None:
            raise NotFound(f"event {event_id} not found")
        return TicketEvent.model_validate_json(found.data)

    def remove(self, event: TicketEvent) -> None:
        self._objects.delete(self._key(event.tenant, event.event_id))
