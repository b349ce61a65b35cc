"""Domain types shared by every stage. No HTTP, no I/O: plain pydantic models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Severity = Literal["critical", "high", "medium", "low"]
TicketStatus = Literal["open", "resolved", "merged"]
Outcome = Literal["new", "existing", "regression", "queued", "resolved"]
AlertSourceName = Literal["alertmanager", "grafana"]
AlertStatus = Literal["firing", "resolved"]
MatchMethod = Literal["fingerprint", "template", "semantic", "alert", "correction"]
CorrectionKind = Literal["merge", "split"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class AlertInfo(BaseModel):
    """The source's own identity of a report that an alert source sent: which alert it is
    (``fingerprint``), its own status and times, and the source's links about it."""

    source: AlertSourceName
    fingerprint: str
    status: AlertStatus = "firing"
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    links: dict[str, str] = Field(default_factory=dict)  # source, silence, dashboard, panel, image, runbook

    @property
    def key(self) -> str:
        """The alert's identity across sources: ``<source>:<fingerprint>``."""
        return f"{self.source}:{self.fingerprint}"


class IncidentReport(BaseModel):
    """One report as it arrived (already validated by the API layer)."""

    service: str
    log: str
    severity: Severity | None = None
    title: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    alert: AlertInfo | None = None  # set when an alert source sent it


class Runbook(BaseModel):
    """A tenant's runbook: Markdown content, searched by its heading sections; its tags and
    services are searched too."""

    id: str
    title: str
    content: str
    services: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RunbookChunk(BaseModel):
    """A heading-delimited section of a runbook: the unit that is embedded and searched."""

    runbook_id: str
    chunk_no: int
    heading: str
    text: str


class RunbookHit(BaseModel):
    """A runbook (not a chunk) ranked for an incident."""

    id: str
    title: str
    score: float


class Recommendation(BaseModel):
    """Suggested steps for an incident, with a summary, the runbooks they cite and the recommender
    that wrote them (``source``)."""

    summary: str
    steps: list[str]
    source: str
    runbook_ids: list[str] = Field(default_factory=list)
    variant: str | None = None  # the recommender A/B's arm ("A", "B") its ticket is in; None: no experiment


class Comment(BaseModel):
    """An entry of a ticket's history: a comment someone added, or an occurrence, regression or
    resolution the service recorded."""

    kind: Literal["comment", "occurrence", "regression", "resolution", "correction"] = "comment"
    author: str
    body: str
    created_at: datetime = Field(default_factory=utcnow)
    incident_id: str | None = None
    fingerprint: str | None = None  # an occurrence's: which of the ticket's forms it had


class Match(BaseModel):
    """Why a report was put in the ticket it was put in: by which evidence (``method``), its
    score against the ``threshold`` it had to pass, the matched ticket's template, the report's
    own template and the tokens in which the two differ."""

    method: MatchMethod
    template: str
    similarity: float
    threshold: float | None = None
    report_template: str | None = None
    differing_tokens: list[str] = Field(default_factory=list)


class Signature(BaseModel):
    """A distinct normalized form of the reports in a ticket; each has one vector."""

    template: str
    embed_text: str
    normalizer_version: str = ""  # the rules that made it ("": the ticket's own version)
    service: str | None = None  # the service whose reports have it (None: the ticket's own)
    via: CorrectionKind | None = None  # a person's merge or split brought it here


class SplitOff(BaseModel):
    """A form a person split off a ticket: reports like it never join that ticket again."""

    template: str
    into: str  # the ticket it went to


class AlertState(BaseModel):
    """A source alert that joined a ticket, as the ticket last heard of it."""

    status: AlertStatus
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    incident_id: str | None = None  # the report that last started it


class Ticket(BaseModel):
    """The reports of one tenant+service taken for the same problem: its status, runbooks,
    recommendation and history, and the normalized forms indexed for it (``signatures``)."""

    ticket_id: str
    tenant: str
    service: str
    status: TicketStatus = "open"
    title: str
    severity: Severity | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    occurrences: int = 1
    regressions: int = 0
    comments: list[Comment] = Field(default_factory=list)
    runbooks: list[RunbookHit] = Field(default_factory=list)
    recommendation: Recommendation | None = None
    resolution: str | None = None
    # Distinct normalized forms merged here, keyed by fingerprint; each one has a
    # vector in the index (point id derived from ticket id + fingerprint), so the
    # index can always be rebuilt from tickets alone.
    signatures: dict[str, Signature] = Field(default_factory=dict)
    normalizer_version: str = ""
    version: int = 0
    resolved_at: datetime | None = None
    flapping: bool = False  # its last reopening came within the flapping window of its resolution
    flaps: int = 0
    # Source alerts that joined it, by AlertInfo.key, oldest first (bounded; see pipeline.lifecycle).
    alerts: dict[str, AlertState] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict)  # the source's links, newest per name
    # Notified as new (storm control may hold that back); tickets from before it existed were.
    announced: bool = True
    storm_since: datetime | None = None
    storm_count: int = 0
    recommendation_pending: bool = False  # an LLM's recommendation is still to come
    # Votes on its recommendation (POST /v1/tickets/{id}/feedback): the newest FEEDBACK_KEPT
    # are kept, the counts stay exact.
    feedback: list[Feedback] = Field(default_factory=list)
    helpful_votes: int = 0
    unhelpful_votes: int = 0
    # One line per distinct way reports joined it (method and form), oldest first, bounded.
    why: dict[str, str] = Field(default_factory=dict)
    merged_into: str | None = None  # status "merged": the ticket that holds its reports now
    merged_from: list[str] = Field(default_factory=list)  # tickets merged into this one
    split_from: str | None = None  # the ticket this one was split off
    # Forms split off this ticket (fingerprint -> where they went): never joined again.
    split_off: dict[str, SplitOff] = Field(default_factory=dict)


class IncidentResult(BaseModel):
    """The outcome of one report: the API response body, also stored for GET."""

    incident_id: str
    ticket_id: str | None
    status: Outcome
    fingerprint: str | None = None  # of the report's normalized form (what a split moves)
    matched_ticket_id: str | None = None
    similarity: float | None = None
    match: Match | None = None
    related_ticket_ids: list[str] = Field(default_factory=list)
    runbooks: list[RunbookHit] = Field(default_factory=list)
    recommendation: Recommendation | None = None
    silenced: bool = False  # matched an active silence: recorded, notifies nobody
    flapping: bool = False  # reopened its ticket within the flapping window


class IdempotencyRecord(BaseModel):
    """The response given to a request that carried an Idempotency-Key."""

    request_hash: str
    status_code: int
    body: dict[str, Any]
    created_at: datetime


class DeadLetter(BaseModel):
    """A report waiting in the dead-letter queue."""

    incident_id: str
    tenant: str
    report: IncidentReport
    enqueued_at: float
    attempts: int = 0
    last_error: str = ""
    done: bool = False


FEEDBACK_KEPT = 200  # votes a ticket keeps, newest last (its vote counts stay exact)
FEEDBACK_COMMENT_CHARS = 2_000  # longest comment of a vote


class Feedback(BaseModel):
    """A person's vote on a ticket's recommendation: helpful or not, optionally why and who, and
    which recommendation it was about (its ``source`` and recommender A/B ``variant``)."""

    helpful: bool
    comment: str | None = Field(None, max_length=FEEDBACK_COMMENT_CHARS)
    author: str | None = None
    variant: str | None = None
    source: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


Ticket.model_rebuild()  # its ``feedback`` names Feedback, defined after it
