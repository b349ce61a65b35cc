"""One contract for every Outbox: SQLite (one local file) and Redis (shared by replicas)."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from incident_responder.backends.outboxes.redis import RedisOutbox
from incident_responder.backends.outboxes.sqlite import SqliteOutbox
from incident_responder.errors import BackendUnavailable
from incident_responder.notifications.model import MessageState, OutboxMessage
from incident_responder.ports import Outbox

REDIS_URL = "redis://127.0.0.1:6379/0"
NOW = 1_000.0

Factory = Callable[[], Outbox]


@pytest.fixture(params=["sqlite", "redis"])
def make_outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory: each call opens the SAME outbox again, as a restarted process would
    (its own connections; for Redis its own client)."""
    opened: list[Outbox] = []
    clients: list[redis.Redis] = []
    prefix = f"ir:test-outbox:{uuid.uuid4().hex}:"

    def make() -> Outbox:
        outbox: Outbox
        if request.param == "sqlite":
            outbox = SqliteOutbox(tmp_path / "outbox.sqlite3")
        else:
            client = redis.Redis.from_url(REDIS_URL)
            clients.append(client)
            outbox = RedisOutbox(client, prefix=prefix)
        opened.append(outbox)
        return outbox

    yield make
    for outbox in opened:
        outbox.close()
    if clients:
        for key in clients[0].scan_iter(match=prefix + "*", count=1000):
            clients[0].delete(key)
        assert not list(clients[0].scan_iter(match=prefix + "*"))
    for client in clients:
        client.close()


def _msg(
    message_id: str,
    stream: tuple[str, str, str] = ("acme", "ch-1", "tk-1"),
    *,
    created_at: float = 100.0,
    next_at: float = 100.0,
    state: MessageState = "pending",
) -> OutboxMessage:
    tenant, channel_id, ticket_id = stream
    return OutboxMessage(
        message_id=message_id,
        tenant=tenant,
        channel_id=channel_id,
        channel_kind="webhook",
        kind="new",
        ticket_id=ticket_id,
        url=f"https://hooks.example/{channel_id}",
        body=f'{{"id": "{message_id}"}}',
        created_at=created_at,
        next_at=next_at,
        state=state,
    )


def _ids(messages: list[OutboxMessage]) -> list[str]:
    return [m.message_id for m in messages]


def test_put_get_round_trips_every_field(make_outbox: Factory) -> None:
    outbox = make_outbox()
    message = OutboxMessage(
        message_id="msg:01J/ü",
        tenant="acme",
        channel_id="ch-slack",
        channel_kind="pagerduty",
        kind="resolved",
        ticket_id="tkt_42",
        url="https://events.pagerduty.com/v2/enqueue",
        body='{"text": "résolu ✓", "n": 1.5e-7, "nested": {"a": [1, 2]}}',
        headers={"Content-Type": "application/json", "X-Trace": "a=b; c=d"},
        created_at=1_700_000_000.123456,
        next_at=1_700_000_001.987654,
        attempts=3,
        last_error="HTTP 503 from upstream",
    )
    assert outbox.get(message.message_id) is None
    outbox.put([message])
    assert outbox.get(message.message_id) == message
    assert make_outbox().get(message.message_id) == message  # durable: another process sees it
    assert outbox.get("msg:other") is None
    # The state is a field like any other: a message stored as delivered is not handed out.
    outbox.put([_msg("done", ("acme", "ch-2", "tk-9"), state="sent")])
    stored = outbox.get("done")
    assert stored is not None and stored.state == "sent"
    assert _ids(outbox.claim(now=2e9, limit=10, lease=30)) == ["msg:01J/ü"]


