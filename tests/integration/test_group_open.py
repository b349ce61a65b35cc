"""New tickets of a request are opened as one group: decided in order (a later report
joins a ticket an earlier one of the same request opened), written together (marker,
tickets and records in one group commit, then one vector upsert), searchable before the
locks are released, and every failure still ends in an answer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from incident_responder.backends import build_backends, build_object_store, build_vector_index
from incident_responder.container import Services, build_services
from incident_responder.errors import BackendUnavailable
from incident_responder.ids import new_incident_id, new_ticket_id
from incident_responder.models import IncidentReport
from incident_responder.pipeline.ticketing import Draft, Occurrence
from incident_responder.ports import Embedder, VectorFilter, VectorIndex, VectorPoint
from incident_responder.settings import Settings
from tests.faults.flaky import Boom, GroupWritesDown, crash
from tests.helpers import metric_total

# Four different incidents (own fixtures), each in its own service; {n} varies per line.
KINDS = {
    "db": "ERROR postgres[{n}]: could not extend file base/16384/2619: No space left on device",
    "auth": "WARN vault-client[{n}]: TLS handshake timeout talking to vault.internal:8200",
    "checkout": "ERROR kubelet[{n}]: container checkout in pod checkout-7f9c was OOMKilled",
    "stream": "ERROR orders-consumer[{n}]: consumer group orders lag is 88{n} messages on partition 3",
}


def _report(kind: str, n: int) -> IncidentReport:
    return IncidentReport(service=kind, log=f"2026-11-27T08:{n % 60:02d}:00Z " + KINDS[kind].format(n=n))


def _put_many_calls(services: Services) -> float:
    return metric_total(services.metrics.registry, "ir_backend_calls_total", operation="put_many")


def _pending(services: Services, tenant: str) -> list[str]:
    return services.backends.objects.list_keys(f"{tenant}/pending/")


def _points(services: Services, ticket_id: str) -> int:
    return services.backends.index.count(
        VectorFilter({"tenant": "acme", "kind": "incident", "ticket_id": ticket_id})
    )


async def test_a_batch_opens_its_new_tickets_as_one_group(make_services: Callable[..., Services]) -> None:
    services = make_services()
    batch = [
        _report("db", 1),
        _report("auth", 2),
        _report("db", 3),
        _report("checkout", 4),
        _report("auth", 5),
        _report("db", 6),
    ]
    before = _put_many_calls(services)
    results = await services.responder.handle_batch("acme", batch)
    assert [r.status for r in results] == ["new", "new", "existing", "new", "existing", "existing"]
    db, auth, checkout = results[0].ticket_id, results[1].ticket_id, results[3].ticket_id
    assert len({db, auth, checkout}) == 3
    assert [r.ticket_id for r in results] == [db, auth, db, checkout, auth, db]
    joined = [results[i] for i in (2, 4, 5)]
    assert all(r.match is not None and r.match.method == "fingerprint" for r in joined)
    assert all(r.matched_ticket_id == r.ticket_id for r in joined)
    # one group commit: the marker, then the tickets, each followed by its incident records
    # (three ticket openings, each with a marker and records of its own, would be nine)
    assert _put_many_calls(services) - before == 1
    assert _pending(services, "acme") == []
    for ticket_id, reports in ((db, (0, 2, 5)), (auth, (1, 4)), (checkout, (3,))):
        assert ticket_id is not None
        ticket, _ = services.tickets.get("acme", ticket_id)
        assert ticket.occurrences == len(reports)
        assert [c.incident_id for c in ticket.comments] == [results[i].incident_id for i in reports]
        assert _points(services, ticket_id) == 1  # one fingerprint, one vector
    for r in results:
        assert (await services.responder.lookup("acme", r.incident_id)) == r
    later = await services.responder.handle("acme", _report("db", 9))  # the group is searchable
    assert later.status == "existing" and later.ticket_id == db


async def test_a_near_duplicate_joins_a_ticket_opened_earlier_in_the_same_batch(
    make_services: Callable[..., Services],
) -> None:
    services = make_services()
    first = "ERROR payments[17]: charge request to stripe failed: upstream connect timeout after 30s"
    near = "ERROR payments[17]: charge request to stripe failed: upstream connection timeout after 30s"
    results = await services.responder.handle_batch(
        "acme", [IncidentReport(service="pay", log=first), IncidentReport(service="pay", log=near)]
    )
    assert [r.status for r in results] == ["new", "existing"]
    assert results[1].ticket_id == results[0].ticket_id
    assert results[1].match is not None and results[1].match.method in ("template", "semantic")
    assert results[0].ticket_id is not None
    ticket, _ = services.tickets.get("acme", results[0].ticket_id)
    assert len(ticket.signatures) == 2 and ticket.occurrences == 2
    assert _points(services, results[0].ticket_id) == 2  # both fingerprints are searchable


async def test_concurrent_batches_never_open_a_ticket_twice(make_services: Callable[..., Services]) -> None:
    services = make_services()
    rng = random.Random(7)
    batches = []
    for b in range(4):
        batch = [_report(kind, 10 * b + i) for i, kind in enumerate(KINDS) for _ in range(3)]
        rng.shuffle(batch)
        batches.append(batch)
    answered = await asyncio.gather(*(services.responder.handle_batch("acme", b) for b in batches))
    by_kind: dict[str, set[str | None]] = {}
    for batch, results in zip(batches, answered, strict=True):
        for report, result in zip(batch, results, strict=True):
            by_kind.setdefault(report.service, set()).add(result.ticket_id)
    assert all(len(ids) == 1 for ids in by_kind.values()), by_kind
    assert sum(r.status == "new" for results in answered for r in results) == len(KINDS)
    for ids in by_kind.values():
        (ticket_id,) = ids
        assert ticket_id is not None
        ticket, _ = services.tickets.get("acme", ticket_id)
        assert ticket.occurrences == 12


async def test_store_down_while_opening_queues_the_group_and_replay_opens_it_once(
    make_settings: Callable[..., Settings], embedder: Embedder
) -> None:
    settings = make_settings(reliability={"retry_attempts": 1})
    faulty = GroupWritesDown(
        build_object_store(settings.tickets, settings.data_dir),
        lambda w: "/tickets/" in w.key and w.if_absent,
        "creating tickets",
        partial=True,
    )
    backends = build_backends(settings, embedder=embedder, objects=faulty)
    services = build_services(settings, backends=backends)
    try:
        faulty.down = True
        batch = [_report("db", 1), _report("auth", 2), _report("db", 3)]
        queued = await services.responder.handle_batch("acme", batch)
        assert [r.status for r in queued] == ["queued"] * 3
        assert list(services.tickets.iter_all("acme")) == []
        assert len(_pending(services, "acme")) == 1  # the group's marker landed, the tickets did not
        faulty.down = False
        applied, waiting = await services.replay_dead_letters()
        assert (applied, waiting) == (3, 0)
        assert _pending(services, "acme") == []
        got = [await services.responder.lookup("acme", r.incident_id) for r in queued]
        assert [g.status for g in got] == ["new", "new", "existing"]
        assert got[0].ticket_id == got[2].ticket_id != got[1].ticket_id
        assert got[0].ticket_id is not None
        ticket, _ = services.tickets.get("acme", got[0].ticket_id)
        assert ticket.occurrences == 2
    finally:
        services.close()


async def test_a_group_that_failed_after_its_tickets_landed_is_retried_to_the_end(
    make_settings: Callable[..., Settings], embedder: Embedder
) -> None:
    # The disk fails once between the tickets' renames and the records': the store's retry
    # finds the tickets there already (its own, byte for byte) and writes what follows them.
    settings = make_settings(reliability={"retry_attempts": 2})
    faulty = GroupWritesDown(
        build_object_store(settings.tickets, settings.data_dir),
        lambda w: "/incidents/" in w.key,
        "writing records",
        partial=True,
        once=True,
    )
    backends = build_backends(settings, embedder=embedder, objects=faulty)
    services = build_services(settings, backends=backends)
    try:
        faulty.down = True
        results = await services.responder.handle_batch("acme", [_report("db", 1), _report("auth", 2)])
        assert faulty.refused == 1
        assert [r.status for r in results] == ["new", "new"]
        for r in results:
            assert r.ticket_id is not None and _points(services, r.ticket_id) == 1
            assert await services.responder.lookup("acme", r.incident_id) == r
        assert _pending(services, "acme") == []
    finally:
        services.close()


class UpsertsDown:
    """The real index, except that upserts fail while ``down`` (searches still answer)."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner, self.down = inner, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if self.down:
            raise BackendUnavailable("vector upsert failed: disk full (injected)")
        self.inner.upsert(points)


