"""The ticket lifecycle: reopening, flapping, late reports, repeats, resolve policies, storm control."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from incident_responder.models import AlertInfo, Ticket
from incident_responder.pipeline.lifecycle import (
    Applied,
    Rules,
    apply_reports,
    open_ticket,
    resolve,
    settle_alerts,
)
from incident_responder.pipeline.occurrence import Occurrence

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
_counter = iter(range(1_000_000))


def _alert(
    fp: str, *, at: datetime | None, status: str = "firing", ends: datetime | None = None
) -> AlertInfo:
    return AlertInfo(source="alertmanager", fingerprint=fp, status=status, starts_at=at, ends_at=ends)  # type: ignore[arg-type]


def _report(alert: AlertInfo | None = None, *, silenced: bool = False) -> Occurrence:
    return Occurrence(
        f"inc_{next(_counter)}", "disk full", "fp", "disk full", "disk full", None, alert, silenced
    )


def _ticket() -> Ticket:
    return Ticket(ticket_id="tkt_1", tenant="acme", service="db", title="disk full", created_at=T0)


DEFAULT = Rules()


def _opened(*reports: Occurrence, rules: Rules = DEFAULT, now: datetime = T0) -> tuple[Ticket, list[str]]:
    ticket = _ticket()
    applied = open_ticket(ticket, list(reports), keep=25, version="v", rules=rules, now=now)
    return ticket, list(applied.events)


def _apply(ticket: Ticket, *reports: Occurrence, rules: Rules = DEFAULT, now: datetime = T0) -> Applied:
    return apply_reports(ticket, list(reports), keep=25, version="v", rules=rules, now=now)


def test_a_new_ticket_is_announced_at_once_by_default() -> None:
    ticket, events = _opened(_report())
    assert events == ["new"] and ticket.announced and ticket.occurrences == 1


@pytest.mark.parametrize(
    ("reports", "gap_s", "announced_after"),
    [
        (3, 10, 3),  # the third report within the window announces it
        (3, 200, None),  # spread wider than the window: never
        (1, 0, 1),  # the default: the first report
    ],
)
def test_storm_control_announces_after_n_reports_within_the_window(
    reports: int, gap_s: int, announced_after: int | None
) -> None:
    rules = Rules(storm_reports=reports, storm_window=timedelta(seconds=300))
    ticket, events = _opened(_report(), rules=rules)
    seen = [events]
    for n in range(1, 4):
        seen.append(_apply(ticket, _report(), rules=rules, now=T0 + timedelta(seconds=gap_s * n)).events)
    firsts = [i + 1 for i, e in enumerate(seen) if "new" in e]
    assert firsts == ([] if announced_after is None else [announced_after])
    assert ticket.occurrences == 4


def test_silenced_reports_do_not_count_toward_the_announcement() -> None:
    rules = Rules(storm_reports=2)
    ticket, events = _opened(_report(silenced=True), rules=rules)
    assert events == [] and not ticket.announced
    assert _apply(ticket, _report(silenced=True), rules=rules).events == []
    assert _apply(ticket, _report(), rules=rules).events == []
    assert _apply(ticket, _report(), rules=rules).events == ["new"]


def test_an_unannounced_ticket_resolves_silently() -> None:
    ticket, _ = _opened(_report(silenced=True))
    assert resolve(ticket, None, at=T0, author="api") == []
    ticket2, _ = _opened(_report())
    assert resolve(ticket2, None, at=T0, author="api") == ["resolved"]


@pytest.mark.parametrize(
    ("fires_again_after", "expected_event", "flapping"),
    [
        (timedelta(minutes=5), "flapping", True),
        (timedelta(minutes=20), "regression", False),
    ],
)
def test_firing_again_after_resolution(
    fires_again_after: timedelta, expected_event: str, flapping: bool
) -> None:
    rules = Rules(flapping_window=timedelta(minutes=15))
    ticket, _ = _opened(_report(_alert("a", at=T0)), rules=rules)
    ended = T0 + timedelta(minutes=10)
    assert settle_alerts(ticket, [_alert("a", at=T0, status="resolved", ends=ended)], rules, ended) == [
        "resolved"
    ]
    assert ticket.status == "resolved" and ticket.resolved_at == ended
    again = ended + fires_again_after
    applied = _apply(ticket, _report(_alert("a", at=again)), rules=rules, now=again)
    assert applied.events == [expected_event]
    assert applied.regressions == [True] and applied.flapping == [flapping]
    assert ticket.status == "open" and ticket.flapping is flapping and ticket.flaps == int(flapping)
    assert ticket.regressions == 1


def test_a_report_that_started_before_the_resolution_never_reopens() -> None:
    ticket, _ = _opened(_report(_alert("a", at=T0)))
    resolve(ticket, "fixed", at=T0 + timedelta(minutes=10), author="api")
    late = _report(_alert("b", at=T0 + timedelta(minutes=5)))  # began before the resolution
    applied = _apply(ticket, late, now=T0 + timedelta(minutes=30))
    assert applied.regressions == [False] and applied.events == []
    assert ticket.status == "resolved" and ticket.occurrences == 2  # counted, not reopening


def test_a_plain_report_after_resolution_is_a_regression() -> None:
    ticket, _ = _opened(_report())
    resolve(ticket, None, at=T0, author="api")
    applied = _apply(ticket, _report(), now=T0 + timedelta(minutes=1))
    assert applied.events == ["regression"] and ticket.status == "open" and not ticket.flapping


def test_a_repeat_notification_adds_nothing() -> None:
    ticket, _ = _opened(_report(_alert("a", at=T0)))
    applied = _apply(ticket, _report(_alert("a", at=T0)))
    assert applied.fresh == 0 and applied.events == [] and ticket.occurrences == 1
    # the same alert starting again (a new start) counts
    assert _apply(ticket, _report(_alert("a", at=T0 + timedelta(hours=1)))).fresh == 1


@pytest.mark.parametrize(
    ("policy", "resolved_after_first", "resolved_after_second"),
    [("all", False, True), ("first", True, True), ("never", False, False)],
)
def test_resolve_policies(policy: str, resolved_after_first: bool, resolved_after_second: bool) -> None:
    rules = Rules(resolve_policy=policy)  # type: ignore[arg-type]
    ticket, _ = _opened(_report(_alert("a", at=T0)), _report(_alert("b", at=T0)), rules=rules)
    assert set(ticket.alerts) == {"alertmanager:a", "alertmanager:b"}
    settle_alerts(ticket, [_alert("a", at=T0, status="resolved", ends=T0)], rules, T0)
    assert (ticket.status == "resolved") is resolved_after_first
    settle_alerts(ticket, [_alert("b", at=T0, status="resolved", ends=T0)], rules, T0)
    assert (ticket.status == "resolved") is resolved_after_second
    assert all(s.status == "resolved" for s in ticket.alerts.values())


def test_the_end_of_an_earlier_firing_does_not_settle_the_current_one() -> None:
    ticket, _ = _opened(_report(_alert("a", at=T0 + timedelta(hours=1))))
    assert settle_alerts(ticket, [_alert("a", at=T0, status="resolved", ends=T0)], Rules(), T0) == []
    assert ticket.status == "open" and ticket.alerts["alertmanager:a"].status == "firing"


def test_an_untracked_alert_resolving_changes_nothing() -> None:
    ticket, _ = _opened(_report(_alert("a", at=T0)))
    assert settle_alerts(ticket, [_alert("zzz", at=T0, status="resolved")], Rules(), T0) == []
    assert ticket.status == "open"


def test_tracked_alerts_are_bounded_resolved_ones_forgotten_first() -> None:
    rules = Rules(max_alerts=3)
    ticket, _ = _opened(_report(_alert("a", at=T0)), rules=rules)
    _apply(ticket, _report(_alert("b", at=T0)), _report(_alert("c", at=T0)), rules=rules)
    settle_alerts(ticket, [_alert("b", at=T0, status="resolved")], Rules(resolve_policy="never"), T0)
    _apply(ticket, _report(_alert("d", at=T0)), rules=rules)
    assert list(ticket.alerts) == ["alertmanager:a", "alertmanager:c", "alertmanager:d"]
    _apply(ticket, _report(_alert("e", at=T0)), rules=rules)
    assert list(ticket.alerts) == ["alertmanager:c", "alertmanager:d", "alertmanager:e"]


def test_the_source_links_are_kept_newest_per_name() -> None:
    first = _alert("a", at=T0)
    first.links.update({"source": "http://prom/1", "runbook": "https://rb/1"})
    ticket, _ = _opened(_report(first))
    second = _alert("b", at=T0)
    second.links.update({"source": "http://prom/2"})
    _apply(ticket, _report(second))
    assert ticket.links == {"source": "http://prom/2", "runbook": "https://rb/1"}
