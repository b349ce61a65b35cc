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


def test_a_filtered_listing_reads_a_bounded_number_of_tickets_per_page(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path)
    tickets = TicketRepository(objects)
    for n in range(10):
        service = "db" if n in (1, 8) else "web"
        tickets.create_many([Ticket(ticket_id=f"tkt_{n:02d}", tenant="acme", service=service, title=f"t{n}")])
    reads = 0
    get = objects.get

    def counting_get(key: str) -> object:
        nonlocal reads
        reads += 1
        return get(key)

    objects.get = counting_get  # type: ignore[method-assign]
    found, cursor, pages = [], None, 0
    while True:
        page, cursor = tickets.page("acme", status=None, service="db", limit=5, cursor=cursor, scan=3)
        found += [t.ticket_id for t in page]
        pages += 1
        assert reads <= 3 * pages  # never more than the scan bound per call
        if cursor is None:
            break
    assert found == ["tkt_01", "tkt_08"] and pages == 4
    # Without a filter a full page ends where the limit is reached.
    page, cursor = tickets.page("acme", status=None, service=None, limit=2, cursor=None, scan=3)
    assert [t.ticket_id for t in page] == ["tkt_00", "tkt_01"] and cursor == "tkt_01"
    page, cursor = tickets.page("acme", status=None, service=None, limit=5, cursor="tkt_07", scan=3)
    assert [t.ticket_id for t in page] == ["tkt_08", "tkt_09"] and cursor is None
