"""Creating tickets in a group commit, and retrying one that had partly landed."""

from __future__ import annotations

from pathlib import Path

import pytest

from incident_responder.backends.objects.local import LocalObjectStore
from incident_responder.errors import VersionConflict
from incident_responder.models import Ticket
from incident_responder.ports import ObjectWrite
from incident_responder.repositories import TicketRepository


def _ticket(title: str = "disk full on db-1") -> Ticket:
    return Ticket(ticket_id="tkt_01jd0000000000000000000000", tenant="acme", service="db", title=title)


def test_a_retry_finds_its_own_tickets_and_writes_what_comes_after_them(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path)
    tickets = TicketRepository(objects)
    ticket = _ticket()
    key = tickets.key("acme", ticket.ticket_id)
    marker = ObjectWrite("acme/pending/group-1.json", b"{}")
    (first,) = tickets.create_many([ticket], first=marker)  # lands; its record did not
    record = ObjectWrite("acme/incidents/inc_1.json", b"{}", after=key)
    # The retry of the whole group: the ticket is there, byte for byte this write's own.
    assert tickets.create_many([ticket], first=marker, also=[record]) == [first]
    got = objects.get("acme/incidents/inc_1.json")
    assert got is not None and got.data == b"{}"


def test_another_ticket_under_the_same_id_is_still_refused(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path)
    tickets = TicketRepository(objects)
    tickets.create_many([_ticket()])
    record = ObjectWrite("acme/incidents/inc_2.json", b"{}", after=tickets.key("acme", _ticket().ticket_id))
    with pytest.raises(VersionConflict):
        tickets.create_many([_ticket("something else")], also=[record])
    assert objects.get("acme/incidents/inc_2.json") is None
