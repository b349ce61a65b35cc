"""Replicas writing the same tickets: compare-and-swap with jittered backoff, and turns
taken through the real Redis on 127.0.0.1:6379, so that a storm spread over replicas does
not make them collide on its hot tickets (found by a 4-process storm in CI that got a 409)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from incident_responder.backends.locks.redis import RedisWriteLock
from incident_responder.backends.objects.local import LocalObjectStore
from incident_responder.errors import VersionConflict
from incident_responder.models import Signature, Ticket
from incident_responder.pipeline import ticketing
from incident_responder.pipeline.ticketing import Occurrence, TicketDesk, full_jitter
from incident_responder.ports import ObjectStore, ObjectWrite, WriteLock
from incident_responder.repositories import PendingMarkers, TicketRepository
from tests.faults.flaky import FlakyStore, Switch

REDIS_URL = "redis://127.0.0.1:6379/0"
FINGERPRINT = "fp-checkout-timeout"
REPLICAS, THREADS, ROUNDS, PER_GROUP = 2, 3, 15, 2


class NoIndex:
    """Reports of a template the ticket already has never touch the index."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the index was used: {name}")


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # CI starts it; a missing Redis is a failure, not a skip
        pytest.fail(f"Redis is not running on 127.0.0.1:6379: {exc}")
    yield client
    client.close()


def _desk(
    objects: ObjectStore,
    *,
    write_lock: WriteLock | None = None,
    back_off: Callable[[float], None] = full_jitter,
    conflicts: list[int] | None = None,
    occurrence_comments: int = ticketing.MAX_OCCURRENCE_COMMENTS,
) -> TicketDesk:
    return TicketDesk(
        tickets=TicketRepository(objects),
        pending=PendingMarkers(objects),
        index=NoIndex(),  # type: ignore[arg-type]
        normalizer_version="test",
        write_lock=write_lock,
        back_off=back_off,
        on_conflict=None if conflicts is None else conflicts.append,
        occurrence_comments=occurrence_comments,
    )


def _open_ticket(objects: ObjectStore) -> str:
    ticket = Ticket(
        ticket_id=f"tkt_{uuid.uuid4().hex[:12]}",
        tenant="acme",
        service="checkout",
        title="payment provider timed out",
        signatures={FINGERPRINT: Signature(template="timed out after <NUM>ms", embed_text="timed out")},
    )
    TicketRepository(objects).create_many([ticket])
    return ticket.ticket_id


def _report(n: str) -> Occurrence:
    return Occurrence(
        incident_id=f"inc_{n}",
        log=f"payment provider timed out after {n}ms",
        fingerprint=FINGERPRINT,
        template="timed out after <NUM>ms",
        embed_text="timed out",
        vector=None,
    )


def _storm(desks: list[TicketDesk], ticket_id: str) -> None:
    """THREADS threads per replica, each attaching ROUNDS groups of PER_GROUP reports."""
    errors: list[BaseException] = []

    def writer(desk: TicketDesk, name: str) -> None:
        try:
            for r in range(ROUNDS):
                group = [_report(f"{name}-{r}-{k}") for k in range(PER_GROUP)]
                desk.attach("acme", {ticket_id: group})
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(desk, f"r{d}t{t}"))
        for d, desk in enumerate(desks)
        for t in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _occurrences(objects: ObjectStore, ticket_id: str) -> int:
    ticket, _ = TicketRepository(objects).get("acme", ticket_id)
    assert len({c.incident_id for c in ticket.comments}) == min(
        ticket.occurrences - 1, ticketing.MAX_OCCURRENCE_COMMENTS
    )
    return ticket.occurrences


EXPECTED = 1 + REPLICAS * THREADS * ROUNDS * PER_GROUP