def test_put_is_idempotent_by_message_id(make_outbox: Factory) -> None:
    outbox = make_outbox()
    first = _msg("m1")
    outbox.put([first, first.model_copy(update={"body": "{}"})])  # twice in one batch
    outbox.put([first.model_copy(update={"body": '{"changed": true}', "next_at": 50.0})])
    assert outbox.get("m1") == first
    assert outbox.counts() == {"pending": 1, "sent": 0, "dead": 0}
    assert _ids(outbox.claim(now=NOW, limit=10, lease=0)) == ["m1"]
    outbox.sent("m1")

    outbox.put([first])  # again after delivery: it stays delivered and is not handed out again
    again = outbox.get("m1")
    assert again is not None and again.state == "sent"
    assert outbox.claim(now=NOW + 10_000, limit=10, lease=0) == []
    assert outbox.counts() == {"pending": 0, "sent": 1, "dead": 0}


def test_claim_hands_out_only_due_messages(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put(
        [
            _msg("early", ("acme", "ch-1", "tk-1"), next_at=900.0),
            _msg("later", ("acme", "ch-1", "tk-2"), next_at=2_000.0),
        ]
    )
    assert _ids(outbox.claim(now=NOW, limit=10, lease=30)) == ["early"]
    outbox.sent("early")
    assert outbox.claim(now=1_999.5, limit=10, lease=30) == []
    assert _ids(outbox.claim(now=2_000.0, limit=10, lease=30)) == ["later"]  # next_at <= now


def test_a_claimed_message_is_leased(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put([_msg("m1")])
    (claimed,) = outbox.claim(now=NOW, limit=10, lease=30)
    assert claimed.message_id == "m1" and claimed.next_at == NOW + 30
    assert outbox.claim(now=NOW, limit=10, lease=30) == []
    assert make_outbox().claim(now=NOW + 29.9, limit=10, lease=30) == []  # nor by another process
    stored = outbox.get("m1")
    assert stored is not None and stored.state == "pending" and stored.attempts == 0
    # The claimer died without an answer: once the lease ends it is handed out again.
    assert _ids(outbox.claim(now=NOW + 30, limit=10, lease=30)) == ["m1"]
    assert outbox.claim(now=NOW + 59, limit=10, lease=30) == []


def test_a_stream_hands_out_one_message_at_a_time_in_put_order(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put([_msg("open", next_at=100.0)])
    outbox.put([_msg("resolve", next_at=50.0)])  # due earlier, but put later
    assert _ids(outbox.claim(now=NOW, limit=10, lease=30)) == ["open"]
    assert outbox.claim(now=NOW + 1, limit=10, lease=30) == []  # not the next while the first is out
    assert _ids(outbox.claim(now=NOW + 30, limit=10, lease=30)) == ["open"]  # lease over: the first again
    outbox.retry("open", next_at=5_000.0, error="timeout")
    assert outbox.claim(now=4_000.0, limit=10, lease=30) == []  # the first waits, so does the stream
    outbox.sent("open")
    assert _ids(outbox.claim(now=4_000.0, limit=10, lease=30)) == ["resolve"]
    outbox.sent("resolve")
    assert outbox.claim(now=9_000.0, limit=10, lease=30) == []
    assert outbox.counts() == {"pending": 0, "sent": 2, "dead": 0}


def test_bury_moves_to_the_dead_list_and_the_stream_goes_on(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put([_msg("m1", created_at=1.0), _msg("m2", created_at=2.0), _msg("m3", created_at=3.0)])
    assert _ids(outbox.claim(now=NOW, limit=10, lease=30)) == ["m1"]
    outbox.bury("m1", "HTTP 410 Gone")
    dead = outbox.get("m1")
    assert dead is not None
    assert (dead.state, dead.attempts, dead.last_error) == ("dead", 1, "HTTP 410 Gone")
    assert _ids(outbox.listing("dead")) == ["m1"] and outbox.listing("dead")[0] == dead
    assert outbox.counts() == {"pending": 2, "sent": 0, "dead": 1}
    assert _ids(outbox.claim(now=NOW, limit=10, lease=30)) == ["m2"]
    outbox.sent("m1")  # a late answer for a buried message changes nothing
    outbox.retry("m1", next_at=0.0, error="late")
    assert outbox.get("m1") == dead
    assert outbox.counts() == {"pending": 2, "sent": 0, "dead": 1}


def test_streams_are_independent_and_handed_out_oldest_first(make_outbox: Factory) -> None:
    outbox = make_outbox()
    a, b, c = ("acme", "ch-1", "tk-a"), ("acme", "ch-1", "tk-b"), ("globex", "ch-1", "tk-a")
    outbox.put(
        [
            _msg("b1", b, created_at=1.0, next_at=100.0),
            _msg("a1", a, created_at=2.0, next_at=100.0),
            _msg("c1", c, created_at=3.0, next_at=100.0),
            _msg("a2", a, created_at=4.0, next_at=100.0),
        ]
    )
    assert _ids(outbox.claim(now=NOW, limit=10, lease=30)) == ["b1", "a1", "c1"]
    outbox.sent("b1")  # b is empty now; a is still out
    assert outbox.claim(now=NOW, limit=10, lease=30) == []
    outbox.sent("a1")
    assert _ids(outbox.claim(now=NOW, limit=10, lease=30)) == ["a2"]


def test_claim_respects_its_limit(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put([_msg(f"m{n}", ("acme", "ch-1", f"tk-{n}"), next_at=float(n)) for n in range(10)])
    rounds = [_ids(outbox.claim(now=NOW, limit=3, lease=60)) for _ in range(5)]
    assert rounds == [["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6", "m7", "m8"], ["m9"], []]
    assert outbox.claim(now=NOW + 60, limit=0, lease=60) == []


def test_retry_counts_keeps_the_error_and_sets_the_next_time(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put([_msg("m1")])
    outbox.claim(now=NOW, limit=10, lease=60)
    outbox.retry("m1", next_at=NOW + 10, error="HTTP 503")  # sooner than the lease would end
    stored = outbox.get("m1")
    assert stored is not None
    assert (stored.state, stored.attempts, stored.last_error, stored.next_at) == (
        "pending",
        1,
        "HTTP 503",
        NOW + 10,
    )
    assert outbox.claim(now=NOW + 9.9, limit=10, lease=60) == []
    assert _ids(outbox.claim(now=NOW + 10, limit=10, lease=60)) == ["m1"]
    outbox.retry("m1", next_at=NOW + 20, error="x" * 2_000 + "tail")
    stored = outbox.get("m1")
    assert stored is not None and stored.attempts == 2 and stored.last_error == "x" * 500
    outbox.retry("m1", next_at=NOW + 30, error="circuit open", counted=False)  # postponed, not tried
    stored = outbox.get("m1")
    assert stored is not None and (stored.attempts, stored.next_at) == (2, NOW + 30)


def test_replay_puts_a_dead_message_back_at_the_end_of_its_stream(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put([_msg("m1", created_at=1.0), _msg("m2", created_at=2.0)])
    outbox.claim(now=NOW, limit=10, lease=30)
    outbox.bury("m1", "HTTP 404")
    assert outbox.replay("unknown", now=NOW) is False
    assert outbox.replay("m2", now=NOW) is False  # pending, not dead
    assert outbox.replay("m1", now=5_000.0) is True
    replayed = outbox.get("m1")
    assert replayed is not None
    assert (replayed.state, replayed.next_at, replayed.attempts) == ("pending", 5_000.0, 0)
    assert outbox.listing("dead") == [] and outbox.counts() == {"pending": 2, "sent": 0, "dead": 0}
    assert outbox.replay("m1", now=5_000.0) is False  # not dead any more
    assert _ids(outbox.claim(now=5_000.0, limit=10, lease=30)) == ["m2"]  # m1 now waits behind m2
    outbox.sent("m2")
    assert _ids(outbox.claim(now=5_000.0, limit=10, lease=30)) == ["m1"]
    outbox.sent("m1")
    assert outbox.replay("m1", now=6_000.0) is False  # sent, not dead


def test_a_replayed_message_alone_in_its_stream_is_due_at_once(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put([_msg("m1", next_at=100.0)])
    outbox.bury("m1", "gone")
    assert outbox.claim(now=NOW, limit=10, lease=30) == []
    assert outbox.replay("m1", now=2_000.0)
    assert outbox.claim(now=1_999.0, limit=10, lease=30) == []
    assert _ids(make_outbox().claim(now=2_000.0, limit=10, lease=30)) == ["m1"]


def test_purge_forgets_only_old_delivered_messages(make_outbox: Factory) -> None:
    outbox = make_outbox()
    outbox.put(
        [
            _msg("old-sent", ("acme", "ch-1", "tk-1"), created_at=100.0),
            _msg("new-sent", ("acme", "ch-1", "tk-2"), created_at=200.0),
            _msg("old-dead", ("acme", "ch-1", "tk-3"), created_at=50.0),
            _msg("old-pending", ("acme", "ch-1", "tk-4"), created_at=50.0, next_at=9_999.0),
        ]
    )
    assert _ids(outbox.claim(now=NOW, limit=10, lease=30)) == ["old-sent", "new-sent", "old-dead"]
    outbox.sent("old-sent")
    outbox.sent("new-sent")
    outbox.bury("old-dead", "gone")
    assert outbox.purge(sent_before=100.0) == 0  # created before, strictly
    assert outbox.purge(sent_before=150.0) == 1
    assert outbox.get("old-sent") is None and outbox.get("new-sent") is not None
    assert outbox.purge(sent_before=150.0) == 0
    assert outbox.purge(sent_before=1e12) == 1
    assert outbox.counts() == {"pending": 1, "sent": 0, "dead": 1}
    assert outbox.get("old-dead") is not None and outbox.get("old-pending") is not None
    assert outbox.listing("sent") == []


def test_listing_is_oldest_first_and_limited(make_outbox: Factory) -> None:
    outbox = make_outbox()
    assert outbox.counts() == {"pending": 0, "sent": 0, "dead": 0}
    assert outbox.listing("pending") == []
    outbox.put(
        [
            _msg("c", ("acme", "ch-1", "tk-1"), created_at=300.0),
            _msg("a", ("acme", "ch-1", "tk-2"), created_at=100.0),
            _msg("b2", ("acme", "ch-1", "tk-3"), created_at=200.0),
            _msg("b1", ("acme", "ch-1", "tk-4"), created_at=200.0),  # same time: put order
        ]
    )
    assert _ids(outbox.listing("pending")) == ["a", "b2", "b1", "c"]
    assert _ids(outbox.listing("pending", limit=2)) == ["a", "b2"]
    assert outbox.listing("sent") == [] and outbox.listing("dead") == []
    outbox.sent("c")
    outbox.sent("a")
    assert _ids(outbox.listing("sent")) == ["a", "c"]
    assert _ids(outbox.listing("pending")) == ["b2", "b1"]


def test_state_survives_reopening(make_outbox: Factory) -> None:
    first = make_outbox()
    first.put([_msg(f"m{n}", ("acme", "ch-1", f"tk-{n % 2}"), created_at=float(n)) for n in range(4)])
    assert _ids(first.claim(now=NOW, limit=10, lease=300)) == ["m0", "m1"]
    first.sent("m0")
    first.bury("m1", "gone")
    first.close()

    second = make_outbox()
    assert second.counts() == {"pending": 2, "sent": 1, "dead": 1}
    assert _ids(second.claim(now=NOW, limit=10, lease=300)) == ["m2", "m3"]
    third = make_outbox()
    assert third.claim(now=NOW + 299, limit=10, lease=300) == []  # the lease is stored too
    dead = third.get("m1")
    assert dead is not None and dead.state == "dead" and dead.last_error == "gone"


def test_concurrent_claimers_deliver_each_message_once_in_stream_order(make_outbox: Factory) -> None:
    streams = [("acme", f"ch-{s % 5}", f"tk-{s}") for s in range(50)]
    messages = [
        _msg(f"m{n:03d}", streams[n % 50], created_at=float(n), next_at=0.0) for n in range(200)
    ]  # 4 per stream, put in order
    make_outbox().put(messages)
    delivered: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        outbox = make_outbox()  # its own connections, as another process would have
        try:
            start.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if len(delivered) == len(messages):
                        return
                # A lease far longer than the test: a message handed out twice is a bug.
                for m in outbox.claim(now=NOW, limit=5, lease=3_600):
                    with lock:
                        delivered.append((worker, m.message_id))
                    outbox.sent(m.message_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    counted = Counter(message_id for _, message_id in delivered)
    assert [m for m, n in counted.items() if n > 1] == []
    assert set(counted) == {m.message_id for m in messages}
    per_stream: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    by_id = {m.message_id: m for m in messages}
    for _, message_id in delivered:  # recorded before sent: the next of a stream comes after
        per_stream[by_id[message_id].stream].append(message_id)
    for stream, ids in per_stream.items():
        assert ids == sorted(ids), stream
    outbox = make_outbox()
    assert outbox.counts() == {"pending": 0, "sent": 200, "dead": 0}
    assert outbox.claim(now=NOW + 10_000, limit=10, lease=30) == []


def _median_seconds(call: Callable[[], object], rounds: int = 31) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _finished(start: int, n: int) -> list[OutboxMessage]:
    """``n`` messages stored as delivered (one in ten given up), each in its own stream."""
    return [
        _msg(
            f"done-{i}",
            ("acme", "ch-1", f"old-{i}"),
            created_at=float(i),
            next_at=float(i),
            state="dead" if i % 10 == 0 else "sent",
        )
        for i in range(start, start + n)
    ]


def test_claim_does_not_slow_down_with_delivered_messages(make_outbox: Factory) -> None:
    outbox = make_outbox()
    # The working set: 20 due streams of 3, and 200 heads not due yet.
    outbox.put([_msg(f"due-{i}", ("acme", "ch-1", f"hot-{i % 20}"), next_at=0.0) for i in range(60)])
    outbox.put([_msg(f"wait-{i}", ("acme", "ch-2", f"later-{i}"), next_at=1e9) for i in range(200)])
    outbox.put(_finished(0, 1_000))
    # Handing out 10 (lease 0: the same ones again each round), and finding nothing due.
    small = (
        _median_seconds(lambda: outbox.claim(now=NOW, limit=10, lease=0)),
        _median_seconds(lambda: outbox.claim(now=-1.0, limit=10, lease=0)),
    )
    assert len(outbox.claim(now=NOW, limit=50, lease=0)) == 20
    outbox.put(_finished(1_000, 9_000))
    assert outbox.counts() == {"pending": 260, "sent": 9_000, "dead": 1_000}
    large = (
        _median_seconds(lambda: outbox.claim(now=NOW, limit=10, lease=0)),
        _median_seconds(lambda: outbox.claim(now=-1.0, limit=10, lease=0)),
    )
    assert len(outbox.claim(now=NOW, limit=50, lease=0)) == 20
    ratios = [big / little for big, little in zip(large, small, strict=True)]
    assert max(ratios) < 3, (small, large)


def test_an_unreachable_store_raises_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable):
        SqliteOutbox(tmp_path)  # a directory, not a database file
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    outbox = RedisOutbox(client, prefix=f"ir:test-outbox:{uuid.uuid4().hex}:")
    calls: list[Callable[[], object]] = [
        lambda: outbox.put([_msg("m1")]),
        lambda: outbox.claim(now=NOW, limit=10, lease=30),
        lambda: outbox.sent("m1"),
        lambda: outbox.retry("m1", next_at=NOW, error="x"),
        lambda: outbox.bury("m1", "x"),
        lambda: outbox.get("m1"),
        lambda: outbox.listing("dead"),
        lambda: outbox.replay("m1", now=NOW),
        lambda: outbox.counts(),
        lambda: outbox.purge(sent_before=NOW),
    ]
    try:
        for call in calls:
            with pytest.raises(BackendUnavailable):
                call()
    finally:
        client.close()