async def test_a_failed_vector_upsert_after_tickets_and_records_landed_is_made_whole_by_replay(
    make_settings: Callable[..., Settings], embedder: Embedder
) -> None:
    settings = make_settings(reliability={"retry_attempts": 1})
    index = UpsertsDown(build_vector_index(settings.vector, settings.data_dir, embedder.dim))
    backends = build_backends(settings, embedder=embedder, index=index)
    services = build_services(settings, backends=backends)
    try:
        index.down = True
        queued = await services.responder.handle_batch("acme", [_report("db", 1), _report("auth", 2)])
        assert [r.status for r in queued] == ["queued", "queued"]
        # Tickets and records landed in their group commit; the marker stays for the vectors.
        assert len(list(services.tickets.iter_all("acme"))) == 2 and len(_pending(services, "acme")) == 1
        index.down = False
        assert await services.replay_dead_letters() == (2, 0)
        assert _pending(services, "acme") == []
        got = [await services.responder.lookup("acme", r.incident_id) for r in queued]
        assert [g.status for g in got] == ["new", "new"]
        assert all(g.ticket_id is not None and _points(services, g.ticket_id) == 1 for g in got)
        # Searchable again: the next report of the same incident joins its ticket.
        again = await services.responder.handle("acme", _report("db", 3))
        assert again.status == "existing" and again.ticket_id == got[0].ticket_id
    finally:
        services.close()