def test_replicas_without_turns_collide_but_backoff_loses_nothing(tmp_path: Path) -> None:
    # Each get takes 2 ms, as over a network: a wide window between read and write.
    switch = Switch(delay=0.002)
    replicas = [FlakyStore(LocalObjectStore(tmp_path), switch) for _ in range(REPLICAS)]
    ticket_id = _open_ticket(replicas[0])
    conflicts: list[int] = []
    _storm([_desk(objects, conflicts=conflicts) for objects in replicas], ticket_id)
    assert sum(conflicts) > 0  # the collisions the turns below remove
    assert _occurrences(replicas[0], ticket_id) == EXPECTED


def test_replicas_taking_turns_through_redis_never_collide(tmp_path: Path, client: redis.Redis) -> None:
    switch = Switch(delay=0.002)
    replicas = [FlakyStore(LocalObjectStore(tmp_path), switch) for _ in range(REPLICAS)]
    ticket_id = _open_ticket(replicas[0])
    prefix = f"ir:test:{uuid.uuid4().hex}:"
    conflicts: list[int] = []
    clients = [redis.Redis.from_url(REDIS_URL) for _ in replicas]  # one per replica, as processes have
    desks = [
        _desk(objects, write_lock=RedisWriteLock(own, prefix=prefix), conflicts=conflicts)
        for objects, own in zip(replicas, clients, strict=True)
    ]
    _storm(desks, ticket_id)
    for own in clients:
        own.close()
    assert conflicts == []
    assert _occurrences(replicas[0], ticket_id) == EXPECTED
    assert client.keys(f"{prefix}*") == []  # every turn was given back


def test_comments_take_their_turn_too(tmp_path: Path, client: redis.Redis) -> None:
    objects = LocalObjectStore(tmp_path)
    ticket_id = _open_ticket(objects)
    lock = RedisWriteLock(client, prefix=f"ir:test:{uuid.uuid4().hex}:", blocking_timeout=5)
    desk = _desk(objects, write_lock=lock)
    commented = threading.Event()

    def comment() -> None:
        desk.comment("acme", ticket_id, "alice", "looking into it")
        commented.set()

    with lock.hold("acme"):  # another replica's group commit is writing
        worker = threading.Thread(target=comment)
        worker.start()
        time.sleep(0.2)
        assert not commented.is_set()
    worker.join(timeout=5)
    assert commented.is_set()
    ticket, _ = TicketRepository(objects).get("acme", ticket_id)
    assert (ticket.comments[-1].author, ticket.comments[-1].body) == ("alice", "looking into it")


def test_write_goes_on_when_redis_is_unreachable(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path)
    ticket_id = _open_ticket(objects)
    unreachable = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    desk = _desk(objects, write_lock=RedisWriteLock(unreachable))
    with structlog.testing.capture_logs() as logs:
        desk.attach("acme", {ticket_id: [_report("1")]})
    assert _occurrences(objects, ticket_id) == 2
    assert [e["event"] for e in logs] == ["redis.write_lock_failed"]
    assert logs[0]["error"] == "ConnectionError"
    unreachable.close()


def test_write_goes_on_when_the_turn_does_not_come(tmp_path: Path, client: redis.Redis) -> None:
    objects = LocalObjectStore(tmp_path)
    ticket_id = _open_ticket(objects)
    prefix = f"ir:test:{uuid.uuid4().hex}:"
    stuck = RedisWriteLock(client, prefix=prefix, timeout=30)
    patient = RedisWriteLock(client, prefix=prefix, blocking_timeout=0.3)
    desk = _desk(objects, write_lock=patient)
    with stuck.hold("acme"), structlog.testing.capture_logs() as logs:  # a holder that hangs
        started = time.perf_counter()
        desk.attach("acme", {ticket_id: [_report("1")]})
        waited = time.perf_counter() - started
    assert 0.25 <= waited < 5  # redis-py gives up a poll interval (2 ms) before the deadline
    assert _occurrences(objects, ticket_id) == 2
    assert [e["event"] for e in logs] == ["redis.write_lock_timed_out"]


