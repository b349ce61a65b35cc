"""A ticket's vectors: one point per normalized form it holds, with the payload dedup reads
(its service, template, status, rules version, the correction that put it there and the
templates split off the ticket, which dedup never joins)."""

from __future__ import annotations

from incident_responder.ids import point_id
from incident_responder.models import Signature, Ticket
from incident_responder.pipeline.occurrence import Occurrence
from incident_responder.ports import Vector, VectorPoint

__all__ = ["cannot_link", "incident_point", "incident_point_id", "signature_point"]

MAX_CANNOT_LINK = 20  # split-off templates a ticket's vectors carry (dedup never joins those)


def incident_point_id(tenant: str, ticket_id: str, fingerprint: str, service: str | None = None) -> str:
    """The id of a ticket's vector of one form; ``service``: a form of another service's
    reports, which a person merged into it."""
    parts = [tenant, "incident", ticket_id, fingerprint]
    return point_id(*parts, service) if service else point_id(*parts)


def cannot_link(ticket: Ticket) -> list[str]:
    """The templates of forms split off ``ticket`` (newest last), which its vectors carry."""
    return [s.template for s in ticket.split_off.values()][-MAX_CANNOT_LINK:]


def incident_point(
    ticket: Ticket, report: Occurrence, version: str, *, via: str | None = None
) -> VectorPoint:
    """The vector of one normalized form of ``ticket``, made by the rules of ``version``;
    ``via``: the correction (merge, split) that put the form in this ticket."""
    if report.vector is None:
        raise ValueError("a report with a new fingerprint needs its vector")
    other = report.service if report.service and report.service != ticket.service else None
    payload: dict[str, object] = {
        "tenant": ticket.tenant,
        "kind": "incident",
        "service": other or ticket.service,
        "ticket_id": ticket.ticket_id,
        "fingerprint": report.fingerprint,
        "template": report.template,  # read by dedup; the embed text lives in the ticket
        "status": ticket.status,
        "normalizer_version": version,
    }
    if via is not None:
        payload["via"] = via
    if ticket.split_off:
        payload["cannot_link"] = cannot_link(ticket)
    return VectorPoint(
        id=incident_point_id(ticket.tenant, ticket.ticket_id, report.fingerprint, other),
        vector=report.vector,
        payload=payload,
    )


def signature_point(ticket: Ticket, fingerprint: str, signature: Signature, vector: Vector) -> VectorPoint:
    """The vector of a form ``ticket`` holds, from its stored signature."""
    report = Occurrence(
        "", "", fingerprint, signature.template, signature.embed_text, vector, service=signature.service
    )
    version = signature.normalizer_version or ticket.normalizer_version
    return incident_point(ticket, report, version, via=signature.via)
