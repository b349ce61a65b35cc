"""What the intake does differently for reports an alert source sent: a firing alert goes to
the ticket its fingerprint already joined, and a resolved alert settles its ticket instead of
being deduplicated."""

from __future__ import annotations

from collections.abc import Sequence

from incident_responder.alerts.links import AlertLinks
from incident_responder.errors import BackendUnavailable, NotFound
from incident_responder.models import AlertInfo, IncidentReport, IncidentResult
from incident_responder.pipeline.ticketing import TicketDesk
from incident_responder.repositories import IncidentRepository


def resolves(report: IncidentReport) -> bool:
    """Whether ``report`` is a source alert that resolved (it settles a ticket, opens none)."""
    return report.alert is not None and report.alert.status == "resolved"


class SourceAlerts:
    """Source alerts' tickets: which ticket each joined, and settling tickets as they resolve."""

    def __init__(self, *, links: AlertLinks, desk: TicketDesk, incidents: IncidentRepository) -> None:
        self._links = links
        self._desk = desk
        self._incidents = incidents

    def linked(self, tenant: str, alerts: Sequence[AlertInfo]) -> list[str | None]:
        """Per alert, the ticket it joined before, if any (blocking)."""
        return [self._links.find(tenant, alert) for alert in alerts]

    def forget(self, tenant: str, alert: AlertInfo) -> None:
        """Its linked ticket turned out to be gone."""
        self._links.forget(tenant, alert)

    def settle(
        self, tenant: str, reports: Sequence[tuple[str, IncidentReport]]
    ) -> list[IncidentResult | BackendUnavailable]:
        """Record that the source alerts of ``reports`` (incident id, report) resolved, ticket by
        ticket (blocking). Per report its outcome: ``resolved`` with its ticket (none if the
        alert never joined one), or why a backend could not take it."""
        alerts = [report.alert for _, report in reports]
        assert all(a is not None for a in alerts)
        try:
            tickets = self.linked(tenant, [a for a in alerts if a is not None])
            by_ticket: dict[str, list[AlertInfo]] = {}
            for alert, ticket_id in zip(alerts, tickets, strict=True):
                if ticket_id is not None and alert is not None:
                    by_ticket.setdefault(ticket_id, []).append(alert)
            settled = self._desk.settle(tenant, by_ticket)
        except BackendUnavailable as exc:
            return [exc] * len(reports)
        out: list[IncidentResult | BackendUnavailable] = []
        for (incident_id, report), ticket_id in zip(reports, tickets, strict=True):
            ticket = settled.get(ticket_id) if ticket_id is not None else None
            if isinstance(ticket, NotFound) or ticket is None:
                if ticket_id is not None and report.alert is not None:
                    self._links.forget(tenant, report.alert)
                out.append(IncidentResult(incident_id=incident_id, ticket_id=None, status="resolved"))
                continue
            out.append(
                IncidentResult(
                    incident_id=incident_id,
                    ticket_id=ticket.ticket_id,
                    status="resolved",
                    matched_ticket_id=ticket.ticket_id,
                    runbooks=ticket.runbooks,
                    recommendation=ticket.recommendation,
                )
            )
        try:
            self._incidents.put_many(tenant, [r for r in out if isinstance(r, IncidentResult)])
        except BackendUnavailable as exc:
            return [exc] * len(reports)  # settling again is harmless: these wait and are replayed
        return out