class ConflictingStore:
    """The real store, except that the first ``refusals`` ticket writes lose to a writer
    that is not there (as if another replica had written in between)."""

    def __init__(self, inner: ObjectStore, refusals: int) -> None:
        self.inner, self.refusals = inner, refusals

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _refused(self, write: ObjectWrite) -> bool:
        if "/tickets/" in write.key and self.refusals > 0:
            self.refusals -= 1
            return True
        return False

    def put(self, key: str, data: bytes, **kw: Any) -> str:
        if self._refused(ObjectWrite(key, data)):
            raise VersionConflict(f"{key} changed (injected)")
        return self.inner.put(key, data, **kw)

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        refused: set[str] = set()  # and what comes after a refused write is refused with it
        for write in writes:
            if self._refused(write) or write.after in refused:
                refused.add(write.key)
        landed = iter(self.inner.put_many([w for w in writes if w.key not in refused]))
        return [VersionConflict("changed (injected)") if w.key in refused else next(landed) for w in writes]


def _losing(tmp_path: Path, refusals: int) -> tuple[ConflictingStore, str]:
    """A store with one ticket whose next ``refusals`` writes lose."""
    objects = ConflictingStore(LocalObjectStore(tmp_path), refusals=0)
    ticket_id = _open_ticket(objects)
    objects.refusals = refusals
    return objects, ticket_id


def test_lost_rounds_back_off_under_a_doubling_cap(tmp_path: Path) -> None:
    objects, ticket_id = _losing(tmp_path, 12)
    caps: list[float] = []
    conflicts: list[int] = []
    desk = _desk(objects, back_off=caps.append, conflicts=conflicts)
    desk.attach("acme", {ticket_id: [_report("1"), _report("2")]})
    assert _occurrences(objects, ticket_id) == 3
    assert conflicts == [1] * 12
    assert caps == pytest.approx([0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128] + [0.2] * 5)


def test_full_jitter_sleeps_a_random_time_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(ticketing.time, "sleep", slept.append)  # the stdlib's, not ours
    for _ in range(50):
        full_jitter(0.01)
    assert all(0.0 <= s <= 0.01 for s in slept)
    assert len(set(slept)) == 50


def test_a_comment_that_loses_backs_off_and_lands(tmp_path: Path) -> None:
    objects, ticket_id = _losing(tmp_path, 3)
    caps: list[float] = []
    desk = _desk(objects, back_off=caps.append)
    desk.comment("acme", ticket_id, "alice", "looking into it")
    assert caps == pytest.approx([0.002, 0.004, 0.008])
    ticket, _ = TicketRepository(objects).get("acme", ticket_id)
    assert ticket.comments[-1].body == "looking into it"


def test_a_ticket_that_keeps_changing_is_a_version_conflict(tmp_path: Path) -> None:
    objects, ticket_id = _losing(tmp_path, 10_000)
    caps: list[float] = []
    conflicts: list[int] = []
    desk = _desk(objects, back_off=caps.append, conflicts=conflicts)
    with pytest.raises(VersionConflict, match="gave up after 20 attempts"):
        desk.attach("acme", {ticket_id: [_report("1")]})
    assert len(conflicts) == ticketing.CAS_ATTEMPTS == 20
    assert len(caps) == 19  # no wait after the last round
    objects.refusals = 0
    assert _occurrences(objects, ticket_id) == 1  # nothing half-written


