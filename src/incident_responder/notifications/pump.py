"""The event pump: ticket events -> one outbox message per channel that wants them.

Events are written in the group commit of the ticket write that caused them, so a crash
between a ticket write and its notification loses nothing: the pump finds the event at its
next pass. It renders each event from the ticket as it stands then, puts the messages (their
ids derived from event and channel: putting them twice stores them once) and only then
removes the event, so a crash between the two sends nothing twice.

Pacing, per ticket: a new ticket's event waits while an LLM's recommendation is still to come,
up to the tenant's ``recommendation_wait``; after a message about a ticket, its next events
wait until ``update_interval`` has passed, and those that piled up meanwhile go out as one
message (the latest state: a storm of changes sends one message per interval, not one per
change).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import structlog

from incident_responder.errors import NotFound
from incident_responder.ids import message_id
from incident_responder.lru import LruCache
from incident_responder.models import Ticket
from incident_responder.notifications.channels import ChannelBook
from incident_responder.notifications.events import EventLog
from incident_responder.notifications.model import (
    Channel,
    ChannelKind,
    Notice,
    NoticeKind,
    OutboxMessage,
    RunbookLink,
    TicketEvent,
)
from incident_responder.observability.metrics import Metrics
from incident_responder.policies import PolicyBook
from incident_responder.ports import Notifier, Outbox
from incident_responder.repositories import TicketRepository

log = structlog.get_logger(__name__)
STEPS_SHOWN = 3  # of the recommendation, in a message
EVENTS_PER_PASS = 200  # of one tenant, per pass


class EventPump:
    """Turns a tenant's pending ticket events into outbox messages (blocking)."""

    def __init__(
        self,
        *,
        events: EventLog,
        tickets: TicketRepository,
        channels: ChannelBook,
        policies: PolicyBook,
        outbox: Outbox,
        notifier_for: Callable[[ChannelKind], Notifier],
        metrics: Metrics,
        public_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._events = events
        self._tickets = tickets
        self._channels = channels
        self._policies = policies
        self._outbox = outbox
        self._notifier_for = notifier_for
        self._metrics = metrics
        self._public_url = public_url.rstrip("/")
        self._clock = clock
        # When this process last notified about a ticket (another replica's messages are not
        # seen: with several, a ticket's pace is per replica).
        self._last_sent: LruCache[tuple[str, str], float] = LruCache(100_000)

    def pump(self, tenant: str) -> tuple[int, float | None]:
        """Turn the tenant's due events into messages; (messages put, seconds until the next
        held event is due, None if none is held)."""
        pending = self._events.pending(tenant, EVENTS_PER_PASS)
        if not pending:
            return 0, None
        policy = self._policies.get(tenant)
        now = self._clock()
        by_ticket: dict[str, list[TicketEvent]] = {}
        for event in pending:
            by_ticket.setdefault(event.ticket_id, []).append(event)
        put, wake = 0, None
        for ticket_id, events in by_ticket.items():
            try:
                ticket, _ = self._tickets.get(tenant, ticket_id)
            except NotFound:  # the ticket is gone: nobody is to hear of it
                for event in events:
                    self._events.remove(event)
                continue
            due = self._due_at(tenant, ticket, events, policy.update_interval, policy.recommendation_wait)
            if due > now:
                wake = due - now if wake is None else min(wake, due - now)
                continue
            latest = events[-1]  # what piled up goes out as one message: the latest state
            messages = self._messages(ticket, latest, now)
            if messages:
                self._outbox.put(messages)
                self._last_sent.put((tenant, ticket_id), now)
                put += len(messages)
            for event in events:
                self._metrics.events_pumped.labels(event.kind).inc()
                self._events.remove(event)
        return put, wake

    def _due_at(
        self, tenant: str, ticket: Ticket, events: list[TicketEvent], interval: float, wait: float
    ) -> float:
        """When the ticket's pending events may go out."""
        due = 0.0
        if ticket.recommendation_pending and any(e.kind == "new" for e in events):
            due = max(due, events[0].at.timestamp() + wait)
        last = self._last_sent.get((tenant, ticket.ticket_id))
        if last is not None:
            due = max(due, last + interval)
        return due

    def _messages(self, ticket: Ticket, event: TicketEvent, now: float) -> list[OutboxMessage]:
        out = []
        for channel in self._channels.all(ticket.tenant).values():
            if not channel.wants(event.kind, ticket.service, ticket.severity):
                continue
            notice = self.notice(ticket, event.kind, message_id(event.event_id, channel.channel_id), event.at)
            notice.merged_into = event.merged_into
            message = self.message(channel, notice, now)
            if message is not None:
                out.append(message)
        return out

    def message(self, channel: Channel, notice: Notice, now: float) -> OutboxMessage | None:
        """The outbox message that delivers ``notice`` to ``channel`` (None: it cannot be rendered)."""
        try:
            rendered = self._notifier_for(channel.kind).render(channel, notice)
        except ValueError as exc:  # a channel the API should have refused: logged, skipped
            log.error("notify.render_failed", channel=channel.channel_id, error=str(exc))
            return None
        return OutboxMessage(
            message_id=notice.message_id,
            tenant=notice.tenant,
            channel_id=channel.channel_id,
            channel_kind=channel.kind,
            kind=notice.kind,
            ticket_id=notice.ticket_id,
            url=rendered.url,
            body=rendered.body,
            headers=rendered.headers,
            created_at=now,
            next_at=now,
        )

    def notice(self, ticket: Ticket, kind: NoticeKind, message: str, at: datetime) -> Notice:
        """What a message about ``ticket`` says."""
        recommendation = ticket.recommendation
        runbooks = [RunbookLink(id=r.id, title=r.title) for r in ticket.runbooks]
        if "runbook" in ticket.links:
            runbooks.insert(
                0, RunbookLink(id="source", title="runbook from the alert", url=ticket.links["runbook"])
            )
        links = {k: v for k, v in ticket.links.items() if k != "runbook"}
        if self._public_url:
            links["ticket"] = f"{self._public_url}/ui/#/tickets/{ticket.ticket_id}"
        return Notice(
            message_id=message,
            kind=kind,
            tenant=ticket.tenant,
            ticket_id=ticket.ticket_id,
            service=ticket.service,
            title=ticket.title,
            status=ticket.status,
            severity=ticket.severity,
            occurrences=ticket.occurrences,
            regressions=ticket.regressions,
            flapping=ticket.flapping,
            created_at=ticket.created_at,
            at=at,
            summary=recommendation.summary if recommendation else None,
            steps=list(recommendation.steps[:STEPS_SHOWN]) if recommendation else [],
            recommendation_source=recommendation.source if recommendation else None,
            runbooks=runbooks,
            links=links,
            labels=ticket.labels,
        )
