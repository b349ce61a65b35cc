"""One report as its ticket records it."""

from __future__ import annotations

from dataclasses import dataclass

from incident_responder.models import AlertInfo
from incident_responder.ports import Vector


@dataclass(frozen=True)
class Occurrence:
    """One report as its ticket records it: its id, its log, its normalized forms, the source
    alert it is (if an alert source sent it) and whether a silence matched it."""

    incident_id: str
    log: str
    fingerprint: str
    template: str
    embed_text: str
    vector: Vector | None  # None only when the fingerprint is already indexed
    alert: AlertInfo | None = None
    silenced: bool = False
    # (way, line): why it joined its ticket, one line per distinct way (see Ticket.why)
    why: tuple[str, str] | None = None
    service: str | None = None  # its service (None: its ticket's)
