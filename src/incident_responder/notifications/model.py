"""What notifications are made of: ticket events, channels, notices and outbox messages.

A ticket write that changes what people should know (a new ticket announced, a regression,
flapping, a resolution, a merge) records a :class:`TicketEvent` in the same group commit.
The event pump turns each event into one :class:`OutboxMessage` per matching
:class:`Channel`, rendered by that channel kind's notifier from a :class:`Notice` (the event
and the ticket as it stood); the dispatcher delivers them at least once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, Field

from incident_responder.models import Severity, utcnow

EventKind = Literal["new", "regression", "flapping", "resolved", "merged"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
NoticeKind = Literal["new", "regression", "flapping", "resolved", "merged", "test"]
ChannelKind = Literal["slack", "pagerduty", "webhook"]
MessageState = Literal["pending", "sent", "dead"]
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
# What pages: a flapping ticket is not paged again (a PagerDuty channel wants these by default).
PAGING_EVENTS: tuple[EventKind, ...] = ("new", "regression", "resolved", "merged")


def default_events(kind: ChannelKind) -> list[EventKind]:
    """The events a channel of ``kind`` gets when it names none."""
    return list(PAGING_EVENTS if kind == "pagerduty" else EVENT_KINDS)


class TicketEvent(BaseModel):
    """Something people should hear about a ticket, recorded with the ticket write that caused it."""

    event_id: str  # time-ordered: events of a tenant sort in the order they happened
    tenant: str
    ticket_id: str
    kind: EventKind
    service: str
    severity: Severity | None = None
    at: datetime = Field(default_factory=utcnow)
    merged_into: str | None = None


class Channel(BaseModel):
    """Where a tenant's notifications go: a Slack incoming webhook, a PagerDuty Events API v2
    integration or a signed generic webhook, with the events and services it wants."""

    channel_id: str
    kind: ChannelKind
    url: str = ""  # pagerduty: PagerDuty's enqueue URL when empty
    routing_key: str | None = None  # pagerduty
    secret: str | None = None  # webhook signing key ("whsec_<base64>" or any text)
    events: list[EventKind] = Field(default_factory=lambda: list(EVENT_KINDS))
    services: list[str] = Field(default_factory=list)  # empty: every service
    severities: list[Severity] = Field(default_factory=list)  # empty: every severity
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def wants(self, kind: EventKind, service: str, severity: Severity | None) -> bool:
        """Whether an event of ``kind`` about a ticket of ``service`` at ``severity`` goes here."""
        if kind not in self.events:
            return False
        if self.services and service not in self.services:
            return False
        return not self.severities or (severity is not None and severity in self.severities)


class RunbookLink(BaseModel):
    """A runbook named in a notice: our id and title, and a link when one is known."""

    id: str
    title: str
    url: str | None = None


class Notice(BaseModel):
    """What one notification says: the event and the ticket as it stood when it was rendered.
    Every notifier renders from this alone."""

    message_id: str  # stable: the same on every delivery attempt (receivers dedupe on it)
    kind: NoticeKind
    tenant: str
    ticket_id: str
    service: str
    title: str
    status: str  # the ticket's: open, resolved, merged
    severity: Severity | None = None
    occurrences: int = 1
    regressions: int = 0
    flapping: bool = False
    created_at: datetime
    at: datetime  # when the event happened
    summary: str | None = None  # the recommendation's
    steps: list[str] = Field(default_factory=list)  # its first steps
    recommendation_source: str | None = None
    runbooks: list[RunbookLink] = Field(default_factory=list)
    # name -> URL: source, silence, dashboard, panel, image, runbook, ticket
    links: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    merged_into: str | None = None


class Rendered(BaseModel):
    """A notification ready to send: where, the exact body, and its fixed headers."""

    url: str
    body: str  # JSON text, sent byte for byte on every attempt
    headers: dict[str, str] = Field(default_factory=dict)


class OutboxMessage(BaseModel):
    """One notification to one channel, kept durably until delivered or given up.

    Messages of one stream (tenant, channel, ticket) are delivered in the order they were
    put: the next is handed out only once the one before is sent or given up."""

    message_id: str
    tenant: str
    channel_id: str
    channel_kind: ChannelKind
    kind: NoticeKind
    ticket_id: str
    url: str
    body: str
    headers: dict[str, str] = Field(default_factory=dict)
    created_at: float  # unix seconds
    next_at: float  # not handed out before this (unix seconds)
    attempts: int = 0
    last_error: str = ""
    state: MessageState = "pending"

    @property
    def stream(self) -> tuple[str, str, str]:
        return (self.tenant, self.channel_id, self.ticket_id)
