"""How a ticket's state follows its reports: counting, reopening, flapping, resolving, announcing.

Pure functions over a ticket in memory; the ticket desk calls them inside its
compare-and-swap rounds and writes what they changed (and the events they return) as one
group commit.

- A report reopens a resolved ticket (a **regression**), except that an alert which fires
  again within the tenant's flapping window after the ticket resolved marks it
  **flapping** instead, and a report that started before the resolution (a late delivery,
  a retried notification) never reopens it.
- A source alert's repeat notification (same fingerprint, same start, still firing) and a
  report the ticket already counted (a replay) add nothing.
- A ticket is **announced** (event ``new``) once ``storm_reports`` reports not silenced have
  arrived within ``storm_window`` of the first of them (1: at once); until then nothing
  about it is notified. Events of an announced ticket follow each change.
- Source alerts that resolve settle the ticket by the tenant's resolve policy: ``all`` once
  every source alert that joined it has resolved, ``first`` at the first, ``never``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from incident_responder.models import AlertInfo, AlertState, Comment, Signature, Ticket
from incident_responder.notifications.model import EventKind
from incident_responder.pipeline.occurrence import Occurrence

ResolvePolicy = Literal["all", "first", "never"]
SYSTEM_AUTHOR = "incident-responder"
MAX_WHY = 50  # lines of why a ticket keeps (one per distinct way reports joined it)


@dataclass(frozen=True)
class Rules:
    """What the lifecycle of one tenant's tickets of one service obeys."""

    flapping_window: timedelta = timedelta(minutes=15)
    storm_reports: int = 1  # reports within storm_window before a new ticket is announced
    storm_window: timedelta = timedelta(minutes=5)
    resolve_policy: ResolvePolicy = "all"
    max_alerts: int = 200  # source alerts a ticket tracks (resolved ones forgotten first)


DEFAULT_RULES = Rules()


@dataclass
class Applied:
    """What :func:`apply_reports` did, per report in order and in total."""

    regressions: list[bool] = field(default_factory=list)  # the report reopened the ticket
    flapping: list[bool] = field(default_factory=list)  # ... as flapping
    new_templates: list[Occurrence] = field(default_factory=list)  # forms the ticket had not seen
    new_alerts: list[AlertInfo] = field(default_factory=list)  # source alerts joining it now
    events: list[EventKind] = field(default_factory=list)
    fresh: int = 0  # reports counted (not replays or repeats)


def open_ticket(
    ticket: Ticket, reports: Sequence[Occurrence], *, keep: int, version: str, rules: Rules, now: datetime
) -> Applied:
    """Set up a ticket that ``reports[0]`` opens (its signature already set) and the others
    joined before it was written."""
    first = reports[0]
    ticket.comments.append(_occurrence_comment(first, regression=False))
    _explain(ticket, first)
    applied = Applied(regressions=[False], flapping=[False], fresh=1)
    ticket.announced = False
    _track_alert(ticket, first, rules, applied)
    _count_for_announcement(ticket, first, rules, now, applied)
    rest = apply_reports(ticket, reports[1:], keep=keep, version=version, rules=rules, now=now)
    applied.regressions += rest.regressions
    applied.flapping += rest.flapping
    applied.new_templates += rest.new_templates
    applied.new_alerts += rest.new_alerts
    applied.events += rest.events
    applied.fresh += rest.fresh
    return applied


def apply_reports(
    ticket: Ticket,
    reports: Sequence[Occurrence],
    *,
    keep: int,
    version: str,
    rules: Rules,
    now: datetime,
) -> Applied:
    """Add ``reports`` (normalized by the rules of ``version``) to ``ticket`` in memory, skipping
    replays and source repeats; then keep its newest ``keep`` occurrence comments."""
    counted = {c.incident_id for c in ticket.comments if c.incident_id}
    applied = Applied()
    for report in reports:
        if (report.incident_id and report.incident_id in counted) or _is_repeat(ticket, report):
            applied.regressions.append(False)
            applied.flapping.append(False)
            continue
        counted.add(report.incident_id)
        applied.fresh += 1
        reopen = ticket.status == "resolved" and not _started_before_resolution(ticket, report)
        flapping = reopen and _flapping(ticket, report, rules)
        applied.regressions.append(reopen)
        applied.flapping.append(flapping)
        ticket.occurrences += 1
        if reopen:
            ticket.status = "open"
            ticket.regressions += 1
            ticket.resolution = None
            ticket.flapping = flapping
            ticket.flaps += flapping
            if ticket.announced and not report.silenced:
                applied.events.append("flapping" if flapping else "regression")
        ticket.comments.append(_occurrence_comment(report, regression=reopen))
        _explain(ticket, report)
        if report.fingerprint not in ticket.signatures:
            ticket.signatures[report.fingerprint] = Signature(
                template=report.template,
                embed_text=report.embed_text,
                normalizer_version=version,
                service=report.service if report.service != ticket.service else None,
            )
            applied.new_templates.append(report)
        _track_alert(ticket, report, rules, applied)
        _count_for_announcement(ticket, report, rules, now, applied)
    _trim_occurrences(ticket, keep)
    return applied


