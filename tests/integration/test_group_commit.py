"""Repeats are written by group commit: one write per ticket per group, ordered, durable,
and every failure still ends in an answer (joined, re-decided or queued)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from incident_responder.backends import build_backends, build_object_store
from incident_responder.container import Services, build_services
from incident_responder.models import Comment, IncidentReport, Ticket
from incident_responder.pipeline.ticketing import MAX_OCCURRENCE_COMMENTS
from incident_responder.ports import Embedder, VectorFilter
from incident_responder.repositories import TicketRepository
from incident_responder.settings import Settings
from tests.faults.flaky import GroupWritesDown
from tests.helpers import metric_total


def _line(i: int) -> str:
    return (
        f"2026-11-20T10:00:{i % 60:02d}Z ERROR api[{1000 + i}]: upstream 10.0.{i % 250}.7 refused connection"
    )


def _report(i: int) -> IncidentReport:
    return IncidentReport(service="api", log=_line(i))


def _put_many_calls(services: Services) -> float:
    return metric_total(services.metrics.registry, "ir_backend_calls_total", operation="put_many")


async def test_concurrent_repeats_share_writes_and_all_count(make_services: Callable[..., Services]) -> None:
    services = make_services()
    first = await services.responder.handle("acme", _report(0))
    assert first.status == "new"
    before = _put_many_calls(services)
    results = await asyncio.gather(*(services.responder.handle("acme", _report(i)) for i in range(1, 41)))
    assert {r.status for r in results} == {"existing"}
    assert {r.ticket_id for r in results} == {first.ticket_id}
    assert all(r.match is not None and r.match.method == "fingerprint" for r in results)
    # 40 repeats, one put_many per group (its tickets, then their incident records): far
    # fewer than 40 writes.
    groups = _put_many_calls(services) - before
    assert 1 <= groups < 40
    assert first.ticket_id is not None
    ticket, _ = services.tickets.get("acme", first.ticket_id)
    assert ticket.occurrences == 41
    kept = [c.incident_id for c in ticket.comments]
    assert len(set(kept)) == len(kept) == MAX_OCCURRENCE_COMMENTS  # the newest, each once
    for r in results:  # every outcome is stored and can be looked up
        assert (await services.responder.lookup("acme", r.incident_id)).ticket_id == first.ticket_id


async def test_batch_on_a_resolved_ticket_reopens_once_in_order(
    make_services: Callable[..., Services],
) -> None:
    services = make_services()
    first = await services.responder.handle("acme", _report(0))
    assert first.ticket_id is not None
    services.desk.resolve("acme", first.ticket_id, "fixed")
    results = await services.responder.handle_batch("acme", [_report(i) for i in range(1, 5)])
    assert [r.status for r in results] == ["regression", "existing", "existing", "existing"]
    ticket, _ = services.tickets.get("acme", first.ticket_id)
    assert (ticket.status, ticket.regressions, ticket.occurrences) == ("open", 1, 5)
    kinds = [c.kind for c in ticket.comments if c.incident_id in {r.incident_id for r in results}]
    assert kinds == ["regression", "occurrence", "occurrence", "occurrence"]


async def test_repeat_of_a_vanished_ticket_is_decided_again(make_services: Callable[..., Services]) -> None:
    services = make_services()
    first = await services.responder.handle("acme", _report(0))
    assert first.ticket_id is not None
    # The ticket and its vector disappear behind the cached fingerprint (as when reconcile
    # undoes an interrupted creation in another process).
    services.backends.objects.delete(services.tickets.key("acme", first.ticket_id))
    services.backends.index.delete(VectorFilter({"tenant": "acme", "ticket_id": first.ticket_id}))
    again = await services.responder.handle("acme", _report(1))
    assert again.status == "new" and again.ticket_id != first.ticket_id
    third = await services.responder.handle("acme", _report(2))
    assert third.status == "existing" and third.ticket_id == again.ticket_id


async def test_store_down_during_group_commit_queues_and_replay_counts_once(
    make_settings: Callable[..., Settings], embedder: Embedder
) -> None:
    settings = make_settings(reliability={"retry_attempts": 1})
    # A group that fails half-way: its ticket write lands, the incident records after it do
    # not (a disk that fills up between the renames).
    faulty = GroupWritesDown(
        build_object_store(settings.tickets, settings.data_dir),
        lambda w: "/incidents/" in w.key,
        "writing incident records",
        partial=True,
    )
    backends = build_backends(settings, embedder=embedder, objects=faulty)
    services = build_services(settings, backends=backends)
    try:
        first = await services.responder.handle("acme", _report(0))
        assert first.ticket_id is not None
        # The ticket write lands, the incident records do not: the reports are queued durably.
        faulty.down = True
        queued = await services.responder.handle_batch("acme", [_report(1), _report(2)])
        assert [r.status for r in queued] == ["queued", "queued"] and faulty.refused == 1
        faulty.down = False
        applied, waiting = await services.replay_dead_letters()
        assert (applied, waiting) == (2, 0)
        ticket, _ = services.tickets.get("acme", first.ticket_id)
        assert ticket.occurrences == 3  # the landed ticket write is not counted twice by the replay
        for r in queued:
            got = await services.responder.lookup("acme", r.incident_id)
            assert got.status == "existing" and got.ticket_id == first.ticket_id
    finally:
        services.close()


async def test_naive_mode_writes_one_repeat_per_group(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    services = make_services(make_settings(performance={"naive": True}))
    first = await services.responder.handle("acme", _report(0))
    before = _put_many_calls(services)
    results = await asyncio.gather(*(services.responder.handle("acme", _report(i)) for i in range(1, 6)))
    assert {r.ticket_id for r in results} == {first.ticket_id}
    assert _put_many_calls(services) - before == 5


def _ticket_cache(services: Services, result: str) -> float:
    return metric_total(services.metrics.registry, "ir_cache_lookups_total", cache="ticket", result=result)


async def test_kept_tickets_skip_parsing_and_never_hide_another_writers_change(
    make_services: Callable[..., Services],
) -> None:
    services = make_services()
    first = await services.responder.handle("acme", _report(0))
    assert first.ticket_id is not None
    await services.responder.handle("acme", _report(1))  # parses it, then keeps it
    hits = _ticket_cache(services, "hit")
    await services.responder.handle("acme", _report(2))
    assert _ticket_cache(services, "hit") == hits + 1  # the kept object, unparsed
    # Another process (same store, its own repository) comments: the stored version changes.
    other = TicketRepository(services.backends.objects)
    theirs, version = other.get("acme", first.ticket_id)
    theirs.comments.append(Comment(kind="comment", author="oncall", body="looking into it"))
    other.update(theirs, version)
    misses = _ticket_cache(services, "miss")
    await services.responder.handle("acme", _report(3))
    assert _ticket_cache(services, "miss") == misses + 1
    # A comment and a resolve through this process between group commits are kept too.
    services.desk.comment("acme", first.ticket_id, "oncall", "rolled back")
    services.desk.resolve("acme", first.ticket_id, "fixed")
    again = await services.responder.handle("acme", _report(4))
    assert again.status == "regression"
    ticket, _ = services.tickets.get("acme", first.ticket_id)
    assert ticket.occurrences == 5 and ticket.regressions == 1 and ticket.status == "open"
    bodies = [c.body for c in ticket.comments if c.kind == "comment"]
    assert bodies == ["looking into it", "rolled back"]
    stored = services.backends.objects.get(services.tickets.key("acme", first.ticket_id))
    assert stored is not None and Ticket.model_validate_json(stored.data) == ticket
