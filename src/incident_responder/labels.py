"""A tenant's tickets as a labelled set: the reports each ticket keeps, labelled with their
ticket (after people's merges and splits), in the format ``incident-responder eval`` reads
(``dedup.jsonl``: ``{"service", "log", "group"}`` in arrival order, and ``runbooks/*.md``).

Only the object store is read (never the vector index), so it runs beside a serving process.
A ticket keeps its newest occurrences (``IR_OCCURRENCE_COMMENTS``), so a storm's ticket is
represented by those, not by every report it counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from incident_responder.models import Ticket
from incident_responder.repositories import RunbookRepository, TicketRepository

__all__ = ["ExportReport", "export_labels"]


@dataclass
class ExportReport:
    """What :func:`export_labels` wrote."""

    tickets: int = 0
    reports: int = 0
    services: int = 0
    runbooks: int = 0


def _reports(ticket: Ticket, since: datetime | None) -> Iterator[tuple[datetime, dict[str, str]]]:
    for comment in ticket.comments:
        if comment.kind not in ("occurrence", "regression"):
            continue
        if since is not None and comment.created_at < since:
            continue
        yield (
            comment.created_at,
            {
                "service": ticket.service,
                "log": comment.body,
                "group": ticket.ticket_id,
                "incident_id": comment.incident_id or "",
                "at": comment.created_at.isoformat(),
            },
        )


def export_labels(
    tickets: TicketRepository,
    runbooks: RunbookRepository,
    tenant: str,
    out: Path,
    *,
    since: datetime | None = None,
    service: str | None = None,
) -> ExportReport:
    """Write ``tenant``'s tickets (of ``service`` if given, reports since ``since``) as an eval
    set under ``out``. Merged tickets add nothing of their own: their reports are the survivor's.
    Reports are ordered by arrival, so a replay decides them in the order the service did."""
    report = ExportReport()
    rows: list[tuple[datetime, dict[str, str]]] = []
    services: set[str] = set()
    for ticket in tickets.iter_all(tenant):
        if ticket.status == "merged" or (service is not None and ticket.service != service):
            continue
        mine = list(_reports(ticket, since))
        if mine:
            report.tickets += 1
            services.add(ticket.service)
            rows += mine
    rows.sort(key=lambda row: row[0])
    out.mkdir(parents=True, exist_ok=True)
    with (out / "dedup.jsonl").open("w", encoding="utf-8") as fh:
        for _, row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    report.reports, report.services = len(rows), len(services)
    books = runbooks.all(tenant)
    if books:
        (out / "runbooks").mkdir(exist_ok=True)
        for book in books:
            (out / "runbooks" / f"{book.id}.md").write_text(book.content, encoding="utf-8")
    report.runbooks = len(books)
    return report