def settle_alerts(ticket: Ticket, marks: Sequence[AlertInfo], rules: Rules, now: datetime) -> list[EventKind]:
    """Record that the source alerts ``marks`` resolved; resolve the ticket if the resolve
    policy says so. The events to notify (``resolved``, if it resolved and was announced)."""
    ended: list[datetime] = []
    for mark in marks:
        state = ticket.alerts.get(mark.key)
        if state is None or state.status == "resolved":
            continue  # not tracked (never joined, or forgotten), or already settled
        if mark.starts_at is not None and state.starts_at is not None and mark.starts_at < state.starts_at:
            continue  # the end of an earlier firing of the alert, delivered late
        state.status = "resolved"
        state.ends_at = min(mark.ends_at or now, now)
        ended.append(state.ends_at)
    if not ended or ticket.status != "open":
        return []
    if rules.resolve_policy == "never":
        return []
    if rules.resolve_policy == "all" and any(s.status == "firing" for s in ticket.alerts.values()):
        return []
    source = marks[0].source
    which = "every source alert" if rules.resolve_policy == "all" else "a source alert"
    return resolve(ticket, f"{which} resolved ({source})", at=max(ended), author=source)


def resolve(ticket: Ticket, resolution: str | None, *, at: datetime, author: str) -> list[EventKind]:
    """Resolve ``ticket`` as of ``at``; the events to notify."""
    ticket.status = "resolved"
    ticket.resolution = resolution
    ticket.resolved_at = at
    ticket.comments.append(Comment(kind="resolution", author=author, body=resolution or "resolved"))
    return ["resolved"] if ticket.announced else []


def _occurrence_comment(report: Occurrence, *, regression: bool) -> Comment:
    return Comment(
        kind="regression" if regression else "occurrence",
        author=SYSTEM_AUTHOR,
        body=report.log,
        incident_id=report.incident_id,
        fingerprint=report.fingerprint,
    )


def _explain(ticket: Ticket, report: Occurrence) -> None:
    """Keep the report's line of why, if it joined in a way the ticket has no line for yet."""
    if report.why is not None and report.why[0] not in ticket.why and len(ticket.why) < MAX_WHY:
        ticket.why[report.why[0]] = report.why[1]


def _is_repeat(ticket: Ticket, report: Occurrence) -> bool:
    """A source alert's notification that repeats what the ticket already holds."""
    alert = report.alert
    if alert is None:
        return False
    state = ticket.alerts.get(alert.key)
    return state is not None and state.status == "firing" and state.starts_at == alert.starts_at


def _started_before_resolution(ticket: Ticket, report: Occurrence) -> bool:
    """A report of something that began before the ticket resolved: it never reopens it."""
    started = report.alert.starts_at if report.alert is not None else None
    return started is not None and ticket.resolved_at is not None and started < ticket.resolved_at


def _flapping(ticket: Ticket, report: Occurrence, rules: Rules) -> bool:
    alert = report.alert
    if alert is None or ticket.resolved_at is None:
        return False
    started = alert.starts_at or ticket.resolved_at
    return started - ticket.resolved_at <= rules.flapping_window


def _track_alert(ticket: Ticket, report: Occurrence, rules: Rules, applied: Applied) -> None:
    alert = report.alert
    if alert is None:
        return
    if alert.key not in ticket.alerts:
        applied.new_alerts.append(alert)
    ticket.alerts.pop(alert.key, None)  # re-inserted last: the map stays oldest first
    ticket.alerts[alert.key] = AlertState(
        status="firing", starts_at=alert.starts_at, incident_id=report.incident_id
    )
    ticket.links.update(alert.links)
    excess = len(ticket.alerts) - rules.max_alerts
    if excess > 0:  # forget resolved alerts first, then the oldest firing (sorted() is stable)
        for key in sorted(ticket.alerts, key=lambda k: ticket.alerts[k].status == "firing")[:excess]:
            del ticket.alerts[key]


def _count_for_announcement(
    ticket: Ticket, report: Occurrence, rules: Rules, now: datetime, applied: Applied
) -> None:
    if ticket.announced or report.silenced:
        return
    if ticket.storm_since is None or now - ticket.storm_since > rules.storm_window:
        ticket.storm_since, ticket.storm_count = now, 0
    ticket.storm_count += 1
    if ticket.storm_count >= rules.storm_reports:
        ticket.announced = True
        applied.events.append("new")


def _trim_occurrences(ticket: Ticket, keep: int) -> None:
    occurrences = [c for c in ticket.comments if c.kind in ("occurrence", "regression")]
    excess = len(occurrences) - keep
    if excess > 0:
        drop = {id(c) for c in occurrences[:excess]}
        ticket.comments = [c for c in ticket.comments if id(c) not in drop]
