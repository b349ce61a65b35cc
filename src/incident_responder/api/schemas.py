"""Request bodies of the HTTP API, validated strictly (unknown fields are refused)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from incident_responder.models import IncidentReport, IncidentResult, Runbook, RunbookHit, Severity, Ticket
from incident_responder.notifications.model import EVENT_KINDS, EventKind

ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
_LABEL_KEY = re.compile(r"^[A-Za-z0-9._/-]{1,100}$")
# Control characters other than tab/newline/CR carry no meaning in any text and break
# terminals and JSON consumers downstream; they are refused, not silently dropped.
_CONTROL_CLASS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
_CONTROL = re.compile(f"[{_CONTROL_CLASS}]")
# What leaves a text blank: whitespace (spelled out as Python's str.isspace() counts it,
# not ``\s``, whose meaning differs between dialects: ECMAScript's, which JSON Schema clients
# use, leaves out U+0085 and adds U+FEFF) and the invisible format characters of the Basic
# Multilingual Plane (zero-width spaces and joiners, bidi marks, the BOM, variation selectors).
_BLANK_CLASS = (
    r"\x09\x0a\x0d\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    r"\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
)
_VISIBLE = f"[^{_CONTROL_CLASS}{_BLANK_CLASS}]"
_NOT_BLANK = re.compile(_VISIBLE)
# The same rules as the validators below, published in the OpenAPI schema so clients (and
# schemathesis) know them; each class excludes the next, so no engine backtracks on them.
_TEXT_PATTERN = f"^[{_BLANK_CLASS}]*{_VISIBLE}[^{_CONTROL_CLASS}]*$"
_PLAIN_PATTERN = f"^[^{_CONTROL_CLASS}]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def _no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (other than tab and newline)")
    return value


def _not_blank(value: str) -> str:
    if not _NOT_BLANK.search(value):
        raise ValueError("must not be blank")
    return value


# Every text of a request is one of these: free text without control characters, or such
# text that must also show something.
PlainText = Annotated[
    str, AfterValidator(_no_control_chars), Field(json_schema_extra={"pattern": _PLAIN_PATTERN})
]
VisibleText = Annotated[
    str,
    AfterValidator(_no_control_chars),
    AfterValidator(_not_blank),
    Field(json_schema_extra={"pattern": _TEXT_PATTERN}),
]


class IncidentIn(_Strict):
    """One incident report: the service it comes from, its log, and optionally a severity, a title
    and labels."""

    service: ServiceName
    log: Annotated[VisibleText, Field(min_length=1)]
    severity: Severity | None = None
    title: Annotated[VisibleText, Field(min_length=1, max_length=200)] | None = None
    labels: Annotated[
        dict[str, Annotated[PlainText, Field(max_length=500)]],
        Field(max_length=50, json_schema_extra={"propertyNames": {"pattern": _LABEL_KEY.pattern}}),
    ] = Field(default_factory=dict)

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
    """Several incident reports in one request, processed in order."""

    incidents: Annotated[list[IncidentIn], Field(min_length=1)]


class BatchOut(BaseModel):
    """The outcome of every report of a batch, in the order they were sent."""

    results: list[IncidentResult]


class CommentIn(_Strict):
    """A comment someone adds to a ticket."""

    author: Annotated[VisibleText, Field(min_length=1, max_length=200)]
    body: Annotated[VisibleText, Field(min_length=1, max_length=20_000)]


class ResolveIn(_Strict):
    """How a ticket was resolved (optional; the body may be left out)."""

    resolution: Annotated[PlainText, Field(max_length=20_000)] | None = None


class MergeIn(_Strict):
    """Which ticket survives a merge."""

    into: Annotated[str, Field(pattern=r"^tkt_[A-Za-z0-9_-]{1,64}$")]


class SplitIn(_Strict):
    """The reports (incident ids) to move to a new ticket: every report of their forms moves."""

    incident_ids: Annotated[
        list[Annotated[str, Field(pattern=r"^inc_[A-Za-z0-9_-]{1,64}$")]],
        Field(min_length=1, max_length=1_000),
    ]


class RunbookIn(_Strict):
    """A runbook to store: Markdown content, searched by its heading sections, with the services
    and tags it is about."""

    title: Annotated[VisibleText, Field(min_length=1, max_length=300)]
    content: Annotated[VisibleText, Field(min_length=1, max_length=1_000_000)]
    services: list[ServiceName] = Field(default_factory=list, max_length=100)
    tags: list[Annotated[VisibleText, Field(min_length=1, max_length=100)]] = Field(
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
    resolved_at: str | None = None
    flapping: bool = False
    flaps: int = 0
    links: dict[str, str] = Field(default_factory=dict)
    source_alerts: list[dict[str, object]] = Field(default_factory=list)
    notified: bool = True
    recommendation_pending: bool = False
    why: list[str] = Field(default_factory=list)  # one line per distinct way reports joined it
    merged_into: str | None = None
    merged_from: list[str] = Field(default_factory=list)
    split_from: str | None = None
    split_off: dict[str, dict[str, str]] = Field(default_factory=dict)
    helpful_votes: int = 0  # people's votes on its recommendation (POST .../feedback)
    unhelpful_votes: int = 0

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
            resolved_at=ticket.resolved_at.isoformat() if ticket.resolved_at else None,
            flapping=ticket.flapping,
            flaps=ticket.flaps,
            links=ticket.links,
            source_alerts=[{"alert": k, **v.model_dump(mode="json")} for k, v in ticket.alerts.items()],
            notified=ticket.announced,
            recommendation_pending=ticket.recommendation_pending,
            why=list(ticket.why.values()),
            merged_into=ticket.merged_into,
            merged_from=ticket.merged_from,
            split_from=ticket.split_from,
            split_off={fp: s.model_dump() for fp, s in ticket.split_off.items()},
            helpful_votes=ticket.helpful_votes,
            unhelpful_votes=ticket.unhelpful_votes,
        )


class SilenceIn(_Strict):
    """A silence to create: which reports (services, labels; none: all) and from when to when."""

    services: list[ServiceName] = Field(default_factory=list, max_length=100)
    labels: Annotated[
        dict[str, Annotated[PlainText, Field(max_length=500)]],
        Field(max_length=50, json_schema_extra={"propertyNames": {"pattern": _LABEL_KEY.pattern}}),
    ] = Field(default_factory=dict)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime
    comment: Annotated[PlainText, Field(max_length=2_000)] = ""

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return IncidentIn._label_keys(value)


class ChannelIn(_Strict):
    """A notification channel: its kind, where it posts, and which events of which services."""

    kind: Literal["slack", "pagerduty", "webhook"]
    url: Annotated[str, Field(max_length=2_000)] = ""  # pagerduty: PagerDuty's enqueue URL when empty
    routing_key: Annotated[PlainText, Field(min_length=1, max_length=200)] | None = None
    secret: Annotated[PlainText, Field(min_length=8, max_length=500)] | None = None
    events: list[EventKind] = Field(default_factory=lambda: list(EVENT_KINDS), min_length=1, max_length=5)
    services: list[ServiceName] = Field(default_factory=list, max_length=500)
    severities: list[Severity] = Field(default_factory=list, max_length=4)


class TicketPage(BaseModel):
    """One page of a ticket listing; ``next_cursor`` asks for the next (null: this is the last)."""

    tickets: list[TicketOut]
    next_cursor: str | None


class RunbookOut(BaseModel):
    """A runbook as stored, with when it was created and last updated."""

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
    """A runbook in a listing (its content left out)."""

    id: str
    title: str
    services: list[str]
    tags: list[str]
    updated_at: str


class RunbookList(BaseModel):
    """Every runbook of the tenant, without their content."""

    runbooks: list[RunbookSummary]


class ErrorDetail(BaseModel):
    """What went wrong: a machine-readable ``code`` and a ``message`` for people."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


def _err(description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


# Documented on every /v1 route so the OpenAPI schema lists every status a client can see.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: _err("malformed request (e.g. invalid JSON)"),
    401: _err("missing or invalid X-API-Key"),
    404: _err("unknown id (also another tenant's id)"),
    409: _err("idempotency or concurrency conflict"),
    413: _err("request body too large"),
    422: _err("the request breaks the schema"),
    429: _err("rate limited; see Retry-After"),
    503: _err("a backing service is down and the request could not even be queued; safe to retry"),
}