async def test_crash_inside_a_group_open_is_repaired_at_startup(
    make_services: Callable[..., Services], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    services = make_services(settings)
    drafts = []
    for n, kind in enumerate(("db", "auth", "checkout")):
        report = _report(kind, n)
        norm = services.responder._normalizer.normalize(report.log)
        vector = services.backends.embedder.embed([norm.embed_text])[0]
        rep = Occurrence(
            new_incident_id(), report.log, norm.fingerprint, norm.template, norm.embed_text, vector
        )
        drafts.append(Draft(kind, new_ticket_id(), kind, None, {}, [rep]))
    with pytest.raises(Boom):
        services.desk.open_many("acme", drafts, before_vector=crash)
    assert all(
        services.tickets.exists("acme", d.ticket_id) and _points(services, d.ticket_id) == 0 for d in drafts
    )
    services.close()

    restarted = make_services(settings)
    assert restarted.metrics.reconciled._value.get() == 3
    assert all(_points(restarted, d.ticket_id) == 1 for d in drafts)
    again = await restarted.responder.handle("acme", _report("auth", 40))
    assert again.status == "existing" and again.ticket_id == drafts[1].ticket_id


async def test_naive_mode_opens_one_ticket_per_group(
    make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> None:
    services = make_services(make_settings(performance={"naive": True}))
    before = _put_many_calls(services)
    results = await services.responder.handle_batch(
        "acme", [_report("db", 1), _report("auth", 2), _report("db", 3), _report("checkout", 4)]
    )
    assert [r.status for r in results] == ["new", "new", "existing", "new"]
    assert results[0].ticket_id == results[2].ticket_id
    # three openings of one group commit each (marker, ticket, records), and the repeat's
    # (ticket, record)
    assert _put_many_calls(services) - before == 3 + 1


async def test_a_large_batch_is_opened_in_bounded_groups_and_stays_in_order(
    make_services: Callable[..., Services],
) -> None:
    from bench.workloads import unique

    services = make_services()
    bodies = unique(70, seed=3).bodies
    reports = [IncidentReport(service=b["service"], log=b["log"]) for b in bodies]
    reports.append(reports[0])  # a repeat of the first, decided in the second group
    before = _put_many_calls(services)
    results = await services.responder.handle_batch("acme", reports)
    assert [r.status for r in results] == ["new"] * 70 + ["existing"]
    assert len({r.ticket_id for r in results}) == 70 and results[-1].ticket_id == results[0].ticket_id
    # groups of at most 64 new tickets: two openings of one group commit, then the repeat's
    assert _put_many_calls(services) - before == 2 + 1
    assert _pending(services, "acme") == []


async def test_concurrent_single_reports_share_group_openings(make_services: Callable[..., Services]) -> None:
    services = make_services()
    reports = [_report(kind, n) for n in range(5) for kind in KINDS]
    before = _put_many_calls(services)
    results = await asyncio.gather(*(services.responder.handle("acme", r) for r in reports))
    by_kind: dict[str, set[str | None]] = {}
    for report, result in zip(reports, results, strict=True):
        by_kind.setdefault(report.service, set()).add(result.ticket_id)
    assert all(len(ids) == 1 for ids in by_kind.values()) and len(by_kind) == len(KINDS)
    assert sum(r.status == "new" for r in results) == len(KINDS)
    # 20 single requests; one at a time they would cost 4 openings x 3 + 16 repeats x 2 = 44
    # writes. Embedded in one model batch, they are decided and opened as one group (3 writes).
    assert _put_many_calls(services) - before <= 22
    for r in results:
        assert (await services.responder.lookup("acme", r.incident_id)).ticket_id == r.ticket_id
