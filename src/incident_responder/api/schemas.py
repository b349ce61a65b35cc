"""Request bodies of the HTTP API, validated strictly (unknown fields are refused)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from incident_responder.models import IncidentReport, Runbook, RunbookHit, Severity, Ticket

ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
_LABEL_KEY = re.compile(r"^[A-Za-z0-9._/-]{1,100}$")
# Control characters other than tab/newline/CR carry no meaning in a log and break
# terminals and JSON consumers downstream; they are refused, not silently dropped.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class IncidentIn(_Strict):
    service: ServiceName
    log: Annotated[str, Field(min_length=1)]
    severity: Severity | None = None
    title: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    labels: Annotated[dict[str, Annotated[str, Field(max_length=500)]], Field(max_length=50)] = Field(
        default_factory=dict
    )

    @field_validator("log", "title")
    @classmethod
    def _no_control_chars(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters (other than tab and newline)")
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key[:40]!r} must be 1-100 chars of [A-Za-z0-9._/-]")
        return value

    def to_report(self) -> IncidentReport:
        return IncidentReport(**self.model_dump())


class BatchIn(_Strict):
    incidents: Annotated[list[IncidentIn], Field(min_length=1)]


class CommentIn(_Strict):
    author: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str, Field(min_length=1, max_length=20_000)]


class ResolveIn(_Strict):
    resolution: Annotated[str, Field(max_length=20_000)] | None = None


class RunbookIn(_Strict):
    title: Annotated[str, Field(min_length=1, max_length=300)]
    content: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    services: list[ServiceName] = Field(default_factory=list, max_length=100)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100
    )


class TicketOut(BaseModel):
    """A ticket as the API shows it (internal bookkeeping left out)."""

    ticket_id: str
    status: str
    service: str
    title: str
    severity: Severity | None
    labels: dict[str, str]
    created_at: str
    updated_at: str
    occurrences: int
    regressions: int
    resolution: str | None
    comments: list[dict[str, object]]
    runbooks: list[RunbookHit]
    recommendation: dict[str, object] | None

    @classmethod
    def of(cls, ticket: Ticket) -> TicketOut:
        return cls(
            ticket_id=ticket.ticket_id,
            status=ticket.status,
            service=ticket.service,
            title=ticket.title,
            severity=ticket.severity,
            labels=ticket.labels,
            created_at=ticket.created_at.isoformat(),
            updated_at=ticket.updated_at.isoformat(),
            occurrences=ticket.occurrences,
            regressions=ticket.regressions,
            resolution=ticket.resolution,
            comments=[c.model_dump(mode="json") for c in ticket.comments],
            runbooks=ticket.runbooks,
            recommendation=ticket.recommendation.model_dump(mode="json") if ticket.recommendation else None,
        )


class TicketPage(BaseModel):
    tickets: list[TicketOut]
    next_cursor: str | None


class RunbookOut(BaseModel):
    id: str
    title: str
    content: str
    services: list[str]
    tags: list[str]
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, runbook: Runbook) -> RunbookOut:
        return cls(
            id=runbook.id,
            title=runbook.title,
            content=runbook.content,
            services=runbook.services,
            tags=runbook.tags,
            created_at=runbook.created_at.isoformat(),
            updated_at=runbook.updated_at.isoformat(),
        )


class RunbookSummary(BaseModel):
    id: str
    title: str
    services: list[str]
    tags: list[str]
    updated_at: str


class RunbookList(BaseModel):
    runbooks: list[RunbookSummary]