def test_records_land_in_their_tickets_group_and_never_in_a_lost_round(tmp_path: Path) -> None:
    objects, ticket_id = _losing(tmp_path, 2)
    landed: list[list[str]] = []  # per put_many, the keys that landed, in order
    write_group = objects.put_many

    def spy(writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        results = write_group(writes)
        landed.append([w.key for w, r in zip(writes, results, strict=True) if isinstance(r, str)])
        return results

    objects.put_many = spy  # type: ignore[method-assign]
    asked: list[tuple[int, list[bool]]] = []

    def records(asked_for: str, attached: ticketing.Attached) -> list[ObjectWrite]:
        assert asked_for == ticket_id
        asked.append((attached.ticket.occurrences, attached.regressions))
        return [ObjectWrite(f"acme/incidents/inc_{n}.json", b"{}") for n in (1, 2)]

    desk = _desk(objects, back_off=lambda cap: None)
    desk.attach("acme", {ticket_id: [_report("1"), _report("2")]}, records=records)
    assert asked == [(3, [False, False])] * 3  # asked again after each lost round
    ticket_key = TicketRepository.key("acme", ticket_id)
    records_keys = ["acme/incidents/inc_1.json", "acme/incidents/inc_2.json"]
    assert landed == [[], [], [ticket_key, *records_keys]]  # lost rounds wrote no record either
    assert _occurrences(objects, ticket_id) == 3
    # A replay of both: the ticket counted them already, so only the records are written.
    desk.attach("acme", {ticket_id: [_report("1"), _report("2")]}, records=records)
    assert landed[-1] == records_keys
    assert _occurrences(objects, ticket_id) == 3


class RetriedAfterLandingTickets:
    """The real store, except that the first group with a record in it fails after its
    tickets landed and is then sent again whole (what the store's retry policy does)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.armed = inner, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_many(self, writes: Sequence[ObjectWrite]) -> list[str | VersionConflict]:
        first_record = next((i for i, w in enumerate(writes) if "/incidents/" in w.key), None)
        if self.armed and first_record:
            self.armed = False
            self.inner.put_many(writes[:first_record])  # then the disk failed: retried whole
        return self.inner.put_many(writes)


class PayloadLog:
    """An index that only takes payload changes (a reopened ticket's status)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def set_payload(self, where: Any, payload: dict[str, Any]) -> None:
        self.payloads.append(dict(payload))


def test_a_retried_group_finds_its_own_ticket_write_and_finishes(tmp_path: Path) -> None:
    objects = RetriedAfterLandingTickets(LocalObjectStore(tmp_path))
    ticket_id = _open_ticket(objects)
    repository = TicketRepository(objects)
    ticket, version = repository.get("acme", ticket_id)
    ticket.status = "resolved"
    repository.update(ticket, version)
    index = PayloadLog()
    conflicts: list[int] = []
    desk = TicketDesk(
        tickets=repository,
        pending=PendingMarkers(objects),
        index=index,  # type: ignore[arg-type]
        normalizer_version="test",
        on_conflict=conflicts.append,
    )

    def records(_: str, attached: ticketing.Attached) -> list[ObjectWrite]:
        return [ObjectWrite("acme/incidents/inc_1.json", json.dumps(attached.regressions).encode())]

    out = desk.attach("acme", {ticket_id: [_report("1")]}, records=records)
    assert not objects.armed  # the failure and the retry happened
    attached = out[ticket_id]
    assert isinstance(attached, ticketing.Attached) and attached.regressions == [True]
    assert conflicts == []  # its own write, not a lost round
    assert _occurrences(objects, ticket_id) == 2
    stored = objects.get("acme/incidents/inc_1.json")
    assert stored is not None and json.loads(stored.data) == [True]
    assert index.payloads == [{"status": "open"}]  # the reopening reached the index


def test_a_ticket_keeps_its_newest_occurrence_comments_and_counts_them_all(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "o")
    ticket_id = _open_ticket(objects)
    desk = _desk(objects, occurrence_comments=3)
    desk.comment("acme", ticket_id, "oncall", "looking into it")
    desk.attach("acme", {ticket_id: [_report(str(n)) for n in range(4)]})
    desk.attach("acme", {ticket_id: [_report(str(n)) for n in range(4, 10)]})
    ticket, _ = TicketRepository(objects).get("acme", ticket_id)
    assert ticket.occurrences == 11  # the opening report and ten more
    assert [c.incident_id for c in ticket.comments if c.kind == "occurrence"] == ["inc_7", "inc_8", "inc_9"]
    assert [c.body for c in ticket.comments if c.kind == "comment"] == ["looking into it"]
    # a replay of a report whose comment is still kept is recognized and not counted again
    desk.attach("acme", {ticket_id: [_report("9")]})
    assert TicketRepository(objects).get("acme", ticket_id)[0].occurrences == 11


def test_a_desk_keeps_at_least_one_occurrence_comment(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _desk(LocalObjectStore(tmp_path / "o"), occurrence_comments=0)
